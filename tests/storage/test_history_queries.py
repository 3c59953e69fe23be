"""The history's queries (issue 14, item 9): search in prompts and notes taken literally, filters that
combine, a per-model summary that names no hidden model, and keyset pages that cost the same deep in a
history of 100,000 comparisons as at its start (timed, and the plan read back on SQLite)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.dialects import sqlite

from app.storage import battles, comparisons, ratings
from app.storage.comparisons import HistoryFilters, OutputInput, StoredImageInput
from app.storage.db import transaction
from tests.helpers import png_bytes

MODELS = ("tiny-qwen2-vl", "tiny-llava", "tiny-idefics3", "tiny-paligemma")


def image() -> StoredImageInput:
    return StoredImageInput(name="a.png", data=png_bytes((10, 20, 30)), format="png", width=8, height=8)


def compare(engine: Engine, data_dir: Path, prompt: str, models: tuple[str, ...] = MODELS[:2], rater: str = "ann",
            blind: bool = False, battle: bool = False) -> comparisons.CreatedComparison:
    return comparisons.create_comparison(engine, data_dir, prompt, {}, rater, blind, [image()],
                                         [OutputInput(model=model) for model in models], battle=battle)


def ids(engine: Engine, **filters) -> list[int]:
    return [item["id"] for item in comparisons.history_page(engine, HistoryFilters(**filters), limit=100).items]


def fill_history(engine: Engine, count: int) -> None:
    """`count` comparisons of two answers each, a third of the answers rated, in three statements of bulk SQL
    (a recursive series, portable to SQLite and PostgreSQL): seconds, not minutes, for 100,000."""
    series = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {int(count)}) "
    model = " ".join(f"WHEN {k} THEN '{name}'" for k, name in enumerate(MODELS))
    with transaction(engine) as connection:
        connection.execute(text(
            series + "INSERT INTO comparisons (prompt, params, created_at, rater, blind) "
            "SELECT 'bulk prompt ' || i, '{}', CURRENT_TIMESTAMP, "
            "CASE i % 3 WHEN 0 THEN 'ann' WHEN 1 THEN 'bob' ELSE 'cy' END, (i % 7 = 0) FROM n"))
        connection.execute(text(
            "INSERT INTO outputs (comparison_id, position, model, repo, revision, backend, runtime, params, status, "
            f"text, created_at) SELECT c.id, p.position, CASE (c.id + p.position) % 4 {model} END, '', '', "
            "'local', 'default', '{}', 'done', 'an answer', CURRENT_TIMESTAMP "
            "FROM comparisons c CROSS JOIN (SELECT 0 AS position UNION ALL SELECT 1) p"))
        connection.execute(text(
            "INSERT INTO ratings (output_id, score, note, rater, created_at, updated_at) "
            "SELECT o.id, 1 + o.id % 5, 'note ' || o.id, CASE o.id % 2 WHEN 0 THEN 'ann' ELSE 'bob' END, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM outputs o WHERE o.id % 3 = 0"))
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE")


# ---------------------------------------------------------------- search and filters


def test_search_finds_prompts_and_notes_case_blind_and_takes_wildcards_literally(engine: Engine, data_dir: Path):
    plain = compare(engine, data_dir, "What colour is the Square?")
    percent = compare(engine, data_dir, "Is 100% of it red?")
    underscore = compare(engine, data_dir, "file_name in the picture")
    noted = compare(engine, data_dir, "Describe it.")
    ratings.rate(engine, noted.output_ids[1], 4, "mentions a Giraffe", "bob")
    quoted = compare(engine, data_dir, "it's \"quoted\" -- ; DROP TABLE comparisons")

    assert ids(engine, search="square") == [plain.id]
    assert ids(engine, search="GIRAFFE") == [noted.id]  # in a note, not the prompt
    assert ids(engine, search="%") == [percent.id]  # a bare wildcard matches only a real percent sign
    assert ids(engine, search="100%") == [percent.id]
    assert ids(engine, search="_") == [underscore.id]
    assert ids(engine, search="e_n") == [underscore.id]  # "_" is not "any one character": "file name" would not do
    assert ids(engine, search="f%e") == []
    assert ids(engine, search="\\") == []
    assert ids(engine, search="'s \"quoted\" -- ; DROP") == [quoted.id]
    assert ids(engine, search="  square  ") == [plain.id]  # outer spaces are not part of what is searched for
    assert len(ids(engine)) == 5  # the table is still there


def test_filters_combine_with_each_other_and_with_search(engine: Engine, data_dir: Path):
    a = compare(engine, data_dir, "sky one", models=("tiny-qwen2-vl", "tiny-llava"), rater="ann")
    b = compare(engine, data_dir, "sky two", models=("tiny-llava", "tiny-idefics3"), rater="bob")
    c = compare(engine, data_dir, "sea three", models=("tiny-idefics3",), rater="ann", blind=True)
    d = compare(engine, data_dir, "sky four", models=("tiny-qwen2-vl",), rater="cy", blind=True)
    ratings.rate(engine, b.output_ids[0], 5, "", "ann")  # ann rates bob's comparison
    ratings.rate(engine, c.output_ids[0], 2, "", "bob")

    assert ids(engine, model="tiny-llava") == [b.id, a.id]
    assert ids(engine, model="tiny-llava", search="two") == [b.id]
    assert ids(engine, rater="ann") == [c.id, b.id, a.id]  # started by ann, or rated by her
    assert ids(engine, rater="ann", rated=True) == [b.id]  # rated by ann
    assert ids(engine, rater="ann", rated=False) == [c.id, a.id]  # hers, not rated by her (bob rated c)
    assert ids(engine, rated=True) == [c.id, b.id]
    assert ids(engine, rated=False) == [d.id, a.id]
    assert ids(engine, blind=True) == [d.id, c.id]
    assert ids(engine, blind=False, search="sky") == [b.id, a.id]
    assert ids(engine, blind=True, rated=False, search="sky", rater="cy") == [d.id]
    assert ids(engine, model="tiny-idefics3", rater="bob", rated=True, blind=True, search="sea") == [c.id]
    assert ids(engine, model="tiny-idefics3", rater="bob", rated=True, blind=False) == []


def test_no_filter_names_a_model_the_history_hides(engine: Engine, data_dir: Path):
    """An unrevealed battle's answers and a blind comparison's unrated ones are hidden on the history page,
    so the model filter does not find them, the summary does not count them and the choices leave them out."""
    battle = compare(engine, data_dir, "a battle", models=("tiny-paligemma", "tiny-idefics3"), blind=True,
                     battle=True)
    blind = compare(engine, data_dir, "blind", models=("tiny-llava", "tiny-qwen2-vl"), blind=True)
    assert ids(engine, model="tiny-paligemma") == [] and ids(engine, model="tiny-llava") == []
    summary = comparisons.history_summary(engine)
    assert summary == {"comparisons": 2, "models": []}
    assert comparisons.history_choices(engine)["models"] == []

    ratings.rate(engine, blind.output_ids[0], 3, "", "ann")  # rated: tiny-llava is named now
    battles.vote(engine, battle.battle_id, "ann", "A")  # voted: both battle models are named now
    assert ids(engine, model="tiny-llava") == [blind.id] and ids(engine, model="tiny-qwen2-vl") == []
    assert ids(engine, model="tiny-paligemma") == [battle.id]
    assert comparisons.history_choices(engine)["models"] == ["tiny-idefics3", "tiny-llava", "tiny-paligemma"]
    models = {m["model"]: m for m in comparisons.history_summary(engine)["models"]}
    assert set(models) == {"tiny-llava", "tiny-paligemma", "tiny-idefics3"}


def test_summary_counts_comparisons_and_means_per_model_within_the_filters(engine: Engine, data_dir: Path):
    a = compare(engine, data_dir, "one", models=("tiny-qwen2-vl", "tiny-llava"))
    b = compare(engine, data_dir, "two", models=("tiny-qwen2-vl", "tiny-llava"))
    compare(engine, data_dir, "three", models=("tiny-qwen2-vl",), rater="bob")
    ratings.rate(engine, a.output_ids[0], 5, "", "ann")
    ratings.rate(engine, a.output_ids[0], 2, "", "bob")
    ratings.rate(engine, b.output_ids[0], 4, "", "ann")
    ratings.rate(engine, b.output_ids[1], 1, "", "ann")

    summary = comparisons.history_summary(engine)
    assert summary["comparisons"] == 3
    assert summary["models"] == [
        {"model": "tiny-qwen2-vl", "comparisons": 3, "ratings": 3, "mean_score": pytest.approx(11 / 3)},
        {"model": "tiny-llava", "comparisons": 2, "ratings": 1, "mean_score": 1.0}]
    by_ann = comparisons.history_summary(engine, HistoryFilters(rater="ann"))  # her ratings, her comparisons
    assert by_ann["comparisons"] == 2
    assert by_ann["models"] == [  # a tie in comparisons: by model id
        {"model": "tiny-llava", "comparisons": 2, "ratings": 1, "mean_score": 1.0},
        {"model": "tiny-qwen2-vl", "comparisons": 2, "ratings": 2, "mean_score": pytest.approx(4.5)}]
    unrated = comparisons.history_summary(engine, HistoryFilters(rated=False))
    assert unrated == {"comparisons": 1, "models": [{"model": "tiny-qwen2-vl", "comparisons": 1, "ratings": 0,
                                                     "mean_score": None}]}
    assert comparisons.history_choices(engine)["raters"] == ["ann", "bob"]


def test_keyset_pages_cover_every_match_once_in_order(engine: Engine, data_dir: Path):
    made = [compare(engine, data_dir, f"prompt {n}", models=(MODELS[n % 2],)).id for n in range(13)]
    seen: list[int] = []
    before = None
    while True:
        page = comparisons.history_page(engine, HistoryFilters(model=MODELS[0]), before=before, limit=2)
        seen += [item["id"] for item in page.items]
        if page.next_before is None:
            break
        assert page.next_before == page.items[-1]["id"]
        before = page.next_before
    assert seen == sorted(made[0::2], reverse=True)
    first = comparisons.history_page(engine, limit=1).items[0]
    assert first["prompt"] == "prompt 12" and first["models"] == [MODELS[0]] and first["images"]


# ---------------------------------------------------------------- 100,000 comparisons


def test_keyset_pagination_stays_fast_at_100k_comparisons(engine: Engine, capsys: pytest.CaptureFixture[str]):
    fill_history(engine, 100_000)

    def page_times(filters: HistoryFilters, pages: int) -> tuple[list[float], list[float], int]:
        """Seconds taken by page 1 and by page `pages`, five times each, walking the cursor there once."""
        before, cursors = None, [None]
        for _ in range(pages - 1):
            before = comparisons.history_page(engine, filters, before).next_before
            cursors.append(before)
        timed = {}
        for label, cursor in (("first", cursors[0]), ("deep", cursors[-1])):
            timed[label] = []
            for _ in range(5):
                started = time.perf_counter()
                page = comparisons.history_page(engine, filters, cursor)
                timed[label].append(time.perf_counter() - started)
            assert len(page.items) == 20
        return timed["first"], timed["deep"], page.items[0]["id"]

    first, deep, top = page_times(HistoryFilters(), 50)
    assert top == 100_000 - 49 * 20  # page 50 starts 980 below the newest
    first_model, deep_model, _ = page_times(HistoryFilters(model="tiny-llava", rated=False), 50)
    with capsys.disabled():
        print(f"\nhistory at 100k: page 1 {statistics.median(first) * 1000:.1f} ms, page 50 "
              f"{statistics.median(deep) * 1000:.1f} ms; model + unrated: page 1 "
              f"{statistics.median(first_model) * 1000:.1f} ms, page 50 {statistics.median(deep_model) * 1000:.1f} ms")
    # An OFFSET would read the 980 rows above page 50; the keyset seeks to it. Medians of five, a busy machine.
    assert statistics.median(deep) < 0.25 and statistics.median(deep_model) < 0.5
    assert statistics.median(deep) < 3 * statistics.median(first) + 0.02
    assert statistics.median(deep_model) < 3 * statistics.median(first_model) + 0.02

    if engine.dialect.name == "sqlite":
        query = comparisons.history_ids_query(HistoryFilters(model="tiny-llava", rater="ann", rated=False), 5_000)
        compiled = query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
        with engine.connect() as connection:
            plan = [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
        assert plan[0] == "SEARCH comparisons USING INTEGER PRIMARY KEY (rowid<?)", plan  # seek, no sort
        assert not [step for step in plan if "TEMP B-TREE" in step], plan
        assert "SEARCH model_output USING COVERING INDEX ix_outputs_comparison_model (comparison_id=? AND model=?)" \
            in plan, plan
        assert not [step for step in plan if step.startswith("SCAN")], plan  # every subquery seeks an index


def test_the_history_fingerprint_changes_with_whatever_the_summary_counts(engine: Engine, data_dir: Path):
    """The page keeps a summary until this changes: a new comparison, a rating or a changed one, a vote."""
    seen = [comparisons.history_fingerprint(engine)]

    def changed() -> bool:
        seen.append(comparisons.history_fingerprint(engine))
        return seen[-1] != seen[-2]

    assert not changed()
    blind = compare(engine, data_dir, "blind", blind=True)
    assert changed()
    ratings.rate(engine, blind.output_ids[0], 2, "", "ann")
    assert changed()
    time.sleep(0.01)
    ratings.rate(engine, blind.output_ids[0], 3, "", "ann")  # the same rating, changed: the mean moves
    assert changed()
    battle = compare(engine, data_dir, "battle", battle=True)
    assert changed()
    battles.vote(engine, battle.battle_id, "ann", "A")  # the battle's models may be named now
    assert changed()
    assert not changed()
