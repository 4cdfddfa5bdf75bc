"""Measure what a NAT really does before trusting it (TESTING.md; RFC 5780's tests, simplified).

The server runs on the relay host with four UDP sockets: (IP1, P), (IP1, P+1), (IP2, P),
(IP2, P+1). Each answers a small JSON request with the address:port it saw, the hop count (from the
TTL: Linux sends with 64), and can answer from another of its sockets. The client, inside a
peer's namespace:

- mapping: one socket asks the relay's STUN server (IP1:3478), (IP1, P) and (IP2, P) for its
  public address. Same port for all: endpoint-independent; different per address only:
  address-dependent; different per port too: address-and-port-dependent (symmetric);
  equal to the local address: no NAT at all.
- filtering: a fresh socket sends only to (IP1, P) and asks for answers from that socket, from
  (IP1, P+1) (another port) and from (IP2, P+1) (another address). Which answers arrive tells
  endpoint-independent (all), address-dependent (same address only) or address-and-port-
  dependent filtering (only the one it sent to).

    python -m p2prtc.lab.probe server IP1 IP2 [--port P]
    python -m p2prtc.lab.probe client IP1 IP2 [--port P] [--stun-port 3478]   -> one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import struct
import sys
import time

from ..protocols.stun import BINDING_REQUEST, HEADER, MAGIC_COOKIE

DEFAULT_TTL = 64
# Linux values (<linux/in.h>); Python's socket module lacks IP_RECVTTL.
IP_TTL = 2
IP_RECVTTL = 12
ATTEMPTS = 3
WAIT = 0.25  # seconds to wait for each round of answers; the lab's RTT is well under 1 ms
# Which server socket answers: the one asked ("same"), or a fixed other one.
REPLY_VIA = {"same": None, "port": 1, "addr": 3}


def _sockets(ip1: str, ip2: str, port: int) -> list[tuple[str, int]]:
    return [(ip1, port), (ip1, port + 1), (ip2, port), (ip2, port + 1)]


def serve(ip1: str, ip2: str, port: int) -> None:
    socks = []
    for addr in _sockets(ip1, ip2, port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        s.bind(addr)
        socks.append(s)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    print(json.dumps({"event": "probe-server", "sockets": [f"{a}:{p}" for a, p in
                                                           _sockets(ip1, ip2, port)]}), flush=True)
    while True:
        for key, _ in sel.select():
            s = socks[key.data]  # (registered with its index)
            try:
                data, anc, _flags, src = s.recvmsg(2048, socket.CMSG_SPACE(4))
                req = json.loads(data)
                other = REPLY_VIA[req.get("via", "same")]
                via = s if other is None else socks[other]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            ttl = None
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == IP_TTL:
                    ttl = struct.unpack("i", value[:4])[0]
            reply = {"id": req.get("id"), "seen": f"{src[0]}:{src[1]}",
                     "hops": DEFAULT_TTL - ttl if ttl else None,
                     "from": "{}:{}".format(*via.getsockname())}
            try:
                via.sendto(json.dumps(reply).encode(), src)
            except OSError:
                pass


def _stun_request() -> tuple[bytes, bytes]:
    txid = os.urandom(12)
    return HEADER.pack(BINDING_REQUEST, 0, MAGIC_COOKIE, txid), txid


def _stun_mapped(data: bytes, txid: bytes) -> str | None:
    """XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS) of a binding success for `txid`."""
    if len(data) < HEADER.size:
        return None
    _type, length, cookie, rx = HEADER.unpack_from(data)
    if rx != txid or cookie != MAGIC_COOKIE:
        return None
    pos, found = HEADER.size, None
    while pos + 4 <= len(data):
        atype, alen = struct.unpack_from(">HH", data, pos)
        val = data[pos + 4:pos + 4 + alen]
        if atype in (0x0020, 0x0001) and len(val) >= 8 and val[1] == 1:
            port = struct.unpack(">H", val[2:4])[0]
            ip = val[4:8]
            if atype == 0x0020:
                port ^= MAGIC_COOKIE >> 16
                ip = bytes(a ^ b for a, b in zip(ip, struct.pack(">I", MAGIC_COOKIE), strict=True))
                return f"{socket.inet_ntoa(ip)}:{port}"
            found = f"{socket.inet_ntoa(ip)}:{port}"
        pos += 4 + alen + (-alen % 4)
    return found


def _local_ip(dest: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((dest, 9))
        local: str = s.getsockname()[0]
        return local


def probe(ip1: str, ip2: str, port: int, stun_port: int, wait: float = WAIT) -> dict[str, object]:
    local_ip = _local_ip(ip1)
    # 1. mapping: one socket, three destinations
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((local_ip, 0))
    s.settimeout(wait)
    stun_msg, txid = _stun_request()
    dests = {"stun": (ip1, stun_port), "port": (ip1, port), "addr": (ip2, port)}
    mapped: dict[str, str] = {}
    hops = None
    for _ in range(ATTEMPTS):
        for name, dest in dests.items():
            if name in mapped:
                continue
            msg = stun_msg if name == "stun" else json.dumps({"id": name, "via": "same"}).encode()
            s.sendto(msg, dest)
        deadline = time.monotonic() + wait
        while len(mapped) < len(dests) and time.monotonic() < deadline:
            try:
                data, src = s.recvfrom(2048)
            except TimeoutError:
                break
            if src == dests["stun"]:
                m = _stun_mapped(data, txid)
                if m:
                    mapped["stun"] = m
                continue
            try:
                reply = json.loads(data)
            except ValueError:
                continue
            if reply.get("id") in dests:
                mapped[reply["id"]] = reply["seen"]
                hops = reply.get("hops", hops)
        if len(mapped) == len(dests):
            break
    local = "{}:{}".format(*s.getsockname())
    s.close()
    if len(mapped) < len(dests):
        return {"error": f"no answer from {sorted(set(dests) - set(mapped))} (probe server "
                         "unreachable?)", "local": local, "mapped": mapped}
    ports = {n: m for n, m in mapped.items()}
    if all(m == local for m in ports.values()):
        mapping = "none"
    elif ports["stun"] == ports["port"] == ports["addr"]:
        mapping = "endpoint-independent"
    elif ports["stun"] != ports["port"]:
        mapping = "address-and-port-dependent"
    else:
        mapping = "address-dependent"

    # 2. filtering: a fresh socket sends only to (ip1, port)
    f = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    f.bind((local_ip, 0))
    f.settimeout(wait)
    got: set[str] = set()
    for _ in range(ATTEMPTS):
        for via in REPLY_VIA:
            if via not in got:
                f.sendto(json.dumps({"id": via, "via": via}).encode(), (ip1, port))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and len(got) < len(REPLY_VIA):
            try:
                data, _src = f.recvfrom(2048)
            except TimeoutError:
                break
            try:
                got.add(json.loads(data)["id"])
            except (ValueError, KeyError, TypeError):
                pass
        if len(got) == len(REPLY_VIA):
            break
    f.close()
    if "same" not in got:
        filtering = "blocks-everything"
    elif "addr" in got:
        filtering = "endpoint-independent"
    elif "port" in got:
        filtering = "address-dependent"
    else:
        filtering = "address-and-port-dependent"
    return {"local": local, "mapped": mapped, "mapping": mapping, "filtering": filtering,
            "hops": hops, "replies": sorted(got), "type": classify(mapping, filtering, hops)}


def classify(mapping: str, filtering: str, hops: int | None) -> str:
    """The lab NAT type these measurements describe (see nat.EXPECTED), or a description."""
    if mapping == "none":
        return "public"
    if mapping == "address-and-port-dependent":
        return "symmetric"
    if mapping == "endpoint-independent":
        if filtering == "endpoint-independent":
            return "full-cone"
        if filtering == "address-dependent":
            return "restricted"
        if filtering == "address-and-port-dependent":
            return "double" if hops == 2 else "port-restricted"
    return f"unusual ({mapping} mapping, {filtering} filtering)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2prtc.lab.probe")
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("ip1")
    p.add_argument("ip2")
    p.add_argument("--port", type=int, default=3479)
    p.add_argument("--stun-port", type=int, default=3478)
    p.add_argument("--wait", type=float, default=WAIT, help="seconds per round of answers")
    args = p.parse_args(argv)
    if args.role == "server":
        try:
            serve(args.ip1, args.ip2, args.port)
        except KeyboardInterrupt:
            pass
        return 0
    report = probe(args.ip1, args.ip2, args.port, args.stun_port, args.wait)
    print(json.dumps({"event": "probe", **report}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
