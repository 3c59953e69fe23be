"""The streamed ratings export: byte-for-byte the text of the former per-row export, in constant memory."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, update

from app.storage import comparisons, export, outputs, ratings
from app.storage.comparisons import OutputInput, StoredImageInput
from app.storage.db import session
from app.storage.export import ratings_csv_rows, write_ratings_csv
from app.storage.tables import Rating
from tests.storage.test_export import make_store
from tests.storage.test_postgres import SQLITE_ONLY

GOLDEN = Path(__file__).parent / "data" / "ratings_export_golden.json"
START = datetime(2025, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
PARAMS = {"max_new_tokens": 64, "temperature": 0.1, "top_p": 0.95, "seed": 7, "stop": ["\n", "»"], "x": None}
# (name, bytes) per image; names with the separators, quotes, a formula start and unicode
IMAGES = [("a,b;c:d.png", b"one"), ('"q" é.jpg', b"two"), ("=evil.png", b"three"), ("@x.gif", b"four")]
PROMPTS = [
    'Décris: "chat", chien\nmerci',
    "-starts with a minus",
    "line\r\nwith CRLF, and a tab\there",
    "=HYPERLINK(\"http://x.invalid\")",
    "\u3000＝full-width after an ideographic space",
    "plain 🐱 emoji",
]
MODELS = [("m,1", "org/m1", "main"), ("+m2", "", ""), ("mé3", "org/\"m3\"", "abc123")]
TEXTS = ["- a cat\n- a dog", "", 'a "quoted", text', "@mention", "\ttabbed", "ordinary answer"]
NOTES = ["", "=1+2", "a,b", '"q"', "x\r\ny", " -1", "\u00a0@x", "zoë 🐱", "'=already", "\n=next line"]
RATERS = ["ann", "=cmd", "bob, jr", "zoë", "", "+1"]
TIMINGS = [(0.25, 1.5, 12), (None, None, None), (1e-7, 123456.789, 0), (0.1, 0.30000000000000004, 3)]


def build_tricky_store(engine: Engine, data_dir: Path) -> None:
    """Six comparisons, three models each (some unfinished), rated by several raters at fixed times."""
    when = START
    for c, prompt in enumerate(PROMPTS):
        images = [StoredImageInput(name, data, "PNG", 2, 2) for name, data in IMAGES[: c % 4]]
        answers = [
            OutputInput(model, repo, revision, params={"temperature": 0.7, "é": "ü"} if m == 1 else {})
            for m, (model, repo, revision) in enumerate(MODELS)
        ]
        params = {**PARAMS, "seed": c}
        created = comparisons.create_comparison(engine, data_dir, prompt, params, "ann", False, images, answers)
        for m, output_id in enumerate(created.output_ids):
            ttft, total, tokens = TIMINGS[(c + m) % len(TIMINGS)]
            if ttft is not None or total is not None:
                outputs.finish_output(engine, output_id, text=TEXTS[(c + m) % len(TEXTS)], ttft_s=ttft,
                                      total_s=total, tokens=tokens)
            for r in range((c + m) % 4):
                rater = RATERS[(c + m + r) % len(RATERS)]
                rating, _ = ratings.rate(engine, output_id, 1 + (c + m + r) % 5, NOTES[(c * 3 + m + r) % len(NOTES)],
                                         rater)
                when += timedelta(hours=7, seconds=13)
                with session(engine) as db:
                    db.exec(update(Rating).where(Rating.id == rating.id).values(updated_at=when))  # type: ignore[call-overload]


FILTERS: dict[str, dict[str, Any]] = {
    "all": {},
    "model m,1": {"model": "m,1"},
    "model mé3": {"model": "mé3"},
    "model none": {"model": "nope"},
    "since": {"since": START + timedelta(days=2)},
    "until": {"until": START + timedelta(days=3)},
    "window m2": {"model": "+m2", "since": START + timedelta(days=1), "until": START + timedelta(days=4)},
    "naive since": {"since": (START + timedelta(days=2, hours=5)).replace(tzinfo=None)},
}


def exports(engine: Engine) -> dict[str, str]:
    """The CSV text for each filter in FILTERS."""
    return {name: "".join(ratings_csv_rows(engine, **filters)) for name, filters in FILTERS.items()}


@pytest.fixture
def tricky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    engine = make_store(tmp_path, monkeypatch)
    build_tricky_store(engine, tmp_path)
    yield engine
    engine.dispose()


def test_the_text_is_that_of_the_former_export(tricky: Engine) -> None:
    """GOLDEN was written by the per-row export this one replaced, from the same store."""
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert exports(tricky) == golden


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_batch_size_changes_nothing(tricky: Engine, monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    monkeypatch.setattr(export, "BATCH_SIZE", batch)
    assert exports(tricky) == golden


def test_the_file_holds_the_same_bytes(tricky: Engine, tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    target = tmp_path / "out.csv"
    with target.open("w", encoding="utf-8", newline="") as handle:
        count = write_ratings_csv(tricky, handle, model="m,1")
    assert target.read_bytes() == golden["model m,1"].encode("utf-8")
    assert count == len(list(csv.reader(io.StringIO(golden["model m,1"], newline="")))) - 1


def bulk_ratings(engine: Engine, data_dir: Path, count: int) -> None:
    """`count` ratings over a few comparisons, inserted in bulk (the setup of the memory test and the bench)."""
    outs = []
    for c in range(5):
        image = StoredImageInput(f"img{c}.png", f"image {c}".encode(), "PNG", 2, 2)
        created = comparisons.create_comparison(engine, data_dir, f"prompt {c} " + "x" * 200, PARAMS, "ann", False,
                                                [image], [OutputInput(f"m{m}", params={"m": m}) for m in range(4)])
        for output_id in created.output_ids:
            outputs.finish_output(engine, output_id, text="answer " * 40, ttft_s=0.5, total_s=2.0, tokens=80)
        outs.extend(created.output_ids)
    rows = [{"output_id": outs[i % len(outs)], "score": 1 + i % 5, "note": f"note {i}", "rater": f"r{i // len(outs)}",
             "created_at": START, "updated_at": START + timedelta(seconds=i)} for i in range(count)]
    with engine.begin() as connection:
        connection.execute(insert(Rating), rows)


class Sink:
    """Counts what is written, keeping none of it."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, text: str) -> int:
        self.size += len(text)
        return len(text)


def export_peak(engine: Engine, **filters: Any) -> tuple[int, int, int]:
    """The ratings written, the characters written and the peak of traced memory while writing them."""
    sink = Sink()
    tracemalloc.start()
    try:
        count = write_ratings_csv(engine, sink, **filters)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, sink.size, peak


@SQLITE_ONLY
def test_memory_stays_constant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """50,000 ratings export with about the memory of 5,000: a few batches, never the file."""
    engine = make_store(tmp_path, monkeypatch)
    bulk_ratings(engine, tmp_path, 50_000)
    export_peak(engine, until=START)  # the first run compiles the queries
    try:
        small = export_peak(engine, until=START + timedelta(seconds=5_000))
        whole = export_peak(engine)
    finally:
        engine.dispose()
    assert (small[0], whole[0]) == (5_000, 50_000)
    assert whole[1] > 20 * 2**20  # a file of over 20 MB ...
    assert whole[2] < small[2] + 2**20, f"peaks {small[2] / 2**20:.1f} and {whole[2] / 2**20:.1f} MiB"
    assert whole[2] < 16 * 2**20  # ... written holding under 16 MiB
