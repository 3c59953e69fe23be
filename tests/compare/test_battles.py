"""Battles on a real store: drawing models, votes that reveal, refusals, flags, and the outcomes a vote makes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from app.compare.battles import VoteRefused, cast_vote, draw
from app.compare.flags import names_itself
from app.compare.validation import InputError
from app.core.catalog import parse_catalog
from app.evaluate.leaderboard import Cache, Query, battle_rows, compute, vote_outcomes
from app.storage import battles, comparisons, outputs
from app.storage.db import init_db, make_engine
from tests.helpers import png_bytes

CATALOG = parse_catalog({"models": [
    {"id": "qwen2-vl-2b", "name": "Qwen2-VL 2B", "repo": "Qwen/Qwen2-VL-2B-Instruct", "family": "qwen2_vl",
     "min_gpu_gb": 1, "multi_image": True},
    {"id": "smolvlm", "name": "SmolVLM Instruct", "repo": "HuggingFaceTB/SmolVLM-Instruct", "family": "idefics3",
     "min_gpu_gb": 1, "multi_image": True},
    {"id": "llava", "name": "LLaVA 1.5 7B", "repo": "llava-hf/llava-1.5-7b-hf", "family": "llava", "min_gpu_gb": 1},
]})


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'playground.db'}", tmp_path)
    init_db(engine)
    yield engine
    engine.dispose()


def new_battle(engine, tmp_path: Path, answers: dict[str, tuple[str, str]], rater: str = "ann") -> int:
    """A battle whose panels (in this order) finished with (status, text)."""
    image = comparisons.StoredImageInput("a.png", png_bytes((9, 9, 9)), "PNG", 48, 40)
    created = comparisons.create_comparison(engine, tmp_path, "What is it?", {"max_new_tokens": 32}, rater, True,
                                            [image], [comparisons.OutputInput(m) for m in answers], battle=True)
    for output_id, (status, text) in zip(created.output_ids, answers.values(), strict=True):
        outputs.finish_output(engine, output_id, status=status, text=text, tokens=3, total_s=0.1)
    assert created.battle_id is not None
    return created.battle_id


def test_a_vote_reveals_the_panels_and_the_same_rater_replaces_it(engine, tmp_path):
    battle_id = new_battle(engine, tmp_path, {"llava": ("done", "a red square"), "smolvlm": ("done", "red")})
    assert battles.has_unrevealed_battle(engine, "ann") and not battles.has_unrevealed_battle(engine, "bob")
    first = cast_vote(engine, CATALOG, battle_id, "ann", "B")
    assert first.created and not first.flagged
    assert first.panels == [{"label": "A", "model": "llava", "name": "LLaVA 1.5 7B"},
                            {"label": "B", "model": "smolvlm", "name": "SmolVLM Instruct"}]
    again = cast_vote(engine, CATALOG, battle_id, "ann", "tie")
    assert not again.created and [v["winner"] for v in battles.get_battle(engine, battle_id)["votes"]] == ["tie"]
    assert not battles.has_unrevealed_battle(engine, "ann")


def test_a_vote_names_a_finished_panel_a_tie_or_all_bad(engine, tmp_path):
    battle_id = new_battle(engine, tmp_path, {"llava": ("done", "x y"), "smolvlm": ("error", ""),
                                              "qwen2-vl-2b": ("done", "z w")})
    with pytest.raises(InputError, match="must be one of A, C, tie, bothbad"):
        cast_vote(engine, CATALOG, battle_id, "ann", "B")  # errored: not a candidate
    cast_vote(engine, CATALOG, battle_id, "ann", "C")
    vote = battles.list_votes(engine)[0]
    outcomes = vote_outcomes(vote)  # the errored panel is left out, not counted as a loss
    assert [(o.model_a, o.model_b, o.winner) for o in outcomes] == [("llava", "qwen2-vl-2b", "model_b")]


def test_fewer_than_two_finished_answers_cannot_be_voted_on(engine, tmp_path):
    battle_id = new_battle(engine, tmp_path, {"llava": ("done", "x"), "smolvlm": ("error", "")})
    with pytest.raises(VoteRefused, match="1 finished answer") as refused:
        cast_vote(engine, CATALOG, battle_id, "ann", "A")
    assert refused.value.status_code == 409
    with pytest.raises(LookupError):
        cast_vote(engine, CATALOG, 999, "ann", "A")


def test_votes_that_must_not_count_are_flagged_with_their_reason(engine, tmp_path):
    leaky = new_battle(engine, tmp_path, {"qwen2-vl-2b": ("done", "I am Qwen, made by Alibaba Cloud."),
                                          "llava": ("done", "A cat.")})
    result = cast_vote(engine, CATALOG, leaky, "ann", "A")
    assert result.flagged and "panel A's answer names its model or maker" in (result.flag_reason or "")
    empty = new_battle(engine, tmp_path, {"llava": ("done", "   "), "smolvlm": ("done", "A dog.")})
    assert "panel A's answer is empty" in (cast_vote(engine, CATALOG, empty, "ann", "B").flag_reason or "")
    clean = new_battle(engine, tmp_path, {"llava": ("done", "A bird."), "smolvlm": ("done", "A qwerty keyboard.")})
    assert not cast_vote(engine, CATALOG, clean, "ann", "A").flagged
    board = compute(engine, Query(), {})
    assert board["votes_used"] == 1 and board["votes_flagged"] == 2
    assert compute(engine, Query(include_flagged=True), {})["votes_used"] == 3
    rows = list(battle_rows(engine))
    assert {row["flagged"] for row in rows} == {True, False}
    assert all(set(row) >= {"model_a", "model_b", "winner", "judge", "tstamp", "question_id", "anony", "turn"}
               for row in rows)


def test_identity_check_matches_whole_words_of_name_maker_and_repo():
    qwen = CATALOG.get("qwen2-vl-2b")
    assert (names_itself("As Qwen2-VL I think", qwen) or "").lower() in ("qwen2", "qwen")
    assert names_itself("made by alibaba", qwen) == "Alibaba"
    assert names_itself("a qwerty keyboard and a queen", qwen) is None


def test_draw_prefers_the_pair_with_the_fewest_votes():
    models = ["a", "b", "c", "d"]
    counts = {frozenset(p): 5 for p in [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]}
    for seed in range(10):
        assert set(draw(models, 2, counts, random.Random(seed))) == {"c", "d"}
    assert len(set(draw(models, 3, {}, random.Random(1)))) == 3
    with pytest.raises(InputError, match="from 2 to 8"):
        draw(models, 9, {}, random.Random(0))
    with pytest.raises(InputError, match="needs 5 available models; 4 are available"):
        draw(models, 5, {}, random.Random(0))


def test_the_leaderboard_is_computed_once_until_a_vote_changes(engine, tmp_path):
    cache = Cache()
    for _ in range(3):
        battle_id = new_battle(engine, tmp_path, {"llava": ("done", "x"), "smolvlm": ("done", "y")})
        cast_vote(engine, CATALOG, battle_id, "ann", "A")
    battle_id = new_battle(engine, tmp_path, {"llava": ("done", "x"), "smolvlm": ("done", "y")})
    cast_vote(engine, CATALOG, battle_id, "ann", "B")
    first = cache.get(engine, Query(), {})
    assert cache.get(engine, Query(), {}) is first and cache.fits == 1
    ranked = {m["model"]: m for m in first["models"]}
    assert ranked["llava"]["rating"] > ranked["smolvlm"]["rating"]  # 3 wins to 1
    assert round(ranked["llava"]["rating"] - ranked["smolvlm"]["rating"], 2) == 190.85  # 400·log10(3)
    cast_vote(engine, CATALOG, battle_id, "bob", "B")
    second = cache.get(engine, Query(), {})
    assert second is not first and cache.fits == 2 and second["votes_used"] == 5
