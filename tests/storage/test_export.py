"""CSV export of ratings: exact text, filters, batches, formula neutralising, and a round-trip property."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, update

from app.storage import comparisons, export, outputs, ratings
from app.storage.comparisons import OutputInput, StoredImageInput
from app.storage.db import init_db, make_engine, session
from app.storage.export import COLUMNS, FORMULA_STARTS, format_row, is_formula, ratings_csv_rows, write_ratings_csv
from app.storage.tables import Rating
from tests.storage.test_postgres import reset_schema, unit_test_url

PNG = StoredImageInput("a.png", b"png bytes", "PNG", 2, 2)
JPEG = StoredImageInput("b,ç.jpg", b"jpeg bytes", "JPEG", 3, 1)
SHA_PNG = hashlib.sha256(PNG.data).hexdigest()
SHA_JPEG = hashlib.sha256(JPEG.data).hexdigest()
PARAMS = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": 0}
HEADER = ",".join(COLUMNS) + "\r\n"
MODEL_NUMBERS = itertools.count()


def make_store(data_dir: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> Engine:
    """SQLite in `data_dir`; a schema emptied first when DATABASE_URL names a PostgreSQL database."""
    if unit_test_url() is not None:
        engine = make_engine(unit_test_url(), data_dir)
        reset_schema(engine)
        return engine
    if monkeypatch is not None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    engine = make_engine(f"sqlite:///{data_dir / 'playground.db'}", data_dir)
    init_db(engine)
    return engine


def rate_at(engine: Engine, output_id: int, score: int, note: str, rater: str, when: datetime) -> None:
    rating, _ = ratings.rate(engine, output_id, score, note, rater)
    with session(engine) as db:
        db.exec(update(Rating).where(Rating.id == rating.id).values(updated_at=when))


def day(d: int, hour: int = 0) -> datetime:
    return datetime(2025, 1, d, hour, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    engine = make_store(tmp_path, monkeypatch)
    answers = [
        OutputInput("m1", "org/m1", "main", "local"),
        OutputInput("m2", "org/m2", "abc123", "remote", params={"temperature": 0.7}),
    ]
    prompt = 'Décris: "chat", chien\nmerci'
    created = comparisons.create_comparison(engine, tmp_path, prompt, PARAMS, "ann", False, [PNG, JPEG], answers)
    m1, m2 = created.output_ids
    outputs.finish_output(engine, m1, text="- a cat\n- a dog", ttft_s=0.25, total_s=1.5, tokens=12)
    outputs.finish_output(engine, m2, text="Un chat « noir »", ttft_s=0.5, total_s=2.0, tokens=3)
    rate_at(engine, m1, 5, "=1+2", "ann", day(1, 10))
    rate_at(engine, m1, 4, "@SUM(A1)", "bob", day(2))
    rate_at(engine, m2, 3, "-3", "ann", day(3))
    rate_at(engine, m2, 2, "+x", "bob", day(4))
    rate_at(engine, m1, 1, "\tx", "=cmd", day(5))
    rate_at(engine, m2, 5, 'line one\nline "two", three', "zoë", day(6))
    yield engine
    engine.dispose()


IMAGES = f'"a.png:{SHA_PNG};b,ç.jpg:{SHA_JPEG}"'
PROMPT = '"Décris: ""chat"", chien\nmerci"'
M1 = f'{IMAGES},m1,org/m1,main,"\'- a cat\n- a dog"'
M2 = f"{IMAGES},m2,org/m2,abc123,Un chat « noir »"
P1 = '"{""max_new_tokens"":64,""seed"":0,""temperature"":0.0,""top_p"":1.0}"'
P2 = '"{""max_new_tokens"":64,""seed"":0,""temperature"":0.7,""top_p"":1.0}"'
EXPECTED = [
    f"1,2025-01-01T10:00:00Z,ann,1,{PROMPT},{M1},5,'=1+2,0.25,1.5,12,{P1},0\r\n",
    f"2,2025-01-02T00:00:00Z,bob,1,{PROMPT},{M1},4,'@SUM(A1),0.25,1.5,12,{P1},0\r\n",
    f"3,2025-01-03T00:00:00Z,ann,1,{PROMPT},{M2},3,'-3,0.5,2.0,3,{P2},0\r\n",
    f"4,2025-01-04T00:00:00Z,bob,1,{PROMPT},{M2},2,'+x,0.5,2.0,3,{P2},0\r\n",
    f"5,2025-01-05T00:00:00Z,'=cmd,1,{PROMPT},{M1},1,'\tx,0.25,1.5,12,{P1},0\r\n",
    f'6,2025-01-06T00:00:00Z,zoë,1,{PROMPT},{M2},5,"line one\nline ""two"", three",0.5,2.0,3,{P2},0\r\n',
]


def test_exact_csv_text(engine: Engine) -> None:
    lines = list(ratings_csv_rows(engine))
    assert lines == [HEADER, *EXPECTED]
    parsed = list(csv.reader(io.StringIO("".join(lines), newline="")))
    assert parsed[0] == list(COLUMNS) and len(parsed) == 7
    assert [row[11] for row in parsed[1:]] == [
        "'=1+2",
        "'@SUM(A1)",
        "'-3",
        "'+x",
        "'\tx",
        'line one\nline "two", three',
    ]


def test_filter_by_model(engine: Engine) -> None:
    assert list(ratings_csv_rows(engine, model="m2")) == [HEADER, EXPECTED[2], EXPECTED[3], EXPECTED[5]]
    assert list(ratings_csv_rows(engine, model="nope")) == [HEADER]


def test_filter_by_date_includes_since_and_excludes_until(engine: Engine) -> None:
    assert list(ratings_csv_rows(engine, since=day(2), until=day(4))) == [HEADER, *EXPECTED[1:3]]
    assert list(ratings_csv_rows(engine, since=day(5))) == [HEADER, *EXPECTED[4:]]
    assert list(ratings_csv_rows(engine, until=day(1, 10))) == [HEADER]
    naive_utc = datetime(2025, 1, 6)
    assert list(ratings_csv_rows(engine, since=naive_utc)) == [HEADER, EXPECTED[5]]
    paris = timezone(timedelta(hours=1))
    assert list(ratings_csv_rows(engine, since=datetime(2025, 1, 6, 1, tzinfo=paris))) == [
        HEADER,
        EXPECTED[5],
    ]
    assert list(ratings_csv_rows(engine, model="m1", since=day(2), until=day(6))) == [
        HEADER,
        EXPECTED[1],
        EXPECTED[4],
    ]


def test_batches_give_the_same_text(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "BATCH_SIZE", 2)
    assert list(ratings_csv_rows(engine)) == [HEADER, *EXPECTED]
    monkeypatch.setattr(export, "BATCH_SIZE", 4)
    assert list(ratings_csv_rows(engine, model="m1")) == [HEADER, EXPECTED[0], EXPECTED[1], EXPECTED[4]]


def test_write_ratings_csv(engine: Engine, tmp_path: Path) -> None:
    target = tmp_path / "ratings.csv"
    with target.open("w", encoding="utf-8", newline="") as handle:
        assert write_ratings_csv(engine, handle, model="m1") == 3
    assert target.read_bytes() == "".join([HEADER, EXPECTED[0], EXPECTED[1], EXPECTED[4]]).encode("utf-8")


def test_numbers_stay_numbers_and_text_is_neutralised() -> None:
    assert (
        format_row([7, 0.25, -3, None, True, "-3", "−3", "x=1", " =1"]) == "7,0.25,-3,,1,'-3,−3,x=1,' =1\r\n"
    )
    for start in FORMULA_STARTS:
        assert export.neutralise(start + "A1") == "'" + start + "A1"


SIGNS = ["=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20"]  # and ＝＋－＠, which spreadsheets also run
LEADS = ["", " ", "  ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000"]  # nothing, or whitespace a cell may start with


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("lead", LEADS)
def test_every_formula_start_is_neutralised_in_the_file(lead: str, sign: str) -> None:
    """A cell a spreadsheet would run (=, +, -, @ or a full-width ＝＋－＠, after any whitespace, LF
    included) reads back from the CSV with a quote in front, and nothing else of it changed."""
    value = f"{lead}{sign}HYPERLINK(\"http://x.invalid\",\"y\")"
    (row,) = parse(format_row(["ok", value]))
    assert row == ["ok", "'" + value]


@pytest.mark.parametrize("start", ["\n", "\r", "\t"])
def test_a_cell_starting_with_a_line_break_or_tab_is_neutralised(start: str) -> None:
    (row,) = parse(format_row([start + "text"]))
    assert row == ["'" + start + "text"]


@pytest.mark.parametrize("value", ["x=1", "a -b", "−3", "1+1", " plain", "'=already quoted", "mail@example.org"])
def test_text_that_is_no_formula_is_kept_as_it_is(value: str) -> None:
    assert parse(format_row([value])) == [[value]]


def expected_cell(value: str) -> str:
    return "'" + value if is_formula(value) else value


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.one_of(st.text(), st.integers(min_value=0), st.floats(0, 1e6)), min_size=1, max_size=6))
def test_any_row_reads_back(values: list) -> None:
    text = format_row(values)
    assert text.endswith("\r\n")
    (row,) = parse(text)
    assert row == [expected_cell(v) if isinstance(v, str) else str(v) for v in values]
    assert not any(is_formula(cell) for cell in row)


TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
RISKY_TEXT = st.one_of(
    TEXT, st.tuples(st.sampled_from([*FORMULA_STARTS, "'", '"', ",", "\n"]), TEXT).map("".join)
)


@pytest.fixture(scope="module")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("property")


@pytest.fixture(scope="module")
def shared_engine(shared_data_dir: Path) -> Engine:
    engine = make_store(shared_data_dir)
    yield engine
    engine.dispose()


@settings(max_examples=60, deadline=None, database=None)
@given(prompt=RISKY_TEXT, note=RISKY_TEXT, rater=RISKY_TEXT, name=RISKY_TEXT)
def test_stored_text_reads_back_from_the_csv(
    shared_engine: Engine, shared_data_dir: Path, prompt, note, rater, name
) -> None:
    model = f"model-{next(MODEL_NUMBERS)}"
    data_dir = shared_data_dir
    image = StoredImageInput(name, PNG.data, "PNG", 2, 2)
    created = comparisons.create_comparison(
        shared_engine, data_dir, prompt, PARAMS, rater, False, [image], [OutputInput(model)]
    )
    ratings.rate(shared_engine, created.output_ids[0], 3, note, rater)
    lines = list(ratings_csv_rows(shared_engine, model=model))
    assert all(line.endswith("\r\n") for line in lines)
    header, row = parse("".join(lines))
    cells = dict(zip(header, row, strict=True))
    assert cells["prompt"] == expected_cell(prompt)
    assert cells["note"] == expected_cell(note)
    assert cells["rater"] == expected_cell(rater)
    assert cells["images"] == expected_cell(f"{name}:{SHA_PNG}")
    assert cells["model"] == model and cells["score"] == "3"
    assert not any(is_formula(cell) for cell in row)
