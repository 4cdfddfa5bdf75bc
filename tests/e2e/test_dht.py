"""The DHT as users run it (issue 15.2): `p2prtc relay` serves the Kademlia DHT (a second relay
joins it with --bootstrap), `p2prtc listen RELAY --bootstrap ADDR` publishes its signed peer
record (`published`), `p2prtc dial PEER_ID --bootstrap ADDR` finds it (`found`) and connects
directly. Each command goes to a different DHT node, so the record crossed the DHT.

Run inside the test namespace:
    scripts/netns-run .venv/bin/python -m pytest tests/e2e/test_dht.py -q
"""

from __future__ import annotations

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
