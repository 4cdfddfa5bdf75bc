"""Dialing several addresses of one peer at once, happy-eyeballs style (RFC 8305, section 5):
one attempt more every `delay` seconds, or at once when every running one has failed; the first
direct connection ends the race and the attempts still running are cancelled. `Node.dial` runs
it over a peer's `/p2p-circuit/webrtc` addresses through different relays.

The race knows nothing of transports: `attempt(target)` makes a connection, `is_direct(conn)`
tells a direct one from a relayed one (kept as a fallback, not a winner).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from .errors import P2PError

# RFC 8305's recommended Connection Attempt Delay (section 5, 250 ms), which go-libp2p's dial
# ranker also uses between its address groups.
ATTEMPT_DELAY = 0.25


class Closable(Protocol):
    async def close(self) -> None: ...


A = TypeVar("A")
C = TypeVar("C", bound=Closable)


@dataclass
class RaceResult(Generic[A, C]):
    """`winner`: the first direct connection, or None. `relayed`: the relayed connections
    attempts gave (target, connection), in the order they came. `errors`: the attempts that
    failed (target, error)."""

    winner: C | None = None
    relayed: list[tuple[A, C]] = field(default_factory=list)
    errors: list[tuple[A, P2PError | OSError]] = field(default_factory=list)


async def race(targets: Sequence[A], attempt: Callable[[A], Awaitable[C]],
               is_direct: Callable[[C], bool], *, delay: float = ATTEMPT_DELAY) -> RaceResult[A, C]:
    """Run `attempt` on each target in turn (delay 0: all at once) until one gives a direct
    connection. Attempts still running then are cancelled; a second direct connection (two
    attempts that finished together: the one started first is kept) is closed. Failures (P2PError, OSError) are collected,
    anything else propagates (after the running attempts were cancelled)."""
    queue = list(targets)
    delay = max(0.0, delay)
    result: RaceResult[A, C] = RaceResult()
    running: dict[asyncio.Future[C], A] = {}
    try:
        while result.winner is None and (queue or running):
            for target in queue[:1 if delay else None]:
                queue.remove(target)
                running[asyncio.ensure_future(attempt(target))] = target
            done, _ = await asyncio.wait(running, timeout=delay if queue else None,
                                         return_when=asyncio.FIRST_COMPLETED)
            # attempts that finished together are taken in the order they started (`running`
            # keeps it; asyncio.wait's set does not): the earlier address wins a tie
            for task in [t for t in running if t in done]:
                target = running.pop(task)
                try:
                    conn = task.result()
                except (P2PError, OSError) as e:
                    result.errors.append((target, e))
                    continue
                if not is_direct(conn):
                    result.relayed.append((target, conn))
                elif result.winner is None:
                    result.winner = conn
                else:
                    await conn.close()  # a second direct connection: one is enough
    finally:
        for task in running:
            task.cancel()
        late = await asyncio.gather(*running, return_exceptions=True)
        for item in late:  # finished while being cancelled
            if not isinstance(item, BaseException) and item is not result.winner \
                    and is_direct(item):
                await item.close()
    return result
