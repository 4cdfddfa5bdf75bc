"""TURN relaying (RFC 8656): `p2prtc relay`'s TURN server vs coturn, in the same run (issue 11.5).

    scripts/netns-run .venv/bin/python bench/turn_bench.py [--quick] [--json out.json]
        [--servers p2prtc,coturn,floor] [--phases throughput,memory,allocations|cpu]
        [--step-seconds 1.5] [--allocations 200] [--cycles 300]

Both servers run with the same secret (TURN REST API credentials, coturn's use-auth-secret), on
the veth address of `scripts/netns-run` (198.51.100.7; the bench refuses to run without it), one
relayed port range each. Ours is the real CLI (`p2prtc relay`, TURN on the STUN port over UDP) with
its per-allocation byte and bandwidth limits lifted (`--turn-max-bytes 0 --turn-max-bandwidth 0`:
coturn has none by default) and its allocation counts raised; coturn is Debian's `turnserver`
with its defaults (relay threads = cores).

The TURN client is a small raw one of ours (blocking UDP sockets, p2prtc's STUN codec for the
requests), not aioice's `create_turn_endpoint`: aioice's `sendto` makes an asyncio task per
datagram, 4.5 us of client CPU each (3.8 ms per MB, measured here against both servers), more than
coturn spends relaying it; the raw sender needs ~1.5-2 ms per MB. The client's CPU (sender and
receiver processes) is shown in every table.

Besides the two servers, a third row: the floor, a uvloop UDP forwarder with no TURN in it (takes
off or puts on the 4-byte ChannelData header and sends: the least any relay on an asyncio event
loop pays per datagram), for the ChannelData ways only; it tells how much of our relay's cost is
TURN and how much the event loop (`--servers p2prtc,coturn` leaves it out).

Phases:
- CPU per MB (first): every way at one offered rate (--cpu-rate, default 30 MB/s), --cpu-runs
  times round-robin; relay CPU per MB *delivered*, whatever the loss (what the kernel drops for
  want of buffer never costs the server's code): the figure the issue's goal compares.
- throughput: one allocation, 1200-byte payloads, four ways: client -> peer as ChannelData (after
  ChannelBind) or as Send indications (CreatePermission only), and peer -> client (the peer sends
  plain UDP to the relayed address; the server wraps it as ChannelData when a channel is bound,
  else as Data indications). The sender and the counting receiver are processes of their own
  (forked, blocking sockets, 4 MiB receive buffers). The sender is paced (1 ms slots) at a ladder of
  rates; each step lasts --step-seconds; loss = 1 - received / sent. A step with > 1% loss is tried
  again (up to 3 tries: on a shared machine a burst of other load makes a server miss its socket
  buffer now and then); the ladder stops at a step lossy in every try, or when the sender cannot
  offer the rate. "best sustained" = the highest received rate of a step with
  <= 1% loss. Relay CPU per MB = the server process's CPU time (all threads, schedstat) during
  the step / MB of payload delivered. Servers alternate step by step ladder by ladder (round-robin)
  so a burst of other load does not land on one only.
- memory: a fresh server process; RSS (VmRSS) with one allocation made and freed, then with N
  allocations held (each with one permission and one channel, as ICE uses them), 1 s after the
  last; KiB per allocation = the difference / N.
- allocations: the same fresh process; allocate (401 challenge + authenticated Allocate) and free
  (Refresh LIFETIME 0) in a loop, each cycle from a new UDP socket on a port not used before in
  the run (a new 5-tuple: coturn refuses an Allocate on the 5-tuple of an allocation freed
  moments ago with 437, which the kernel's reuse of ephemeral ports made happen to ~1% of
  cycles): sequentially, then 4 client processes at once. Rate = cycles / wall time; relay CPU
  ms per cycle.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from peers import cpu_seconds, machine_busy_seconds, machine_info, markdown_table, rss_kib

from p2prtc.protocols.turn_credentials import credentials_for  # noqa: E402
from p2prtc.transports.webrtc_direct import stun as codec  # noqa: E402

IP = "198.51.100.7"  # scripts/netns-run's veth address
NETNS_HINT = "scripts/netns-run .venv/bin/python bench/turn_bench.py"
SECRET = "turn-bench-secret"
REALM = "p2prtc.bench"
PORT_RANGES = {"p2prtc": (50000, 50999), "coturn": (51000, 51999), "floor": (0, 0)}
NAMES = {"p2prtc": "p2prtc relay", "coturn": "coturn",
         "floor": "floor: uvloop forwarder, no TURN"}
PAYLOAD = 1200          # bytes per datagram (a typical WebRTC packet under the path MTU)
CHANNEL = 0x4000
RCVBUF = 4 << 20        # our sockets' receive buffers (net.core.rmem_max here)
SLOT = 0.001            # pacing slot, seconds
LADDER = [5, 10, 20, 30, 45, 60, 80, 100, 130, 170, 220, 300]  # MB/s of payload offered
LOSS_OK = 0.01          # a step counts as sustained at <= 1% loss
STEP_TRIES = 3          # tries of a step before it counts as lossy
BROWSER_DIRECT = 15.0   # MB/s, browser <-> browser direct data channel (REFERENCE.md)
CONCURRENT_CLIENTS = 4
REQUEST_TIMEOUT = 0.5   # s, per try; 4 tries
# Client ports of the memory and allocation phases (below the kernel's ephemeral range, in a
# namespace of our own: nothing else binds there).
CLIENT_PORTS = (10000, 32000)
_client_port = CLIENT_PORTS[0]
WAYS = [("c2p", "channel"), ("c2p", "indication"), ("p2c", "channel"), ("p2c", "indication")]
WAY_LABEL = {("c2p", "channel"): "client -> peer, ChannelData",
             ("c2p", "indication"): "client -> peer, Send indication",
             ("p2c", "channel"): "peer -> client, ChannelData",
             ("p2c", "indication"): "peer -> client, Data indication"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check_network() -> None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((IP, 0))
    except OSError:
        sys.exit(f"{IP} is not a local address: run inside the test namespace:\n  {NETNS_HINT}")


def udp_socket(connect: tuple[str, int] | None = None, port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF)
    s.bind((IP, port))
    if connect is not None:
        s.connect(connect)
    return s


def drain(s: socket.socket) -> None:
    s.setblocking(False)
    try:
        while True:
            s.recv(65536)
    except (BlockingIOError, InterruptedError):
        pass
    finally:
        s.setblocking(True)


# --- a raw TURN client ---------------------------------------------------------------------------

class TurnError(Exception):
    pass


class TurnClient:
    """One allocation from one UDP socket, long-term credentials (RFC 8489 9.2)."""

    def __init__(self, server: tuple[str, int], peer_id: str, port: int = 0) -> None:
        c = credentials_for(SECRET, peer_id, [])
        self.username, self.password = c.username, c.password
        self.server = server
        self.sock = udp_socket(server, port)
        self.realm = self.nonce = None
        self.key = b""
        self.relayed: tuple[str, int] | None = None

    def close(self) -> None:
        self.sock.close()

    def _auth(self, attrs):
        return attrs + [(codec.ATTR_USERNAME, self.username.encode()),
                        (codec.ATTR_REALM, self.realm.encode()),
                        (codec.ATTR_NONCE, self.nonce.encode())]

    def request(self, method: int, attrs: list) -> codec.StunMessage:
        for _ in range(3):  # a 401/438 gives a realm and a fresh nonce: once more with them
            txid = codec.new_transaction_id()
            if self.nonce is None:
                data = codec.build(codec.message_type(method, codec.CLASS_REQUEST), txid, attrs)
            else:
                data = codec.build(codec.message_type(method, codec.CLASS_REQUEST), txid,
                                   self._auth(attrs), integrity_key=self.key)
            msg = self._transact(data, txid)
            if codec.class_of(msg.msg_type) == codec.CLASS_SUCCESS:
                return msg
            code = msg.error_code()
            if code in (401, 438) and codec.ATTR_NONCE in msg.attrs:
                if code == 401 and self.nonce is not None and self.realm is not None:
                    raise TurnError("401 with credentials: "
                                    f"{msg.attrs.get(codec.ATTR_ERROR_CODE)!r}")
                self.realm = codec.text_attr(msg, codec.ATTR_REALM) or self.realm
                self.nonce = codec.text_attr(msg, codec.ATTR_NONCE)
                self.key = codec.long_term_key(self.username, self.realm, self.password)
                continue
            raise TurnError(f"method 0x{method:x}: error {code} "
                            f"{msg.attrs.get(codec.ATTR_ERROR_CODE, b'')[4:]!r}")
        raise TurnError("authentication loop")

    def _transact(self, data: bytes, txid: bytes) -> codec.StunMessage:
        for _ in range(4):
            self.sock.send(data)
            deadline = time.monotonic() + REQUEST_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    got = self.sock.recv(65536)
                except TimeoutError:
                    break
                if codec.looks_like_stun(got) and got[8:20] == txid:
                    return codec.parse(got, codec.MAX_TURN_MESSAGE_SIZE)
        raise TurnError(f"no answer from {self.server}")

    def allocate(self) -> tuple[str, int]:
        msg = self.request(codec.METHOD_ALLOCATE, [
            (codec.ATTR_REQUESTED_TRANSPORT, bytes([codec.TRANSPORT_UDP, 0, 0, 0])),
            (codec.ATTR_LIFETIME, struct.pack(">I", 600))])
        self.relayed = codec.xor_addresses(msg, codec.ATTR_XOR_RELAYED_ADDRESS)[0]
        return self.relayed

    # XOR-PEER-ADDRESS of an IPv4 address XORs with the magic cookie only (RFC 8489 14.2): a
    # value built with any transaction id is right in every request.
    def permit(self, peer: tuple[str, int]) -> None:
        self.request(codec.METHOD_CREATE_PERMISSION, [
            (codec.ATTR_XOR_PEER_ADDRESS, codec.xor_address_value(peer, b"\0" * 12))])

    def bind_channel(self, peer: tuple[str, int], channel: int = CHANNEL) -> None:
        self.request(codec.METHOD_CHANNEL_BIND, [
            (codec.ATTR_CHANNEL_NUMBER, struct.pack(">HH", channel, 0)),
            (codec.ATTR_XOR_PEER_ADDRESS, codec.xor_address_value(peer, b"\0" * 12))])

    def free(self) -> None:
        self.request(codec.METHOD_REFRESH, [(codec.ATTR_LIFETIME, struct.pack(">I", 0))])


# --- the floor: a uvloop UDP forwarder without TURN -------------------------------------------

def floor_server(client_port: int, relay_port: int) -> None:
    """What any asyncio relay pays per datagram before doing TURN: the event loop our relay runs
    (uvloop), a datagram callback, a 4-byte ChannelData header taken off or put on, one sendto.
    A `PEER <port>` datagram on the client port names the peer; a Binding request is answered
    with a bare Binding success header (enough for Server._ready)."""
    import asyncio

    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        state: dict = {"peer": None, "client": None}
        header = codec.CHANNEL_HEADER.pack

        class Client(asyncio.DatagramProtocol):
            def connection_made(self, transport) -> None:
                self.t = transport

            def datagram_received(self, data, addr) -> None:
                if data[:1] == b"\x40":
                    relay.sendto(data[4:], state["peer"])
                elif data[:5] == b"PEER ":
                    state["peer"], state["client"] = (IP, int(data[5:])), addr
                    self.t.sendto(b"OK", addr)
                elif data[:2] == b"\x00\x01":
                    self.t.sendto(b"\x01\x01", addr)

        class Relay(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr) -> None:
                client.sendto(header(CHANNEL, len(data)) + data, state["client"])

        client, _ = await loop.create_datagram_endpoint(Client, local_addr=(IP, client_port))
        relay, _ = await loop.create_datagram_endpoint(Relay, local_addr=(IP, relay_port))
        sock = client.get_extra_info("socket")  # buffers as our relay's: 2 MiB on the client
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):  # side, the default on the relayed one
            sock.setsockopt(socket.SOL_SOCKET, opt, 2 << 20)
        await asyncio.Event().wait()

    uvloop.run(main())


# --- servers -------------------------------------------------------------------------------------

def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((IP, 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix=f"turn-bench-{kind}-")
        self.port = free_udp_port()
        self.proc: subprocess.Popen | None = None

    @property
    def addr(self) -> tuple[str, int]:
        return (IP, self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> Server:
        lo, hi = PORT_RANGES[self.kind]
        self.logf = open(os.path.join(self.dir, "log"), "w")
        if self.kind == "floor":
            self.relay_port = free_udp_port()
            argv = [sys.executable, os.path.abspath(__file__), "--floor-server",
                    f"{self.port},{self.relay_port}"]
        elif self.kind == "p2prtc":
            argv = [sys.executable, "-m", "p2prtc", "relay", "--listen-ip", IP, "--port", "0",
                    "--stun-port", str(self.port), "--stun-alt-port", "0",
                    "--turn-secret", SECRET, "--turn-realm", REALM,
                    "--turn-min-port", str(lo), "--turn-max-port", str(hi),
                    "--turn-max-bytes", "0", "--turn-max-bandwidth", "0",
                    "--turn-max-allocations", "100000", "--turn-max-allocations-per-peer", "100000"]
        else:
            exe = shutil.which("turnserver")
            if exe is None:
                sys.exit("coturn is missing (Debian package coturn; scripts/setup --test "
                         "installs it)")
            argv = [exe, "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", IP,
                    "--relay-ip", IP, "--listening-port", str(self.port),
                    "--min-port", str(lo), "--max-port", str(hi),
                    "--use-auth-secret", "--static-auth-secret", SECRET, "--realm", REALM,
                    "--db", os.path.join(self.dir, "turndb"),
                    "--pidfile", os.path.join(self.dir, "pid"),
                    "--log-file", os.path.join(self.dir, "turn.log"), "--simple-log",
                    "--no-software-attribute"]
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.dir)
        self._ready()
        return self

    def _ready(self) -> None:
        """Until the server answers a Binding request (60 s at most)."""
        deadline = time.monotonic() + 60
        with udp_socket(self.addr) as s:
            s.settimeout(0.2)
            while True:
                if self.proc.poll() is not None:
                    sys.exit(f"{self.kind} exited: {self.read_log()}")
                s.send(codec.build(codec.BINDING_REQUEST, codec.new_transaction_id(), []))
                try:
                    if s.recv(2048)[:2] == b"\x01\x01":  # a Binding success: it is up
                        return
                except TimeoutError:
                    pass
                except ConnectionRefusedError:  # not listening yet (an ICMP error came back)
                    time.sleep(0.2)  # a retry interval, not synchronisation
                if time.monotonic() > deadline:
                    sys.exit(f"{self.kind} does not answer: {self.read_log()}")

    def read_log(self) -> str:
        self.logf.flush()
        with open(os.path.join(self.dir, "log")) as f:
            return f.read()[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- throughput ----------------------------------------------------------------------------------

def _sender(sock: socket.socket, frame: bytes, rate: float, seconds: float, go, out) -> None:
    """Send `frame` at `rate` MB/s of payload (0 = as fast as possible) for `seconds`."""
    pps = rate * 1e6 / PAYLOAD
    go.wait()
    c0 = time.process_time()
    t0 = time.perf_counter()
    sent = errors = 0
    send = sock.send
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
        target = int(elapsed * pps) + 1 if pps else sent + 64
        while sent < target:
            try:
                send(frame)
                sent += 1
            except OSError:  # ENOBUFS, ECONNREFUSED (an ICMP error from an earlier datagram)
                errors += 1
                sent += 1
        if pps:
            next_slot = t0 + (int(elapsed / SLOT) + 1) * SLOT
            pause = next_slot - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    out.put({"sent": sent, "errors": errors, "seconds": time.perf_counter() - t0,
             "cpu": time.process_time() - c0})


def _receiver(sock: socket.socket, done, ready, out) -> None:
    """Count datagrams until the sender is done and nothing came for 0.2 s."""
    buf = bytearray(65536)
    sock.settimeout(0.2)
    n = nbytes = 0
    first = last = 0.0
    head = b""
    clock = time.perf_counter
    recv = sock.recv_into
    c0 = time.process_time()
    ready.set()
    while True:
        try:
            k = recv(buf)
        except TimeoutError:
            if done.is_set():
                break
            continue
        last = clock()
        if not n:
            first = last
            head = bytes(buf[:2])
        n += 1
        nbytes += k
    out.put({"received": n, "bytes": nbytes, "span": last - first, "head": head.hex(),
             "cpu": time.process_time() - c0})


class Path:
    """One allocation set up for one way of relaying: `sender_sock`/`frame` send, `receiver_sock`
    counts."""

    def __init__(self, server: Server, direction: str, mode: str) -> None:
        self.client = TurnClient(server.addr, f"bench-{server.kind}-{direction}-{mode}")
        self.peer = udp_socket()
        peer_addr = self.peer.getsockname()
        self.floor = server.kind == "floor"
        if self.floor:
            self.client.sock.send(b"PEER %d" % peer_addr[1])
            self.client.sock.settimeout(5)
            self.client.sock.recv(16)
            relayed = (IP, server.relay_port)
        else:
            relayed = self.client.allocate()
            if mode == "channel":
                self.client.bind_channel(peer_addr)
            else:
                self.client.permit(peer_addr)
        payload = os.urandom(PAYLOAD)
        if direction == "c2p":
            self.sender_sock, self.receiver_sock = self.client.sock, self.peer
            if mode == "channel":
                self.frame = codec.channel_data(CHANNEL, payload)
            else:
                txid = codec.new_transaction_id()
                self.frame = codec.build(
                    codec.message_type(codec.METHOD_SEND, codec.CLASS_INDICATION), txid,
                    [(codec.ATTR_XOR_PEER_ADDRESS, codec.xor_address_value(peer_addr, txid)),
                     (codec.ATTR_DATA, payload)], fingerprint=False)
            self.expect = None
        else:
            self.peer.connect(relayed)
            self.sender_sock, self.receiver_sock = self.peer, self.client.sock
            self.frame = payload
            self.expect = "40" if mode == "channel" else "00"  # ChannelData / Data indication

    def close(self) -> None:
        try:
            if not self.floor:
                self.client.free()
        except (TurnError, OSError):
            pass
        self.client.close()
        self.peer.close()

    def step(self, server: Server, rate: float, seconds: float) -> dict:
        ctx = mp.get_context("fork")
        drain(self.receiver_sock)
        go, done, ready = ctx.Event(), ctx.Event(), ctx.Event()
        sq, rq = ctx.Queue(), ctx.Queue()
        recv = ctx.Process(target=_receiver, args=(self.receiver_sock, done, ready, rq))
        send = ctx.Process(target=_sender, args=(self.sender_sock, self.frame, rate, seconds,
                                                 go, sq))
        recv.start()
        send.start()
        ready.wait(10)
        c0, m0, s0, t0 = cpu_seconds(server.pid), machine_busy_seconds(), \
            time.process_time(), time.perf_counter()
        go.set()
        s = sq.get(timeout=seconds + 30)
        done.set()
        r = rq.get(timeout=30)
        wall = time.perf_counter() - t0
        server_cpu = cpu_seconds(server.pid) - c0
        machine = machine_busy_seconds() - m0
        send.join(5)
        recv.join(5)
        if self.expect is not None and r["received"] and not r["head"].startswith(self.expect):
            raise RuntimeError(f"{server.kind}: the client got {r['head']}..., not "
                               f"{'ChannelData' if self.expect == '40' else 'Data indications'}")
        mb = r["received"] * PAYLOAD / 1e6
        ours = server_cpu + s["cpu"] + r["cpu"] + (time.process_time() - s0)
        return {"offered": rate, "sent": s["sent"], "send_errors": s["errors"],
                "sent_mbps": s["sent"] * PAYLOAD / 1e6 / s["seconds"],
                "received": r["received"], "loss": 1 - r["received"] / max(1, s["sent"]),
                "mbps": mb / r["span"] if r["received"] > 1 and r["span"] > 0 else 0.0,
                "mb": mb, "seconds": s["seconds"], "wall": wall,
                "server_cpu": server_cpu, "sender_cpu": s["cpu"], "receiver_cpu": r["cpu"],
                "server_ms_per_mb": 1e3 * server_cpu / mb if mb else float("nan"),
                "others": max(0.0, machine - ours)}


def throughput(servers: dict[str, Server], seconds: float, ladder: list[float]) -> dict:
    """Every way, servers alternating step by step; returns server -> way -> [steps]."""
    out: dict = {k: {} for k in servers}
    for way in WAYS:
        here = {k: s for k, s in servers.items() if k != "floor" or way[1] == "channel"}
        paths = {k: Path(s, *way) for k, s in here.items()}
        steps = {k: [] for k in here}
        active = set(here)
        try:
            for rate in ladder:
                for k in list(here):
                    if k not in active:
                        continue
                    tries = []
                    for attempt in range(STEP_TRIES):  # a lossy step is tried again: noise
                        tries.append(paths[k].step(servers[k], rate, seconds))
                        tries[-1]["tries"] = attempt + 1
                        if tries[-1]["loss"] <= LOSS_OK or tries[-1]["received"] == 0:
                            break
                    st = min(tries, key=lambda x: x["loss"])  # the best try
                    steps[k].append(st)
                    log(f"  {k:7s} {WAY_LABEL[way]:32s} offered {rate:5.0f} sent "
                        f"{st['sent_mbps']:6.1f} got {st['mbps']:6.1f} MB/s loss "
                        f"{100 * st['loss']:5.2f}% relay {st['server_ms_per_mb']:5.2f} ms/MB "
                        f"cpu relay {100 * st['server_cpu'] / st['wall']:3.0f}% send "
                        f"{100 * st['sender_cpu'] / st['wall']:3.0f}% recv "
                        f"{100 * st['receiver_cpu'] / st['wall']:3.0f}% rest "
                        f"{100 * st['others'] / st['wall']:3.0f}%")
                    if st["received"] == 0:
                        raise RuntimeError(f"{k}: nothing relayed ({WAY_LABEL[way]})")
                    if st["loss"] > LOSS_OK or st["sent_mbps"] < 0.8 * rate:
                        active.discard(k)  # lossy, or the sender cannot offer more
                if not active:
                    break
        finally:
            for p in paths.values():
                p.close()
        for k in here:
            out[k]["/".join(way)] = steps[k]
    return out


def cpu_at_rate(servers: dict[str, Server], rate: float, seconds: float, runs: int) -> dict:
    """Relay CPU per MB delivered at one offered rate, whatever the loss (a datagram the kernel
    dropped for want of buffer never reached the server's code: CPU per MB delivered stays a
    clean cost figure on a noisy machine), `runs` times round-robin. server -> way -> [steps]."""
    out: dict = {k: {} for k in servers}
    for way in WAYS:
        here = {k: s for k, s in servers.items() if k != "floor" or way[1] == "channel"}
        paths = {k: Path(s, *way) for k, s in here.items()}
        try:
            for run in range(runs):
                for k in here:
                    st = paths[k].step(servers[k], rate, seconds)
                    out[k].setdefault("/".join(way), []).append(st)
                    log(f"  {k:7s} {WAY_LABEL[way]:32s} at {rate:g} MB/s run {run + 1}: got "
                        f"{st['mbps']:6.1f} MB/s loss {100 * st['loss']:5.2f}% relay "
                        f"{st['server_ms_per_mb']:5.2f} ms/MB, rest "
                        f"{100 * st['others'] / st['wall']:3.0f}%")
        finally:
            for p in paths.values():
                p.close()
    return out


def best(steps: list[dict]) -> dict | None:
    ok = [s for s in steps if s["loss"] <= LOSS_OK]
    return max(ok, key=lambda s: s["mbps"]) if ok else None


def at_rate(steps: list[dict], rate: float) -> dict | None:
    return next((s for s in steps if s["offered"] == rate and s["loss"] <= LOSS_OK), None)


# --- memory and allocations/s --------------------------------------------------------------------

def memory(server: Server, n: int) -> dict:
    warm = TurnClient(server.addr, "bench-warm", next_client_port())
    warm.allocate()
    warm.free()
    warm.close()
    time.sleep(1.0)  # a settling pause before reading RSS (a measurement, not synchronisation)
    idle = rss_kib(server.pid)
    peer = udp_socket()
    clients = []
    t0 = time.perf_counter()
    for i in range(n):
        c = TurnClient(server.addr, f"bench-mem-{i}", next_client_port())
        c.allocate()
        c.permit(peer.getsockname())
        c.bind_channel(peer.getsockname())
        clients.append(c)
    took = time.perf_counter() - t0
    time.sleep(1.0)
    loaded = rss_kib(server.pid)
    for c in clients:
        c.free()
        c.close()
    peer.close()
    return {"n": n, "idle_kib": idle, "loaded_kib": loaded,
            "kib_each": (loaded - idle) / n, "setup_s": took}


def next_client_port() -> int:
    """Client ports for memory and allocations: each used once per run. coturn answers an
    Allocate from a 5-tuple whose allocation was freed (Refresh 0) a moment ago with 437
    ("wrong transaction ID") for a while; the kernel's ephemeral ports come back that soon."""
    global _client_port
    _client_port += 1
    if _client_port >= CLIENT_PORTS[1]:
        raise RuntimeError("client ports used up: fewer --allocations/--cycles")
    return _client_port


def _cycles(addr, n: int, tag: str, first_port: int, out) -> None:
    c0 = time.process_time()
    t0 = time.perf_counter()
    fails = 0
    errors: list[str] = []
    done = []
    for i in range(n):
        c = TurnClient(addr, f"bench-{tag}-{i}", first_port + i)
        try:
            c.allocate()
            c.free()
        except TurnError as e:
            fails += 1
            errors.append(str(e)[:200])
        done.append(c)
    for c in done:
        c.close()
    out.put({"n": n, "fails": fails, "errors": errors[:5], "seconds": time.perf_counter() - t0,
             "cpu": time.process_time() - c0})


def allocations(server: Server, cycles: int) -> dict:
    ctx = mp.get_context("fork")
    res = {}
    for label, clients in (("sequential", 1), ("concurrent", CONCURRENT_CLIENTS)):
        q = ctx.Queue()
        each = cycles // clients
        base = next_client_port()
        for _ in range(each * clients - 1):  # worker j uses base + j * each ... + each - 1
            next_client_port()
        procs = [ctx.Process(target=_cycles, args=(server.addr, each, f"{label}{j}",
                                                   base + j * each, q))
                 for j in range(clients)]
        c0, m0, t0 = cpu_seconds(server.pid), machine_busy_seconds(), time.perf_counter()
        for p in procs:
            p.start()
        got = [q.get(timeout=300) for _ in procs]
        wall = time.perf_counter() - t0
        server_cpu = cpu_seconds(server.pid) - c0
        machine = machine_busy_seconds() - m0
        for p in procs:
            p.join(5)
        n = sum(g["n"] for g in got)
        fails = sum(g["fails"] for g in got)
        client_cpu = sum(g["cpu"] for g in got)
        res[label] = {"clients": clients, "cycles": n, "fails": fails, "wall": wall,
                      "per_s": (n - fails) / wall,
                      "errors": [e for g in got for e in g["errors"]][:5],
                      "server_ms_each": 1e3 * server_cpu / n,
                      "server_cpu": server_cpu, "client_cpu": client_cpu,
                      "others": max(0.0, machine - server_cpu - client_cpu)}
        log(f"  {server.kind:7s} {label:10s} {res[label]['per_s']:7.0f} allocate+free/s "
            f"({fails} failed) relay {res[label]['server_ms_each']:.2f} ms each"
            + (f"; failures: {res[label]['errors']}" if fails else ""))
    return res


# --- tables --------------------------------------------------------------------------------------

def pct(cpu: float, wall: float) -> str:
    return f"{100 * cpu / wall:.0f}%" if wall else "-"


def report(args, info, tp, mem, allocs, cpu=None) -> str:
    out = []
    out.append(f"Machine: {info['cores']} cores, {info['cpu']}, kernel {info['kernel']}, "
               f"{info['date']}; load average at start {info['loadavg'][0]:.2f}, at end "
               f"{os.getloadavg()[0]:.2f}")
    out.append(f"Versions: {info['versions_str']}")
    kinds = args.servers
    goals = []
    if cpu:
        out.append(f"\n#### Relay CPU per MB relayed, {args.cpu_rate:g} MB/s offered through one "
                   f"allocation, {PAYLOAD}-byte payloads, median (min-max) of {args.cpu_runs} x "
                   f"{args.cpu_seconds:g} s\n")
        rows = []
        for way in ["/".join(w) for w in WAYS]:
            label = WAY_LABEL[tuple(way.split("/"))]
            here = [k for k in kinds if way in cpu.get(k, {})]
            meds = {k: statistics.median(x["server_ms_per_mb"] for x in cpu[k][way]) for k in here}
            for k in here:
                xs = cpu[k][way]
                ms = [x["server_ms_per_mb"] for x in xs]
                def m(f, xs=xs) -> float:
                    return statistics.median(f(x) for x in xs)

                client = m(lambda x: (x["sender_cpu"] + x["receiver_cpu"]) / x["wall"])
                rows.append([label, NAMES[k], f"{meds[k]:.2f} ({min(ms):.2f}-{max(ms):.2f})",
                             f"{m(lambda x: x['mbps']):.1f}", f"{m(lambda x: x['loss']):.2%}",
                             f"{m(lambda x: x['server_cpu'] / x['wall']):.0%}", f"{client:.0%}",
                             f"{m(lambda x: x['others'] / x['wall']):.0%}",
                             f"{meds[k] / meds['coturn']:.2f}x" if "coturn" in meds else "-"])
            if "p2prtc" in meds and "coturn" in meds:
                r = meds["p2prtc"] / meds["coturn"]
                line = (f"- {label}: relay CPU per MB {meds['p2prtc']:.2f} ms vs coturn "
                        f"{meds['coturn']:.2f} ms = {r:.2f}x (goal <= 2x): "
                        f"{'MET' if r <= 2 else 'NOT MET'}")
                if "floor" in meds:
                    line += (f"; the no-TURN uvloop floor alone is {meds['floor']:.2f} ms = "
                             f"{meds['floor'] / meds['coturn']:.2f}x coturn, our TURN work on top "
                             f"{meds['p2prtc'] - meds['floor']:.2f} ms")
                goals.append(line)
        out.append(markdown_table(["way", "server", "relay CPU ms per MB", "delivered MB/s",
                                   "loss", "relay CPU", "client CPU (send + receive)",
                                   "rest of machine", "CPU per MB vs coturn"], rows))
        out.append("\nCPU per MB *delivered* (1 MB = 1e6 bytes of payload): datagrams the "
                   "kernel drops for want of socket buffer (a server descheduled by other "
                   "load) never reach the server's code, so this stays a fair cost figure when "
                   "the loss is not small.")
    if tp:
        out.append(f"\n#### Throughput through one allocation, {PAYLOAD}-byte payloads, "
                   f"{args.step_seconds:g} s per step, best sustained rate (<= 1% loss)\n")
        header = ["way", "server", "best MB/s", "loss", "relay CPU ms/MB", "relay CPU",
                  "sender CPU", "receiver CPU", "rest of machine", "ms/MB at common rate",
                  "MB/s vs coturn", "CPU/MB vs coturn (common rate)", "vs browser direct"]
        rows = []
        for way in ["/".join(w) for w in WAYS]:
            label = WAY_LABEL[tuple(way.split("/"))]
            here = [k for k in kinds if way in tp.get(k, {})]
            main = [k for k in here if k != "floor"]
            bests = {k: best(tp[k][way]) for k in here}
            both = sorted({s["offered"] for k in main for s in tp[k][way]
                           if all(at_rate(tp[j][way], s["offered"]) for j in main)})
            common = both[-1] if both else None  # the highest rate p2prtc and coturn sustained
            ref = bests.get("coturn")
            refc = at_rate(tp["coturn"][way], common) if common and "coturn" in here else None
            for k in here:
                b = bests[k]
                if b is None:
                    rows.append([label, NAMES[k], "none <= 1% loss"] + [""] * 10)
                    continue
                cm = at_rate(tp[k][way], common) if common else None
                rows.append([
                    label, NAMES[k], f"{b['mbps']:.1f}",
                    f"{100 * b['loss']:.2f}%", f"{b['server_ms_per_mb']:.2f}",
                    pct(b["server_cpu"], b["wall"]), pct(b["sender_cpu"], b["wall"]),
                    pct(b["receiver_cpu"], b["wall"]), pct(b["others"], b["wall"]),
                    f"{cm['server_ms_per_mb']:.2f} @ {common:g}" if cm else "-",
                    f"{b['mbps'] / ref['mbps']:.2f}x" if ref else "-",
                    f"{cm['server_ms_per_mb'] / refc['server_ms_per_mb']:.2f}x"
                    if cm and refc else "-",
                    f"{b['mbps'] / BROWSER_DIRECT:.1f}x"])
            if "p2prtc" in here and "coturn" in here:
                mb = bests["p2prtc"]["mbps"] if bests["p2prtc"] else 0.0
                cmb = f"{bests['coturn']['mbps']:.1f}" if bests["coturn"] else "none"
                line = (f"- {label}: best sustained {mb:.1f} MB/s (coturn {cmb} in the same run) "
                        f"vs browser direct {BROWSER_DIRECT:g} MB/s: "
                        f"{'MET' if mb > BROWSER_DIRECT else 'NOT MET'}")
                ratios = [at_rate(tp["p2prtc"][way], r)["server_ms_per_mb"]
                          / at_rate(tp["coturn"][way], r)["server_ms_per_mb"] for r in both]
                if ratios:
                    line += (f"; CPU per MB {ratios[-1]:.2f}x coturn's at {common:g} MB/s, the "
                             f"highest rate both sustained (median "
                             f"{statistics.median(ratios):.2f}x "
                             f"over the {len(ratios)} such rates)")
                goals.append(line)
        out.append(markdown_table(header, rows))
        out.append("\nrelay CPU ms/MB = the server's CPU time during the step / MB of payload "
                   "delivered (1 MB = 1e6 bytes), at its best step and at the highest offered "
                   "rate p2prtc and coturn both sustained (common rate: the same packet rate, "
                   "the fair comparison: CPU per MB falls as the rate rises and the event loops "
                   "find several datagrams per wake-up). CPU % = of one core, over the step's "
                   "wall time. The sender and receiver are this bench's client processes; rest "
                   "of machine = everything else (other sessions).")

    if goals:
        out.append("\n#### Goals (issue 11: within 2x of coturn's CPU per MB, above "
                   "browser<->browser direct)\n")
        out += goals
    if mem:
        out.append("\n#### Memory per allocation (fresh server, RSS)\n")
        rows = []
        for k in mem:
            m = mem[k]
            ref = mem.get("coturn")
            rows.append([NAMES[k], f"{m['idle_kib'] / 1024:.1f}", f"{m['loaded_kib'] / 1024:.1f}",
                         m["n"], f"{m['kib_each']:.1f}",
                         f"{m['kib_each'] / ref['kib_each']:.2f}x" if ref and ref["kib_each"] > 0
                         else "-"])
        out.append(markdown_table(["server", "idle MiB (1 allocation made and freed)",
                                   "loaded MiB", "allocations held", "KiB per allocation",
                                   "vs coturn"], rows))
        out.append("\nEach allocation holds one permission and one channel.")
    if allocs:
        out.append("\n#### Allocations/s: allocate (401 + Allocate) and free (Refresh 0), "
                   "new 5-tuple each\n")
        rows = []
        for label in ("sequential", "concurrent"):
            for k in allocs:
                a = allocs[k][label]
                ref = allocs.get("coturn", {}).get(label)
                rows.append([label + (f" ({a['clients']} clients)" if a["clients"] > 1 else ""),
                             NAMES[k], f"{a['per_s']:.0f}", f"{a['cycles'] - a['fails']}/"
                             f"{a['cycles']}", f"{a['server_ms_each']:.2f}",
                             pct(a["server_cpu"], a["wall"]), pct(a["client_cpu"], a["wall"]),
                             pct(a["others"], a["wall"]),
                             f"{a['per_s'] / ref['per_s']:.2f}x" if ref else "-",
                             f"{a['server_ms_each'] / ref['server_ms_each']:.2f}x"
                             if ref and ref["server_ms_each"] else "-"])
        out.append(markdown_table(["clients", "server", "cycles/s", "ok", "relay CPU ms each",
                                   "relay CPU", "client CPU", "rest of machine",
                                   "rate vs coturn", "CPU each vs coturn"], rows))
    return "\n".join(out)


def versions() -> str:
    v = [f"python {sys.version.split()[0]}"]
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "coturn"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        if out:
            v.append(f"coturn {out}")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import uvloop
        v.append(f"uvloop {uvloop.__version__}")
    except ImportError:
        pass
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src/p2prtc/relay"],
                           capture_output=True, text=True,
                           cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    v.append(f"p2prtc {rev}{' (relay/ modified)' if dirty else ''}")
    return ", ".join(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short steps, 50 allocations, 100 cycles")
    ap.add_argument("--servers", default="p2prtc,coturn,floor",
                    help="floor = a uvloop UDP forwarder without TURN (throughput only)")
    ap.add_argument("--phases", default="throughput,memory,allocations")
    ap.add_argument("--step-seconds", type=float, default=None)
    ap.add_argument("--allocations", type=int, default=None)
    ap.add_argument("--cycles", type=int, default=None)
    ap.add_argument("--cpu-rate", type=float, default=30.0,
                    help="MB/s offered for the CPU-per-MB comparison (default 30: twice a "
                         "browser's direct data channel)")
    ap.add_argument("--cpu-seconds", type=float, default=None)
    ap.add_argument("--cpu-runs", type=int, default=None)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--floor-server", metavar="CLIENT_PORT,RELAY_PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.floor_server:
        floor_server(*map(int, args.floor_server.split(",")))
        return
    args.servers = args.servers.split(",")
    phases = args.phases.split(",")
    args.step_seconds = args.step_seconds or (0.6 if args.quick else 1.5)
    args.allocations = args.allocations or (50 if args.quick else 200)
    args.cycles = args.cycles or (100 if args.quick else 400)
    args.cpu_seconds = args.cpu_seconds or (1.0 if args.quick else 2.0)
    args.cpu_runs = args.cpu_runs or (1 if args.quick else 3)
    check_network()
    info = machine_info()
    info["versions_str"] = versions()
    tp = mem = allocs = cpu = None
    t_start = time.monotonic()
    if "throughput" in phases or "cpu" in phases:  # cpu: the CPU-per-MB table only
        log("throughput")
        servers = {k: Server(k).start() for k in args.servers}
        try:
            cpu = cpu_at_rate(servers, args.cpu_rate, args.cpu_seconds, args.cpu_runs)
            if "throughput" in phases:
                tp = throughput(servers, args.step_seconds, LADDER)
        finally:
            for s in servers.values():
                s.stop()
    if "memory" in phases or "allocations" in phases:
        mem, allocs = {}, {}
        for k in [k for k in args.servers if k != "floor"]:
            log(f"memory and allocations: {k}")
            s = Server(k).start()
            try:
                if "memory" in phases:
                    mem[k] = memory(s, args.allocations)
                    log(f"  {k:7s} {mem[k]['kib_each']:.1f} KiB per allocation "
                        f"({mem[k]['idle_kib']} -> {mem[k]['loaded_kib']} KiB)")
                if "allocations" in phases:
                    allocs[k] = allocations(s, args.cycles)
            finally:
                s.stop()
        mem = mem or None
        allocs = allocs or None
    log(f"took {time.monotonic() - t_start:.0f} s")
    print(report(args, info, tp, mem, allocs, cpu))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "cpu_at_rate": cpu, "throughput": tp, "memory": mem,
                       "allocations": allocs}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
