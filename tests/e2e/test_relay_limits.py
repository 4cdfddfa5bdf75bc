"""Honest endings on a relayed-only chat: `p2prtc listen` / `p2prtc dial` (CLI subprocesses)
through `p2prtc relay` with small circuit limits, UDP blocked so that there is no direct path.

Every line the dialer reports `sent` arrives; every other line is reported `undelivered` with the
reason; when the relay's limit ends the relayed connection, both sides say which limit, in words.
Also the event contract: `relayed` for the relayed connection, then exactly one `connected`
(transport relay, direct false) once the WebRTC upgrade has failed.

Run inside the test namespace: scripts/netns-run .venv/bin/python -m pytest tests/e2e/test_relay_limits.py -q
"""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from ..interop.relays import RustRelay
from ..netns import lab_ip
from .webpage import AppPage, Cli, chromium

KIB = 1024
LINE = re.compile(r"<line (\d+)>")




async def start_relay(*limits: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    """`p2prtc relay` on the veth address with the given limit flags; returns it and its TCP and
    WebSocket addresses."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2prtc", "relay", "--listen-ip", lab_ip(), "--port", "0",
        "--websocket-port", "0", "--stun-port", "0", *limits,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    addrs: list[str] = []
    while len(addrs) < 2:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line, "p2prtc relay exited before listening"
        if line.startswith(b"Listening on "):
            addrs.append(line.decode().split(" ", 2)[2].strip())
    return proc, sorted(addrs, key=lambda a: "/ws" in a)


@pytest.fixture
async def relay_factory():
    """`await relay_factory(*limit flags)` -> its TCP address (`ws=True`: TCP and WebSocket)."""
    procs: list[asyncio.subprocess.Process] = []

    async def make(*limits: str, ws: bool = False):
        proc, addrs = await start_relay(*limits)
        procs.append(proc)
        return addrs if ws else addrs[0]

    make.procs = procs
    yield make
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def listener(clis, relay_addr: str) -> tuple[Cli, str]:
    cli = await clis("listen", relay_addr, "--json", "--stun", "none", name="listener")
    ev = await cli.wait_event("listening", timeout=30)
    # browser-dialable (WebSocket) addresses come first, labelled as such
    browser = ev["browser_addrs"]
    assert browser and all("/ws/" in a for a in browser), ev
    assert ev["addrs"][:len(browser)] == browser, ev
    tcp = [a for a in ev["addrs"] if a not in browser and "/p2p-circuit/webrtc/" in a]
    assert tcp, ev
    return cli, tcp[0]


def received_lines(cli: Cli, before: dict | None = None) -> set[int]:
    """Line numbers in the listener's `message` events (chat has no framing: one read may hold
    several lines), those before the event `before` if given."""
    got: set[int] = set()
    events = cli.events[:cli.events.index(before)] if before is not None else cli.events
    for e in events:
        if e["event"] == "message":
            got.update(int(n) for n in LINE.findall(e["text"]))
    return got


def outcomes(cli: Cli) -> tuple[set[int], dict[int, str]]:
    sent = {int(LINE.search(e["text"]).group(1)) for e in cli.events if e["event"] == "sent"}
    undelivered = {int(LINE.search(e["text"]).group(1)): e["reason"] for e in cli.events
                   if e["event"] == "undelivered"}
    return sent, undelivered


def one_connected(cli: Cli, peer: str) -> dict:
    """The event contract: `relayed` first, then exactly one `connected` for the peer."""
    kinds = [e["event"] for e in cli.events if e.get("peer") == peer
             and e["event"] in ("relayed", "connected")]
    assert kinds == ["relayed", "connected"], (kinds, cli.describe())
    ev = next(e for e in cli.events if e["event"] == "connected" and e["peer"] == peer)
    assert ev["transport"] == "relay" and ev["direct"] is False and "/p2p-circuit" in ev["addr"], ev
    return ev


async def chat_past_the_data_limit(clis, relay_addr: str, limit: int, n: int) -> None:
    """Listener and dialer through `relay_addr` (whose circuits carry `limit` bytes), no direct
    path; the dialer sends n lines, more than the limit lets through."""
    lis, addr = await listener(clis, relay_addr)
    lis_peer = (await lis.wait_event("peer"))["peer"]
    dialer = await clis("dial", addr, "--json", "--stun", "none", name="dialer")
    dial_peer = (await dialer.wait_event("peer"))["peer"]
    # no direct path: both sides settle on the relayed connection, and say so once
    await dialer.wait_event("connected", peer=lis_peer, timeout=40)
    await lis.wait_event("connected", peer=dial_peer, timeout=40)
    one_connected(dialer, lis_peer)
    one_connected(lis, dial_peer)
    relayed = next(e for e in dialer.events if e["event"] == "relayed")
    assert relayed["limit"] == {"duration": 120, "data": limit}, relayed
    words = f"{limit // KIB} KiB"

    for i in range(n):
        await dialer.send_line(f"<line {i:04d}> " + "x" * 70)
    await dialer.wait_until(lambda: True if sum(map(len, outcomes(dialer))) >= n else None,
                       f"an outcome for each of {n} lines", 60)
    sent, undelivered = outcomes(dialer)
    assert sent | set(undelivered) == set(range(n)) and not sent & set(undelivered)
    assert undelivered, "the relay's limit was never reached: the test proves nothing"
    assert set(undelivered.values()) == {
        f"not sent: the relay's {words} data limit for this relayed connection is used up"}
    assert max(sent) < min(undelivered), "a line went out after the limit was used up"

    # both sides say why the relayed connection ended
    ended = await dialer.wait_event("disconnected", peer=lis_peer, timeout=30)
    assert ended["reason"] == f"the relay's {words} data limit was reached", ended
    try:
        ended = await lis.wait_event("disconnected", peer=dial_peer, timeout=30)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{dialer.describe()}") from None
    assert ended["reason"] == f"the relay's {words} data limit was reached", ended
    # every line that arrived is reported before the end: `disconnected` is the last word
    missing = sent - received_lines(lis, before=ended)
    assert not missing, f"{len(missing)} lines reported sent never arrived: {sorted(missing)[:20]}"
    assert not [e for e in dialer.events if e["event"] == "error"
                and "WebRTC" not in e["reason"]], dialer.describe()
    print(f"[relay limits] {relay_addr.split('/p2p/')[0]} {words} data limit: {len(sent)} of "
          f"{n} lines sent and arrived, {len(undelivered)} reported not sent")


async def test_data_limit_every_line_arrives_or_is_reported(relay_factory, clis, udp_blocked):
    relay_addr = await relay_factory("--max-circuit-bytes", str(64 * KIB))
    await chat_past_the_data_limit(clis, relay_addr, 64 * KIB, 1000)  # ~85 KiB of chat


@pytest.mark.interop
async def test_data_limit_through_rusts_relay(rust_peer_factory, clis, udp_blocked):
    """rust-libp2p's relay with its default limits (128 KiB counted over both directions
    together, 2 min; it resets the streams at the limit)."""
    relay = await RustRelay(rust_peer_factory).start()
    await chat_past_the_data_limit(clis, relay.addr("tcp"), 128 * KIB, 2000)  # ~170 KiB


async def test_time_limit_ends_it_in_words(relay_factory, clis):
    """A plain relayed dial (no upgrade attempted) on a relay with an 8 s time limit: lines go
    through until the limit, then both sides say it was the time limit."""
    relay_addr = await relay_factory("--max-circuit-duration", "8", "--max-circuit-bytes", "0")
    lis, addr = await listener(clis, relay_addr)
    lis_peer = (await lis.wait_event("peer"))["peer"]
    plain = addr.replace("/p2p-circuit/webrtc/", "/p2p-circuit/")
    dialer = await clis("dial", plain, "--json", name="dialer")
    dial_peer = (await dialer.wait_event("peer"))["peer"]
    ev = await dialer.wait_event("connected", peer=lis_peer, timeout=30)
    assert ev["transport"] == "relay" and ev["direct"] is False, ev
    one_connected(dialer, lis_peer)

    i = 0
    while not any(e["event"] == "disconnected" for e in dialer.events):
        await dialer.send_line(f"<line {i:04d}> hello")
        await dialer.wait_until(lambda i=i: True if sum(map(len, outcomes(dialer))) > i else None,
                           f"the outcome of line {i}", 15)
        if i in outcomes(dialer)[0]:  # wait for it to arrive before sending the next one
            await lis.wait_until(lambda i=i: True if i in received_lines(lis) else None,
                            f"line {i}", 15)
        i += 1
        assert i < 100_000
    ended = await dialer.wait_event("disconnected", peer=lis_peer, timeout=30)
    assert ended["reason"] == "the relay's 8-second time limit was reached", ended
    ended = await lis.wait_event("disconnected", peer=dial_peer, timeout=30)
    assert ended["reason"] == "the relay's 8-second time limit was reached", ended
    sent, undelivered = outcomes(dialer)
    assert len(sent) > 10 and sent <= received_lines(lis)
    assert all(r.startswith("not ") for r in undelivered.values()), undelivered


@pytest.mark.browser
async def test_page_and_python_say_why_the_relayed_connection_ended(relay_factory, clis):
    """The page (js-libp2p) dials `p2prtc listen` through a relay with an 8 s time limit; the
    direct WebRTC connection stays, and both say in the same words why the relayed one ended."""
    tcp, ws = await relay_factory("--max-circuit-duration", "8", ws=True)
    lis = await clis("listen", tcp, "--json", "--stun", "none", name="listener")
    ev = await lis.wait_event("listening", timeout=30)
    target = ev["browser_addrs"][0]
    assert "/ws/" in target and target == ev["addrs"][0], ev
    web = await clis("web", "--host", "127.0.0.1", "--port", "0", "--relay", ws, "--stun", "none",
                     "--json", name="web")
    url = (await web.wait_event("listening"))["urls"][0]
    async with chromium() as browser:
        page = await AppPage.open(browser, url, "page")
        await page.expect_output("Connected to relay")
        await page.dial_peer(target)
        page_peer = await page.page.text_content("#peer-id")
        await lis.wait_event("connected", peer=page_peer, transport="webrtc", timeout=30)
        why = "the relay's 8-second time limit was reached"
        ended = await lis.wait_event("relayed-closed", peer=page_peer, timeout=30)
        assert ended["reason"] == why, ended
        await page.expect_output(f"ended: {why}; the direct connection stays", timeout=30)
        assert not [e for e in lis.events if e["event"] == "disconnected"], lis.describe()


async def test_peer_left_and_relay_went_away(relay_factory, clis):
    """Plain relayed dials (no upgrade attempted): a dialer that quits reads as "the peer left"
    on the listener; a relay that goes away as "the relay went away" on both sides, and the
    listener's retries are warnings, not errors."""
    relay_addr = await relay_factory()
    lis, addr = await listener(clis, relay_addr)
    plain = addr.replace("/p2p-circuit/webrtc/", "/p2p-circuit/")

    first = await clis("dial", plain, "--json", name="dialer 1")
    first_peer = (await first.wait_event("peer"))["peer"]
    await first.wait_event("connected", transport="relay", timeout=30)
    await lis.wait_event("relayed", peer=first_peer, timeout=30)
    await first.send_line("/quit")
    ended = await lis.wait_event("disconnected", peer=first_peer, timeout=30)
    assert ended["reason"] == "the peer left", ended

    second = await clis("dial", plain, "--json", name="dialer 2")
    second_peer = (await second.wait_event("peer"))["peer"]
    ev = await second.wait_event("connected", transport="relay", timeout=30)
    await lis.wait_event("relayed", peer=second_peer, timeout=30)
    relay_proc = next(p for p in relay_factory.procs if p.returncode is None)
    relay_proc.kill()
    ended = await second.wait_event("disconnected", peer=ev["peer"], timeout=30)
    assert ended["reason"] == "the relay went away", ended
    ended = await lis.wait_event("disconnected", peer=second_peer, timeout=30)
    assert ended["reason"] == "the relay went away", ended
    warning = await lis.wait_event("warning", timeout=30)
    assert "reserving again" in warning["reason"], warning
    assert not [e for e in lis.events if e["event"] == "error"], lis.describe()


async def test_file_that_does_not_fit_the_data_limit_is_not_sent(relay_factory, clis, tmp_path):
    """Over a relayed-only connection, a file larger than what the relay's data limit leaves is
    refused up front (the relay would cut it off half-way); one that fits goes through."""
    import hashlib
    import os

    relay_addr = await relay_factory("--max-circuit-bytes", str(64 * KIB))
    lis = await clis("listen", relay_addr, "--json", "--stun", "none", "--save-dir",
                     str(tmp_path / "in"), name="listener")
    ev = await lis.wait_event("listening", timeout=30)
    addr = next(a for a in ev["addrs"] if a not in ev["browser_addrs"])
    dialer = await clis("dial", addr.replace("/p2p-circuit/webrtc/", "/p2p-circuit/"), "--json",
                        name="dialer")
    await dialer.wait_event("connected", transport="relay", timeout=30)
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(os.urandom(100 * KIB))
    small.write_bytes(os.urandom(20 * KIB))

    await dialer.send_line(f"/send {big}")
    refused = await dialer.wait_event("error", name="big.bin", timeout=30)
    assert refused["reason"].startswith("not sent: 102400 bytes do not fit: the relay's 64 KiB "
                                        "data limit for this relayed connection leaves room for "), refused
    await dialer.send_line(f"/send {small}")
    sent = await dialer.wait_event("file-sent", name="small.bin", timeout=30)
    got = await lis.wait_event("file", name="small.bin", timeout=30)
    assert got["sha256"] == sent["sha256"] == hashlib.sha256(small.read_bytes()).hexdigest()
    assert not [e for e in dialer.events + lis.events if e["event"] == "disconnected"]
