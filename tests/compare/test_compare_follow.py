"""Following a comparison in progress: a late follower sees every piece of text exactly once."""

from __future__ import annotations

from app.compare.runner import ComparisonRun, ComparisonRunner, OutputRun, PanelEvent
from app.core.catalog import parse_catalog


def runner_with_run() -> tuple[ComparisonRunner, ComparisonRun]:
    catalog = parse_catalog({"models": [{"id": m, "repo": f"org/{m}", "family": "llava", "min_gpu_gb": 1}
                                        for m in ("a", "b")]})
    runner = ComparisonRunner(engine=None, data_dir=".", catalog=catalog, pool=None, limits=None)  # type: ignore
    run = ComparisonRun(1, [OutputRun(1, catalog.get("a"), "generating", ["X"]),
                            OutputRun(2, catalog.get("b"), "generating", ["P"])])
    runner.runs[1] = run
    return runner, run


def stream(runner: ComparisonRunner, run: ComparisonRun, output_id: int, piece: str) -> None:
    """What the runner does for each piece a model streams."""
    output = run.outputs[output_id]
    output.text.append(piece)
    run.publish(PanelEvent(output_id, output.spec.id, "text", "generating", piece))


async def test_text_streamed_while_snapshots_are_sent_arrives_once():
    runner, run = runner_with_run()
    follower = runner.subscribe(1)
    first = await anext(follower)
    assert (first.output_id, first.kind, first.text) == (1, "snapshot", "X")
    stream(runner, run, 2, "Q")  # arrives between the two snapshots
    stream(runner, run, 1, "Y")
    run.publish(PanelEvent(0, "", "end"))
    rest = [event async for event in follower]
    seen = {1: first.text, 2: ""}
    for event in rest:
        if event.kind in ("snapshot", "text"):
            seen[event.output_id] += event.text
    assert seen == {1: "XY", 2: "PQ"}
    assert rest[-1].kind == "end"
