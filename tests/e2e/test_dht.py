"""The DHT as users run it (issue 15.2): `p2prtc relay` serves the Kademlia DHT (a second relay
joins it with --bootstrap), `p2prtc listen RELAY --bootstrap ADDR` publishes its signed peer
record (`published`), `p2prtc dial PEER_ID --bootstrap ADDR` finds it (`found`) and connects
directly. Each command goes to a different DHT node, so the record crossed the DHT.

Run inside the test namespace:
    scripts/netns-run .venv/bin/python -m pytest tests/e2e/test_dht.py -q
"""

from __future__ import annotations

import time

from ..netns import lab_ip
from .webpage import Cli, free_port

STEP = 30.0  # seconds for one step on a loaded machine


async def relay(clis, name: str, *extra: str) -> tuple[Cli, str, str]:
    ip = lab_ip()
    cli = await clis("relay", "--port", str(free_port(ip)), "--listen-ip", ip, "--stun-port", "0",
                     "--json", *extra, name=name)
    listening = await cli.wait_event("listening", STEP)
    addr = next(a for a in listening["addrs"] if "/ws" not in a)
    return cli, addr, listening["peer"]


async def test_listen_publishes_dial_finds_by_peer_id(clis):
    relay_a, addr_a, peer_a = await relay(clis, "relay A")
    await relay_a.wait_event("dht", STEP)
    relay_b, addr_b, _ = await relay(clis, "relay B", "--bootstrap", addr_a)
    joined = await relay_b.wait_event("dht", STEP)
    assert joined["bootstrap"] == [peer_a]

    lis = await clis("listen", addr_a, "--bootstrap", addr_b, "--json", "--stun", "none",
                     "--turn", "none", name="listener")
    peer = (await lis.wait_event("peer", STEP))["peer"]
    published = await lis.wait_event("published", STEP)
    assert published["record_peers"] >= 1 and published["provider_peers"] >= 1
    assert all("/p2p-circuit/webrtc" in a for a in published["addrs"])

    dialer = await clis("dial", peer, "--bootstrap", addr_a, "--json", "--stun", "none",
                        "--turn", "none", name="dialer")
    found = await dialer.wait_event("found", STEP)
    assert found["peer"] == peer and found["source"] == "record"
    assert found["addrs"] == published["addrs"]
    connected = await dialer.wait_event("connected", STEP, peer=peer)
    assert connected["direct"] and connected["transport"] == "webrtc"
    await lis.wait_event("connected", STEP, transport="webrtc")


async def test_dial_peer_id_needs_bootstrap(clis):
    dialer = await clis("dial", "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", "--json",
                        name="dialer")
    err = await dialer.wait_event("error", STEP)
    assert "--bootstrap" in err["reason"]


async def test_listen_finds_relays_in_the_dht(clis):
    """Relay discovery (issue 15.3): with no relay given, listen --bootstrap reserves on two
    relays that provide the relays' key, and a dialer reaches it by peer id."""
    relay_a, addr_a, peer_a = await relay(clis, "relay A")
    await relay_a.wait_event("dht", STEP)
    relay_b, _addr_b, peer_b = await relay(clis, "relay B", "--bootstrap", addr_a)
    await relay_b.wait_event("dht", STEP)

    lis = await clis("listen", "--bootstrap", addr_a, "--json", "--stun", "none",
                     "--turn", "none", name="listener")
    peer = (await lis.wait_event("peer", STEP))["peer"]
    published = await lis.wait_event("published", STEP)
    relays = {a.split("/p2p-circuit")[0].rsplit("/p2p/", 1)[1] for a in published["addrs"]}
    assert relays == {peer_a, peer_b}

    dialer = await clis("dial", peer, "--bootstrap", addr_a, "--json", "--stun", "none",
                        "--turn", "none", name="dialer")
    found = await dialer.wait_event("found", STEP)
    assert found["source"] == "record"
    assert {a.split("/p2p-circuit")[0].rsplit("/p2p/", 1)[1] for a in found["addrs"]} == relays
    connected = await dialer.wait_event("connected", STEP, peer=peer)
    assert connected["direct"]


async def test_listen_with_an_unreachable_bootstrap_warns_and_listens(clis):
    _relay_a, addr_a, _ = await relay(clis, "relay A")
    dead = f"/ip4/{lab_ip()}/tcp/{free_port(lab_ip())}/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
    lis = await clis("listen", addr_a, "--bootstrap", dead, "--json", "--stun", "none",
                     "--turn", "none", name="listener")
    await lis.wait_event("listening", STEP)
    warning = await lis.wait_event("warning", STEP)
    assert "not published in the DHT" in warning["reason"]


def relay_ids(addrs: list[str]) -> set[str]:
    return {a.split("/p2p-circuit")[0].rsplit("/p2p/", 1)[1] for a in addrs}


async def test_listener_replaces_a_lost_relay_from_the_dht(clis):
    """The relay keeper (issue 15.1/15.5): a listener on two relays found in the DHT loses one
    (SIGKILL); after --relay-grace it says so (`relay-lost`), reserves on the third relay the
    DHT knows (`relay-added`, `reservation`), republishes its record through the two it holds,
    and a dialer that finds it by peer id afterwards connects directly."""
    relay_a, addr_a, peer_a = await relay(clis, "relay A")
    await relay_a.wait_event("dht", STEP)
    others = {}
    for name in ("relay B", "relay C"):
        cli, _addr, peer = await relay(clis, name, "--bootstrap", addr_a)
        await cli.wait_event("dht", STEP)
        others[peer] = cli
    by_peer = {peer_a: relay_a, **others}

    grace = 2.0
    lis = await clis("listen", "--bootstrap", addr_a, "--relay-grace", str(grace), "--json",
                     "--stun", "none", "--turn", "none", name="listener")
    peer = (await lis.wait_event("peer", STEP))["peer"]
    first = relay_ids((await lis.wait_event("published", STEP))["addrs"])
    assert len(first) == 2 and first <= set(by_peer), first
    # kill one that is not the bootstrap node (the dialer below asks A)
    victim = next(p for p in sorted(first) if p != peer_a)
    spare = (set(by_peer) - first).pop()
    killed_at = time.monotonic()
    by_peer[victim].proc.kill()

    lost = await lis.wait_event("relay-lost", STEP)
    assert victim in lost["relay"] and lost["down_s"] >= grace, lost
    added = await lis.wait_event("relay-added", STEP)
    assert spare in added["relay"] and "lost" in added["reason"], added

    def republished():
        for e in lis.events:
            if e.get("event") == "published" and relay_ids(e["addrs"]) == first - {victim} | {spare}:
                return e
        return None

    await lis.wait_until(republished, "a record through the surviving and the new relay", STEP)
    took = time.monotonic() - killed_at
    print(f"[relay keeper] relay killed -> record through a replacement in {took:.2f} s "
          f"(grace {grace} s)")

    dialer = await clis("dial", peer, "--bootstrap", addr_a, "--json", "--stun", "none",
                        "--turn", "none", name="dialer")
    found = await dialer.wait_event("found", STEP)
    assert victim not in relay_ids(found["addrs"]), found
    connected = await dialer.wait_event("connected", STEP, peer=peer)
    assert connected["direct"]
