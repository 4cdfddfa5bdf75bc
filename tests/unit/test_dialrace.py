"""dialrace.race (Node.dial over several addresses, RFC 8305 style) with fake attempts that the
test finishes itself: who starts when, who wins, what is cancelled or closed."""

from __future__ import annotations

import asyncio

import pytest

from p2prtc.dialrace import race
from p2prtc.errors import DialError

LONG = 3600.0  # an attempt delay that never passes in a test


class FakeConn:
    def __init__(self, name: str, direct: bool = True) -> None:
        self.name = name
        self.direct = direct
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class Attempts:
    """attempt(target) waits until the test resolves it with give(target, conn or error)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.pending: dict[str, asyncio.Future[FakeConn]] = {}
        self.changed = asyncio.Event()

    async def attempt(self, target: str) -> FakeConn:
        fut: asyncio.Future[FakeConn] = asyncio.get_running_loop().create_future()
        self.pending[target] = fut
        self.started.append(target)
        self.changed.set()
        try:
            return await fut
        except asyncio.CancelledError:
            self.cancelled.append(target)
            raise

    async def until_started(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self.started) < n:
                self.changed.clear()
                await self.changed.wait()

    def give(self, target: str, outcome: FakeConn | Exception) -> None:
        fut = self.pending[target]
        if isinstance(outcome, Exception):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


def direct(c: FakeConn) -> bool:
    return c.direct


async def test_the_next_attempt_waits_for_the_delay_and_the_first_direct_one_wins():
    a = Attempts()
    task = asyncio.ensure_future(race(["x", "y"], a.attempt, direct, delay=LONG))
    await a.until_started(1)
    assert a.started == ["x"]  # y waits for the delay (or for x to fail)
    winner = FakeConn("x")
    a.give("x", winner)
    result = await task
    assert result.winner is winner and a.started == ["x"] and not result.errors


async def test_a_failure_starts_the_next_attempt_at_once():
    a = Attempts()
    task = asyncio.ensure_future(race(["x", "y"], a.attempt, direct, delay=LONG))
    await a.until_started(1)
    a.give("x", DialError("relay unreachable"))
    await a.until_started(2)
    a.give("y", FakeConn("y"))
    result = await task
    assert result.winner.name == "y"
    assert [(t, str(e)) for t, e in result.errors] == [("x", "relay unreachable")]


async def test_delay_zero_starts_all_and_cancels_the_losers():
    a = Attempts()
    task = asyncio.ensure_future(race(["x", "y", "z"], a.attempt, direct, delay=0))
    await a.until_started(3)
    a.give("y", FakeConn("y"))
    result = await task
    assert result.winner.name == "y" and sorted(a.cancelled) == ["x", "z"]


async def test_a_relayed_result_is_kept_but_does_not_win():
    a = Attempts()
    task = asyncio.ensure_future(race(["plain", "webrtc"], a.attempt, direct, delay=0))
    await a.until_started(2)
    relayed = FakeConn("plain", direct=False)
    a.give("plain", relayed)
    a.give("webrtc", DialError("no direct WebRTC connection"))
    result = await task
    assert result.winner is None and result.relayed == [("plain", relayed)]
    assert not relayed.closed and len(result.errors) == 1


async def test_two_direct_connections_at_once_keep_one():
    a = Attempts()
    task = asyncio.ensure_future(race(["x", "y"], a.attempt, direct, delay=0))
    await a.until_started(2)
    first, second = FakeConn("x"), FakeConn("y")
    a.give("x", first)
    a.give("y", second)
    result = await task
    assert result.winner is first and second.closed and not first.closed


async def test_cancelling_the_race_cancels_every_attempt():
    a = Attempts()
    task = asyncio.ensure_future(race(["x", "y"], a.attempt, direct, delay=0))
    await a.until_started(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(a.cancelled) == ["x", "y"]
