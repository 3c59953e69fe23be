"""Real damage for store-failure tests: a SQLite file with many ratings, and pages of it overwritten."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from app.storage import comparisons, outputs
from app.storage.comparisons import OutputInput, StoredImageInput
from app.storage.db import init_db, make_engine, session
from app.storage.tables import Rating
from tests.helpers import png_bytes

PAGE = 4096


def build_rated_store(data_dir: Path, count: int = 120, raters: int = 60, note_chars: int = 300) -> int:
    """A playground SQLite file in `data_dir` with `count` comparisons of two rated answers each, every
    answer rated by `raters` people; returns how many ratings it holds."""
    engine = make_engine(None, data_dir)
    init_db(engine)
    image = png_bytes((10, 120, 200))
    stored = StoredImageInput("blue.png", image, "PNG", 48, 40)
    output_ids: list[int] = []
    for index in range(count):
        created = comparisons.create_comparison(engine, data_dir, f"Describe picture {index}.", {}, "ann", False,
                                                [stored], [OutputInput("m1"), OutputInput("m2")])
        for output_id in created.output_ids:
            outputs.finish_output(engine, output_id, text=f"answer {index} " * 20, ttft_s=0.1, total_s=0.5, tokens=9)
        output_ids += created.output_ids
    with session(engine) as db:
        db.add_all(Rating(output_id=output_id, score=1 + (output_id + rater) % 5, rater=f"rater{rater}",
                          note=f"note {output_id}/{rater} " + "n" * note_chars)
                   for output_id in output_ids for rater in range(raters))
    engine.dispose()
    return len(output_ids) * raters


def damage(db_file: Path, pages: int = 40, seed: int = 12) -> None:
    """Overwrite `pages` pages in the middle of the file (never the header page) with random bytes."""
    size = db_file.stat().st_size
    total = size // PAGE
    assert total > 4 * pages, f"{db_file} has only {total} pages"
    rng = random.Random(seed)
    with db_file.open("r+b") as handle:
        for page in range(total // 2 - pages // 2, total // 2 + pages // 2):
            handle.seek(page * PAGE)
            handle.write(rng.randbytes(PAGE))


def quick_check(db_file: Path) -> str:
    """What SQLite's own integrity check says ("ok" when intact)."""
    connection = sqlite3.connect(db_file)
    try:
        return "\n".join(str(row[0]) for row in connection.execute("PRAGMA quick_check"))
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        connection.close()
