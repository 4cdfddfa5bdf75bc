"""The relay client's retry schedule (issue 12): a relay that went away is retried every
FAST_RETRY, so the reservation is back within 2 s of the relay's return (the NAT lab's chaos run
checks the same with a SIGKILLed relay process); a relay that answers and refuses backs off.

Hosts in one process over TCP on loopback. The clock-driven parts are the client's own retry
timers and the time the relay stays away; every wait is on an event with a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from p2prtc.events import RelayError, ReservationLost, ReservationMade
from p2prtc.host import Host
from p2prtc.identity import Identity
from p2prtc.multiaddr import Multiaddr
from p2prtc.relay.limits import RelayLimits
from p2prtc.relay.server import RelayService
from p2prtc.transports.circuit import FAST_RETRY

T = 5.0
RELAY_AWAY = 3.0  # long enough for the old schedule (1 s, 2 s, 4 s, ...) to be ~3 s late
RETURN_LIMIT = 2.0  # issue 12: reservations back within 2 s of the relay's return


@pytest.fixture
async def hosts():
    made: list[Host] = []
    yield made
    await asyncio.wait_for(asyncio.gather(*(h.close() for h in made)), 15)


async def start_relay(hosts: list[Host], identity: Identity, port: int = 0,
                      limits: RelayLimits | None = None) -> tuple[Host, Multiaddr]:
    h = Host(identity)
    hosts.append(h)
    RelayService(h, limits or RelayLimits())
    addrs = await h.listen(f"/ip4/127.0.0.1/tcp/{port}")
    return h, addrs[0].with_peer_id(h.peer_id)


async def test_reservation_back_within_2s_of_the_relays_return(hosts, caplog):
    # every failed attempt is logged (a warning the first time, then debug): the attempts' times
    caplog.set_level(logging.DEBUG, logger="p2prtc.transports.circuit")
    ident = Identity.generate()
    relay, raddr = await start_relay(hosts, ident)
    port = int(raddr.value_for("tcp"))
    b = Host()
    hosts.append(b)
    made: asyncio.Queue[float] = asyncio.Queue()
    failures: list[float] = []
    b.events.on(ReservationMade, lambda e: made.put_nowait(time.monotonic()))
    lost = asyncio.Event()
    b.events.on(ReservationLost, lambda e: lost.set())
    await b.listen(raddr.encapsulate("/p2p-circuit"))
    await asyncio.wait_for(made.get(), T)

    await relay.close()
    await asyncio.wait_for(lost.wait(), T)
    t_lost_wall = time.time()
    await asyncio.sleep(RELAY_AWAY)  # the relay stays away this long (the fault, not a wait)
    _relay2, raddr2 = await start_relay(hosts, ident, port)
    assert raddr2 == raddr
    t_back = time.monotonic()
    t_made = await asyncio.wait_for(made.get(), T)
    assert t_made - t_back <= RETURN_LIMIT, f"reservation {t_made - t_back:.2f} s after return"

    # while the relay was away it was tried every FAST_RETRY (jittered +-25 %), not backed off
    failures = [r.created for r in caplog.records if "reservation on" in r.getMessage()
                and "failed" in r.getMessage()]
    tries = [t_lost_wall, *(t for t in failures if t > t_lost_wall)]
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert len(gaps) >= 3, gaps
    assert max(gaps) < FAST_RETRY * 1.25 + 0.3, gaps


async def test_a_relay_that_refuses_is_backed_off(hosts):
    _relay, raddr = await start_relay(hosts, Identity.generate(),
                                      limits=RelayLimits(max_reservations=0))
    b = Host()
    hosts.append(b)
    failures: asyncio.Queue[float] = asyncio.Queue()
    b.events.on(RelayError, lambda e: failures.put_nowait(time.monotonic()))
    await b.listen(raddr.encapsulate("/p2p-circuit"))
    first = await asyncio.wait_for(failures.get(), T)
    second = await asyncio.wait_for(failures.get(), T)
    # BACKOFF_INITIAL (1 s) jittered, never the fast retry for an unreachable relay
    assert second - first >= 0.7, second - first
