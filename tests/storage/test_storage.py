"""Storage: SQLite pragmas, content-addressed images, all-or-nothing writes, concurrent ratings."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from app.storage import comparisons, files, outputs, ratings, sizes
from app.storage.comparisons import OutputInput, StoredImageInput
from app.storage.db import database_url, init_db, make_engine, session
from app.storage.tables import Comparison, ComparisonImage, Image, Output, Rating
from tests.storage.test_postgres import SQLITE_ONLY

PNG = StoredImageInput("cat.png", b"\x89PNG fake image bytes", "PNG", 4, 3)
JPEG = StoredImageInput("dog.jpg", b"\xff\xd8 another image", "JPEG", 8, 6)


def new_comparison(engine: Engine, data_dir: Path, images=(PNG,), models=("m1",), prompt="What is this?"):
    outputs = [OutputInput(model, repo=f"org/{model}", revision="main", backend="local") for model in models]
    params = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    return comparisons.create_comparison(engine, data_dir, prompt, params, "ann", False, list(images), outputs)


def row_count(engine: Engine, table) -> int:
    with session(engine, read_only=True) as db:
        return db.exec(select(func.count()).select_from(table)).one()


def all_files(data_dir: Path) -> list[Path]:
    return sorted(path for path in (data_dir / "images").rglob("*") if path.is_file())


# ---------------------------------------------------------------- engine


@SQLITE_ONLY
def test_sqlite_pragmas_are_in_force(engine: Engine) -> None:
    with engine.connect() as connection:
        pragma = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 30000}


@SQLITE_ONLY
def test_write_sessions_take_the_write_lock_at_begin_and_readers_do_not(
    engine: Engine, data_dir: Path
) -> None:
    other = sqlite3.connect(data_dir / "playground.db", timeout=0, isolation_level=None)
    try:
        with session(engine) as db:
            db.exec(select(Comparison)).all()  # a read inside a write session already holds the lock
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        with session(engine, read_only=True) as db:
            db.exec(select(Comparison)).all()
            other.execute("BEGIN IMMEDIATE")
            other.execute("COMMIT")
    finally:
        other.close()


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with pytest.raises(IntegrityError), session(engine) as db:
        db.add(Rating(output_id=999, score=3, rater="x"))


def test_database_url_comes_from_the_settings_else_sqlite_in_the_data_dir(tmp_path: Path, monkeypatch) -> None:
    from app.core.settings import Settings

    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert database_url(Settings().database_url, tmp_path) == f"sqlite:///{tmp_path}/playground.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/other.db")
    assert database_url(Settings().database_url, tmp_path) == f"sqlite:///{tmp_path}/other.db"
    assert database_url("postgresql://db/x", tmp_path) == "postgresql://db/x"
    engine = make_engine(Settings().database_url, tmp_path)
    init_db(engine)
    assert (tmp_path / "other.db").exists()
    engine.dispose()


# ---------------------------------------------------------------- comparisons and images


def test_the_same_image_is_stored_once(engine: Engine, data_dir: Path) -> None:
    first = new_comparison(engine, data_dir, images=(PNG, JPEG))
    renamed = StoredImageInput("renamed.png", PNG.data, "PNG", 4, 3)
    second = new_comparison(engine, data_dir, images=(renamed,))
    sha = hashlib.sha256(PNG.data).hexdigest()
    assert first.image_sha256s[0] == second.image_sha256s[0] == sha
    path = files.image_path(data_dir, sha, "PNG")
    assert path == data_dir / "images" / sha[:2] / f"{sha}.png"
    assert files.image_path(data_dir, sha) == path
    assert files.image_path(data_dir, first.image_sha256s[1]).suffix == ".jpg"
    assert path.read_bytes() == PNG.data
    assert len(all_files(data_dir)) == 2  # no temp files, no second copy, no uploaded names
    assert row_count(engine, Image) == 2
    assert row_count(engine, ComparisonImage) == 3
    names = [image["name"] for image in comparisons.get_comparison(engine, second.id)["images"]]
    assert names == ["renamed.png"]


def test_image_path_refuses_anything_but_a_sha256(data_dir: Path) -> None:
    for bad in ("../../etc/passwd", "A" * 64, "ab"):
        with pytest.raises(ValueError, match="sha256"):
            files.image_path(data_dir, bad)
    with pytest.raises(FileNotFoundError):
        files.image_path(data_dir, "0" * 64)


def assert_nothing_stored(engine: Engine, data_dir: Path) -> None:
    for table in (Comparison, ComparisonImage, Image, Output):
        assert row_count(engine, table) == 0, table.__tablename__
    assert all_files(data_dir) == []


def test_an_invalid_output_leaves_no_rows_and_no_files(engine: Engine, data_dir: Path) -> None:
    bad = OutputInput("m1", backend="gpu")
    with pytest.raises(ValueError, match=r"outputs\[0\]\.backend"):
        comparisons.create_comparison(engine, data_dir, "p", {}, "", False, [PNG], [bad])
    assert_nothing_stored(engine, data_dir)


def test_a_row_the_database_rejects_leaves_no_rows_and_no_files(engine, data_dir, monkeypatch) -> None:
    monkeypatch.setattr(comparisons, "check_output", lambda index, output: None)
    with pytest.raises(IntegrityError, match="ck_outputs_backend|CHECK"):
        comparisons.create_comparison(
            engine, data_dir, "p", {}, "", False, [PNG, JPEG], [OutputInput("m", backend="gpu")]
        )
    assert_nothing_stored(engine, data_dir)


def test_a_failure_after_files_were_written_removes_them_and_keeps_older_images(
    engine: Engine, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = new_comparison(engine, data_dir, images=(PNG,))
    written: list[Path] = []
    real_write_temp = files.write_temp

    def spy_write_temp(final: Path, data: bytes) -> Path:
        written.append(real_write_temp(final, data))
        return written[-1]

    def fail_on_second_image(db, sha, image):
        if image is JPEG:
            # the new file is on disk under its hash name before any row is committed
            assert written and not written[0].exists() and files.image_path(data_dir, sha, "JPEG").exists()
            raise RuntimeError("disk on fire")

    monkeypatch.setattr(comparisons, "write_temp", spy_write_temp)
    monkeypatch.setattr(comparisons, "_ensure_image_row", fail_on_second_image)
    with pytest.raises(RuntimeError, match="disk on fire"):
        new_comparison(engine, data_dir, images=(PNG, JPEG), models=("m1", "m2"))
    assert len(written) == 1 and not written[0].exists()
    assert all_files(data_dir) == [files.image_path(data_dir, kept.image_sha256s[0])]
    assert (row_count(engine, Comparison), row_count(engine, Image), row_count(engine, Output)) == (1, 1, 1)


def test_get_and_list_comparisons(engine: Engine, data_dir: Path) -> None:
    first = new_comparison(engine, data_dir, models=("m1", "m2"), prompt="first")
    second = new_comparison(engine, data_dir, images=(JPEG, PNG), models=("m3",), prompt="second")
    ratings.rate(engine, first.output_ids[1], 4, rater="a")
    ratings.rate(engine, first.output_ids[1], 2, rater="b")
    detail = comparisons.get_comparison(engine, first.id)
    assert [output["model"] for output in detail["outputs"]] == ["m1", "m2"]
    assert [rating["score"] for rating in detail["outputs"][1]["ratings"]] == [4, 2]
    assert detail["params"]["max_new_tokens"] == 64
    assert detail["created_at"].tzinfo == UTC
    listed = comparisons.list_comparisons(engine, limit=10)
    assert [entry["id"] for entry in listed] == [second.id, first.id]
    assert listed[0]["images"] == second.image_sha256s and listed[0]["models"] == ["m3"]
    assert listed[1]["ratings"] == {"count": 2, "mean_score": 3.0}
    assert [entry["mean_score"] for entry in listed[1]["outputs"]] == [None, 3.0]
    assert [entry["id"] for entry in comparisons.list_comparisons(engine, limit=1, offset=1)] == [first.id]
    assert comparisons.count_comparisons(engine) == 2
    with pytest.raises(LookupError):
        comparisons.get_comparison(engine, 999)


# ---------------------------------------------------------------- outputs


def test_update_and_finish_output(engine: Engine, data_dir: Path) -> None:
    output_id = new_comparison(engine, data_dir).output_ids[0]
    outputs.update_output(engine, output_id, status="generating", image_note="combined into a grid")
    outputs.finish_output(
        engine, output_id, text="a cat\x00", ttft_s=0.5, total_s=2.0, prompt_tokens=7, tokens=10
    )
    output = comparisons.get_comparison(engine, 1)["outputs"][0]
    assert output["status"] == "done" and output["text"] == "a cat\ufffd"
    assert output["tokens_per_s"] == 5.0 and output["finished_at"].tzinfo == UTC
    assert output["image_note"] == "combined into a grid"
    with pytest.raises(ValueError, match="status"):
        outputs.update_output(engine, output_id, status="sleeping")
    with pytest.raises(ValueError, match="colour"):
        outputs.update_output(engine, output_id, colour="red")
    with pytest.raises(ValueError, match="comparison_id"):
        outputs.update_output(engine, output_id, comparison_id=2)
    with pytest.raises(ValueError, match="status"):
        outputs.finish_output(engine, output_id, status="queued")
    with pytest.raises(LookupError):
        outputs.update_output(engine, 999, status="done")


def test_mark_unfinished_interrupted(engine: Engine, data_dir: Path) -> None:
    ids = new_comparison(engine, data_dir, models=("a", "b", "c", "d", "e")).output_ids
    for output_id, status in zip(ids, ("queued", "loading", "generating", "done", "error"), strict=True):
        outputs.update_output(engine, output_id, status=status)
    outputs.update_output(engine, ids[1], error="out of memory")
    assert outputs.mark_unfinished_interrupted(engine) == 3
    stored = comparisons.get_comparison(engine, 1)["outputs"]
    assert [output["status"] for output in stored] == ["interrupted"] * 3 + ["done", "error"]
    assert stored[0]["error"] == outputs.INTERRUPTED_ERROR and stored[1]["error"] == "out of memory"
    assert all(output["finished_at"] is not None for output in stored[:3])
    assert outputs.mark_unfinished_interrupted(engine) == 0


# ---------------------------------------------------------------- ratings


def test_rating_inserts_then_replaces_per_rater(engine: Engine, data_dir: Path) -> None:
    output_id = new_comparison(engine, data_dir).output_ids[0]
    rating, created = ratings.rate(engine, output_id, 4, "good", "ann")
    assert created and rating.score == 4 and rating.id is not None
    again, created = ratings.rate(engine, output_id, 2, "worse on reflection", "ann")
    assert not created and again.id == rating.id and again.score == 2
    assert again.updated_at >= again.created_at == rating.created_at
    _, created = ratings.rate(engine, output_id, 5, "", "bob")
    assert created
    with session(engine, read_only=True) as db:
        rows = db.exec(select(Rating.rater, Rating.score, Rating.note).order_by(Rating.id)).all()
    assert [tuple(row) for row in rows] == [("ann", 2, "worse on reflection"), ("bob", 5, "")]


@pytest.mark.parametrize("score", [0, 6, -1, 3.5, True, "4"])
def test_score_outside_one_to_five_is_refused(engine: Engine, data_dir: Path, score) -> None:
    output_id = new_comparison(engine, data_dir).output_ids[0]
    with pytest.raises(ValueError, match=r"score.*1 to 5"):
        ratings.rate(engine, output_id, score, "", "ann")
    assert row_count(engine, Rating) == 0


def test_rating_refusals(engine: Engine, data_dir: Path) -> None:
    output_id = new_comparison(engine, data_dir).output_ids[0]
    with pytest.raises(LookupError, match="output 999"):
        ratings.rate(engine, 999, 3, "", "ann")
    with pytest.raises(ValueError, match="note.*10000"):
        ratings.rate(engine, output_id, 3, "x" * 10_001, "ann")
    with pytest.raises(ValueError, match="note.*NUL"):
        ratings.rate(engine, output_id, 3, "a\x00b", "ann")
    with pytest.raises(ValueError, match="note: must be valid Unicode text .*lone surrogate"):
        ratings.rate(engine, output_id, 3, "a\ud800b", "ann")  # JSON "\ud800" decodes to this
    with pytest.raises(IntegrityError), session(engine) as db:  # the CHECK constraint backs the validation
        db.add(Rating(output_id=output_id, score=9, rater="ann"))


def test_concurrent_raters_never_see_a_locked_database(engine: Engine, data_dir: Path) -> None:
    output_ids = new_comparison(engine, data_dir, models=("m1", "m2", "m3", "m4")).output_ids
    threads, rounds = 16, 6
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []
    expected: dict[tuple[int, str], int] = {}

    def rater(index: int) -> None:
        # Threads 0-7 each rate their own (output, rater); threads 8-15 all rate output 1 under 4 names.
        output_id = output_ids[index % 4] if index < 8 else output_ids[0]
        name = f"rater-{index}" if index < 8 else f"shared-{index % 4}"
        try:
            barrier.wait()
            for round_ in range(rounds):
                ratings.rate(engine, output_id, 1 + (index + round_) % 5, f"note {index}/{round_}", name)
                comparisons.list_comparisons(engine)
            if index < 8:
                expected[(output_id, name)] = 1 + (index + rounds - 1) % 5
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=rater, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    with session(engine, read_only=True) as db:
        rows = db.exec(select(Rating)).all()
    stored = {(row.output_id, row.rater): row.score for row in rows}
    assert len(rows) == 8 + 4
    assert all(stored[key] == score for key, score in expected.items())
    assert {name for output_id, name in stored if name.startswith("shared")} == {
        f"shared-{i}" for i in range(4)
    }


def test_raters_at_once_with_unknown_outputs_among_them(engine: Engine, data_dir: Path) -> None:
    """Ratings written together (one transaction on SQLite): one of an unknown output fails alone with
    LookupError, every other one is saved and says whether it was new."""
    output_ids = new_comparison(engine, data_dir, models=("m1", "m2")).output_ids
    threads, rounds = 16, 5
    barrier = threading.Barrier(threads)
    outcomes: dict[tuple[int, int], object] = {}

    def rater(index: int) -> None:
        barrier.wait()
        for round_ in range(rounds):
            output_id = 999_999 if index % 4 == 3 else output_ids[index % 2]
            try:
                rating, created = ratings.rate(engine, output_id, 1 + (index + round_) % 5, f"{index}/{round_}",
                                               f"rater-{index}")
                outcomes[(index, round_)] = (rating.score, rating.note, created)
            except BaseException as exc:  # noqa: BLE001 - checked below
                outcomes[(index, round_)] = exc

    workers = [threading.Thread(target=rater, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    for (index, round_), outcome in outcomes.items():
        if index % 4 == 3:
            assert isinstance(outcome, LookupError) and "output 999999 not found" in str(outcome)
        else:
            assert outcome == (1 + (index + round_) % 5, f"{index}/{round_}", round_ == 0)
    assert len(outcomes) == threads * rounds
    with session(engine, read_only=True) as db:
        stored = {(row.rater, row.output_id): (row.score, row.note) for row in db.exec(select(Rating)).all()}
    assert stored == {(f"rater-{index}", output_ids[index % 2]): (1 + (index + rounds - 1) % 5, f"{index}/{rounds - 1}")
                      for index in range(threads) if index % 4 != 3}


# ---------------------------------------------------------------- measured sizes


def test_measured_sizes_keep_the_last_figure(engine: Engine) -> None:
    assert sizes.load_measured_sizes(engine) == {}
    sizes.save_measured_size(engine, "qwen2-vl-2b", 5.25)
    sizes.save_measured_size(engine, "smolvlm", 1.5)
    sizes.save_measured_size(engine, "qwen2-vl-2b", 4.75)
    assert sizes.load_measured_sizes(engine) == {"qwen2-vl-2b": 4.75, "smolvlm": 1.5}
    with pytest.raises(ValueError, match="measured_gb"):
        sizes.save_measured_size(engine, "x", -1)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM measured_sizes")).scalar() == 2
