"""What the ratings CSV export costs against plain sqlite3 + csv on the same join.

    python bench/export.py [--ratings N] [--repeats M]

Builds N ratings (default 100,000) in a fresh SQLite file through the app's storage functions (the
comparisons, outputs and images one by one, the ratings in one bulk insert), then times, interleaved,
(a) `write_ratings_csv` to a file and (b) one sqlite3 query of the same join (images included) written
by one csv writer, M times each, and prints the median rows/s of both and their ratio from this run.
"""

from __future__ import annotations

import argparse
import csv
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.storage import comparisons, outputs  # noqa: E402
from app.storage.comparisons import OutputInput, StoredImageInput  # noqa: E402
from app.storage.db import init_db, make_engine  # noqa: E402
from app.storage.export import write_ratings_csv  # noqa: E402
from app.storage.tables import Rating  # noqa: E402

PARAMS = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": 0}
START = datetime(2025, 1, 1, tzinfo=UTC)
PLAIN_QUERY = """
SELECT r.id, r.updated_at, r.rater, c.id, c.prompt,
       (SELECT group_concat(name || ':' || sha256, ';')
          FROM (SELECT name, sha256 FROM comparison_images WHERE comparison_id = c.id ORDER BY position)),
       o.model, o.repo, o.revision, o.text, r.score, r.note, o.ttft_s, o.total_s, o.tokens, c.params, o.params
  FROM ratings r JOIN outputs o ON o.id = r.output_id JOIN comparisons c ON c.id = o.comparison_id
 ORDER BY r.id
"""


def build(engine: Engine, data_dir: Path, count: int, per_comparison: int = 4, comparisons_n: int = 200) -> None:
    """`comparisons_n` comparisons of `per_comparison` finished outputs, one image each, then `count` ratings."""
    output_ids: list[int] = []
    for c in range(comparisons_n):
        image = StoredImageInput(f"photo-{c}.jpg", f"image {c}".encode(), "JPEG", 64, 48)
        answers = [OutputInput(f"model-{m}", f"org/model-{m}", "main", params={"m": m}) for m in range(per_comparison)]
        created = comparisons.create_comparison(engine, data_dir, f"Describe picture {c}, in detail.", PARAMS,
                                                "ann", False, [image], answers)
        for output_id in created.output_ids:
            outputs.finish_output(engine, output_id, text=f"A picture, number {c}: " + "words " * 30,
                                  ttft_s=0.25, total_s=1.5, tokens=40)
        output_ids.extend(created.output_ids)
    rows = [{"output_id": output_ids[i % len(output_ids)], "score": 1 + i % 5, "note": f"note {i}",
             "rater": f"rater-{i // len(output_ids)}", "created_at": START,
             "updated_at": START + timedelta(seconds=i)} for i in range(count)]
    if rows:
        with engine.begin() as connection:
            connection.execute(insert(Rating), rows)


def ours(engine: Engine, target: Path) -> int:
    """The app's export to a file."""
    with target.open("w", encoding="utf-8", newline="") as handle:
        return write_ratings_csv(engine, handle)


def plain(database: Path, target: Path) -> int:
    """sqlite3 and one csv writer, no neutralising or reformatting: the floor."""
    connection = sqlite3.connect(database)
    try:
        with target.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            cursor = connection.execute(PLAIN_QUERY)
            count = 0
            while batch := cursor.fetchmany(2000):
                writer.writerows(batch)
                count += len(batch)
            return count
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch)
        database = data_dir / "playground.db"
        engine = make_engine(f"sqlite:///{database}", data_dir)
        init_db(engine)
        started = time.perf_counter()
        build(engine, data_dir, args.ratings)
        print(f"built {args.ratings:,} ratings in {time.perf_counter() - started:.1f} s")
        times: dict[str, list[float]] = {"ours": [], "plain": []}
        for _ in range(args.repeats):
            for name, run in (("ours", lambda: ours(engine, data_dir / "ours.csv")),
                              ("plain", lambda: plain(database, data_dir / "plain.csv"))):
                start = time.perf_counter()
                assert run() == args.ratings
                times[name].append(time.perf_counter() - start)
        engine.dispose()
        ours_s, plain_s = statistics.median(times["ours"]), statistics.median(times["plain"])
        size = (data_dir / "ours.csv").stat().st_size / 2**20
    print(f"ours:  {ours_s:.2f} s, {args.ratings / ours_s:,.0f} rows/s ({size:.0f} MiB)")
    print(f"plain: {plain_s:.2f} s, {args.ratings / plain_s:,.0f} rows/s (sqlite3 + csv)")
    print(f"ours / plain time: {ours_s / plain_s:.2f}x (median of {args.repeats} interleaved runs each)")


if __name__ == "__main__":
    main()
