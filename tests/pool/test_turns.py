"""Turns on one model: round-robin between clients, bounded waits, nothing lost when a waiter gives up."""

from __future__ import annotations

import asyncio

import pytest

from app.pool.errors import Busy, TooManyWaiting
from app.pool.turns import Turns


async def served_in_order(turns: Turns, requests: list[str], hold_s: float = 0.02) -> list[str]:
    """Start `requests` (client names) one after another, each holding its turn `hold_s`; the order served."""
    order: list[str] = []

    async def one(index: int, client: str) -> None:
        async with turns.turn(client):
            order.append(f"{client}{index}")
            await asyncio.sleep(hold_s)

    tasks = []
    for index, client in enumerate(requests):
        tasks.append(asyncio.create_task(one(index, client)))
        await asyncio.sleep(0)  # each joins the queue before the next
    await asyncio.gather(*tasks)
    return order


async def test_a_flooding_client_does_not_push_others_to_the_back():
    turns = Turns("m", max_waiting=10)
    order = await served_in_order(turns, ["flood"] * 6 + ["quiet"])
    # FIFO would serve quiet last (7th); round-robin serves it right after the flood's running answer
    assert order.index("quiet6") == 1, order


async def test_turns_alternate_between_clients():
    turns = Turns("m", max_waiting=10)
    order = await served_in_order(turns, ["a", "a", "a", "b", "b", "b", "c"])
    clients = [name[0] for name in order]
    assert clients == ["a", "b", "c", "a", "b", "a", "b"], order  # a's first went straight in: a is served last


async def test_a_client_over_its_waiting_limit_is_told_to_wait_with_a_retry_estimate():
    turns = Turns("tiny-slow", max_waiting=2)
    release = asyncio.Event()

    async def hold(client: str) -> None:
        async with turns.turn(client):
            await release.wait()

    tasks = [asyncio.create_task(hold("greedy")) for _ in range(3)]  # one running, two waiting
    await asyncio.sleep(0.01)
    with pytest.raises(TooManyWaiting, match="you already have 2 requests waiting for this model; the limit is 2") \
            as refused:
        async with turns.turn("greedy"):
            pass
    assert refused.value.retry_after_s and refused.value.retry_after_s >= 1
    async with asyncio.timeout(1):  # another client is not refused, only queued
        other = asyncio.create_task(hold("other"))
        await asyncio.sleep(0.01)
        assert turns.waiting == 3
    release.set()
    await asyncio.gather(*tasks, other)
    assert turns.active == 0 and turns.waiting == 0


async def test_a_request_that_waits_too_long_hears_how_many_were_ahead():
    turns = Turns("tiny-slow", timeout_s=0.3)
    release = asyncio.Event()

    async def hold(client: str) -> None:
        async with turns.turn(client):
            await release.wait()

    running = asyncio.create_task(hold("a"))
    await asyncio.sleep(0.01)
    heard: list[int] = []
    with pytest.raises(Busy, match=r"tiny-slow is busy: 1 request ahead of you; waited 0.3 s for a turn") as busy:
        async with turns.turn("b", on_position=heard.append):
            pass
    assert heard == [1] and busy.value.retry_after_s >= 1
    release.set()
    await running
    assert turns.active == 0 and turns.waiting == 0


async def test_a_waiter_hears_its_place_move_up():
    turns = Turns("m")
    heard: list[int] = []
    order = []

    async def one(client: str, hold_s: float) -> None:
        async with turns.turn(client, on_position=heard.append if client == "last" else None):
            order.append(client)
            await asyncio.sleep(hold_s)

    tasks = [asyncio.create_task(one(name, 0.05)) for name in ("a", "b", "c")]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(one("last", 0)))
    await asyncio.gather(*tasks)
    assert order[-1] == "last" and heard == [3, 2, 1]


async def test_a_cancelled_waiter_leaves_no_turn_behind():
    turns = Turns("m")
    release = asyncio.Event()

    async def hold() -> None:
        async with turns.turn("a"):
            await release.wait()

    running = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiting.cancel()
    release.set()
    await running
    with pytest.raises(asyncio.CancelledError):
        await waiting
    async with asyncio.timeout(1):  # the slot is free again
        async with turns.turn("b"):
            assert turns.active == 1
    assert turns.active == 0 and turns.waiting == 0
