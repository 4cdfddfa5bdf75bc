"""A lab peer in headless Chromium: the js-libp2p harness page of the interop tests, shipped in
the package (`browser_page`: lab/browser/, built by scripts/build-lab-browser) and driven from
inside a peer's namespace, with the same command line and JSON events as `p2prtc.lab.agent`.

    python -m p2prtc.lab.browser_agent listen [RELAY_WS_MULTIADDR] --stun URL
    python -m p2prtc.lab.browser_agent dial [PEER_MULTIADDR] --stun URL [--pings N] [--bytes N]

Everything runs inside the namespace `ip netns exec` put us in: the harness's static server (on
127.0.0.1), Playwright's driver and Chromium. Needs Playwright and Chromium
(`browser_page.missing_prerequisite()` names the command that installs what is missing).

The candidate pair comes from the page's own RTCPeerConnection stats: an init script records every
RTCPeerConnection the page creates (js-libp2p keeps them private).

TURN (`--turn auto`, the default): as the web app does, the page asks the relay it connected to for
TURN credentials over /p2prtc/turn-credentials/1.0.0 with the app's own client (web/src/turn.js,
loaded into the page as is), and the init script adds those TURN servers to every
RTCPeerConnection created afterwards. A pair with a relay candidate (or a remote candidate on the
TURN server's address) is path "turn".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from typing import Any, Protocol

from .browser_page import BUNDLE_DIR, BrowserPeer, BrowserPeerError, BrowserSession
from .procs import stop_on_signals

log = logging.getLogger("p2prtc.lab.browser_agent")

DIAL_TIMEOUT = 30.0
STEP_TIMEOUT = 60.0
# As in agent.py: Chromium may start on the TURN pair and move to a direct one within ~1 s; the
# path reported is where the connection settled (waiting at most this long after it opened).
PATH_SETTLE = 2.0
PATH_POLL = 0.1

# A copy of web/src/turn.js in the packaged page's directory (scripts/build-lab-browser).
TURN_JS = BUNDLE_DIR / "turn.js"

RECORD_PEER_CONNECTIONS = """
(() => {
  const Native = window.RTCPeerConnection
  if (!Native || window.__labPCs) return
  window.__labPCs = []
  window.__labTurnServers = []
  window.RTCPeerConnection = class extends Native {
    constructor (config = {}, ...rest) {
      const iceServers = [...(config.iceServers ?? []), ...window.__labTurnServers]
      super({ ...config, iceServers }, ...rest)
      window.__labPCs.push(this)
    }
  }
})()
"""

# After web/src/turn.js (an ES module without imports) in the same module script.
EXPOSE_TURN_CLIENT = "\nwindow.__p2prtcTurn = { fetchTurnCredentials, iceServersFrom }\n"

FETCH_TURN = """
async (relay) => {
  const conn = window.harness.node.getConnections().find(c => c.remotePeer.toString() === relay &&
    c.limits == null && c.status === 'open')
  if (!conn) return { ok: false, error: 'no connection to the relay' }
  let error = null
  const creds = await window.__p2prtcTurn.fetchTurnCredentials(conn, { onError: (e) => { error = String(e) } })
  if (creds == null) return { ok: false, error: error ?? 'the relay gave no TURN credentials' }
  window.__labTurnServers = window.__p2prtcTurn.iceServersFrom(creds)
  return { ok: true, urls: creds.urls }
}
"""

SELECTED_PAIRS = """
async () => {
  const out = []
  for (const pc of window.__labPCs || []) {
    if (pc.connectionState !== 'connected') continue
    const stats = await pc.getStats()
    let pair = null
    stats.forEach(s => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId)
    })
    if (!pair) stats.forEach(s => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s })
    if (!pair) continue
    const l = stats.get(pair.localCandidateId)
    const r = stats.get(pair.remoteCandidateId)
    out.push({
      local: l.candidateType, remote: r.candidateType,
      local_addr: `${l.address ?? l.ip}:${l.port}`, remote_addr: `${r.address ?? r.ip}:${r.port}`
    })
  }
  return out
}
"""

# /ipfs/ping/1.0.0 over the peer's limited (relayed) connection specifically: the harness's ping
# command lets js pick the connection, which is the direct one once it exists.
RELAYED_PING = """
async ([peer, count]) => {
  const node = window.harness.node
  const conn = node.getConnections().find(c => c.remotePeer.toString() === peer &&
    c.limits != null && c.status === 'open')
  if (!conn) return { ok: false, error: 'no relayed connection left to ping over' }
  const stream = await conn.newStream('/ipfs/ping/1.0.0', { runOnLimitedConnection: true })
  const rtts = []
  try {
    for (let i = 0; i < count; i++) {
      const payload = crypto.getRandomValues(new Uint8Array(32))
      const echoed = new Promise((resolve, reject) => {
        let have = 0
        const timer = setTimeout(() => reject(new Error('no ping reply within 10 s')), 10000)
        const onMessage = (evt) => {
          have += (evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()).byteLength
          if (have >= 32) {
            clearTimeout(timer)
            stream.removeEventListener('message', onMessage)
            resolve()
          }
        }
        stream.addEventListener('message', onMessage)
      })
      const t0 = performance.now()
      if (!stream.send(payload)) await stream.onDrain()
      await echoed
      rtts.push(performance.now() - t0)
    }
    await stream.close()
  } catch (err) {
    stream.abort(err)
    return { ok: false, error: String(err) }
  }
  return { ok: true, rtts }
}
"""


# What the page's scripts and the harness commands return: decoded JSON, read by key.
Json = dict[str, Any]


class Emit(Protocol):
    def __call__(self, event: str, **fields: object) -> None: ...


def emitter() -> Emit:
    t0 = time.monotonic()

    def emit(event: str, **fields: object) -> None:
        sys.stdout.write(json.dumps({"event": event, "t": round(time.monotonic() - t0, 3),
                                     **fields}) + "\n")
        sys.stdout.flush()

    return emit


def path_of(pair: Json | None, turn_hosts: set[str]) -> str | None:
    """"turn" when the pair runs through a TURN relayed candidate (ours or the peer's, also when
    the peer's arrived as peer-reflexive: a prflx remote on the TURN server's address), else
    "direct"."""
    if not pair:
        return None
    if "relay" in (pair.get("local"), pair.get("remote")):
        return "turn"
    remote_ip = str(pair.get("remote_addr", "")).rpartition(":")[0]
    return "turn" if pair.get("remote") == "prflx" and remote_ip in turn_hosts else "direct"


def turn_relay_of(pair: Json) -> str:
    addr: str = pair["local_addr"] if pair.get("local") == "relay" else pair["remote_addr"]
    return addr.rpartition(":")[0]


def _is_direct(conn: Json) -> bool:
    """js names a /webrtc connection by the address it was dialed at (<relay>/p2p-circuit/webrtc/
    p2p/<peer>); the relayed one lacks /webrtc and is limited."""
    return "/webrtc" in conn.get("remoteAddr", "") and not conn.get("limited")


class BrowserLabPeer:
    def __init__(self, stun: list[str], turn: str = "auto") -> None:
        self.emit = emitter()
        self.stun = stun
        self.turn = turn
        self.turn_hosts: set[str] = set()
        self.session: BrowserSession | None = None
        self._page: BrowserPeer | None = None

    @property
    def page(self) -> BrowserPeer:
        if self._page is None:
            raise BrowserPeerError("the browser peer has not started")
        return self._page

    async def start(self) -> None:
        self.session = session = BrowserSession()
        await session.start()
        browser = session.browser
        native_new_context = browser.new_context

        async def new_context(**kwargs: Any) -> Any:  # (Playwright's BrowserContext)
            ctx = await native_new_context(**kwargs)
            await ctx.add_init_script(script=RECORD_PEER_CONNECTIONS)
            return ctx

        browser.new_context = new_context
        self._page = await session.new_peer("lab")
        await self.page.start(ice_servers=[{"urls": u} for u in self.stun])
        if self.turn == "auto":
            await self.page.page.add_script_tag(content=TURN_JS.read_text() + EXPOSE_TURN_CLIENT,
                                                type="module")
            await self.page.page.wait_for_function("window.__p2prtcTurn != null", timeout=10_000)
        self.emit("ready", peer=self.page.peer_id)

    async def fetch_turn(self, relay_addr: str) -> None:
        """TURN credentials from the relay (connected to already) for the next connections."""
        if self.turn != "auto":
            return
        relay = relay_addr.rsplit("/p2p/", 1)[1]
        r = await self.page.page.evaluate(FETCH_TURN, relay)
        if r.get("ok"):
            self.turn_hosts = {u.split(":")[1].strip("[]") for u in r["urls"]}
            self.emit("turn", urls=r["urls"])
        else:
            self.emit("turn", urls=[], error=r.get("error"))

    async def selected_pair(self) -> Json | None:
        pairs: list[Json] = await self.page.page.evaluate(SELECTED_PAIRS)
        return pairs[-1] if pairs else None

    async def listen(self, relay: str) -> None:
        await self.page.dial(relay)
        await self.fetch_turn(relay)
        addr = await self.page.wait_for_addr("/p2p-circuit/webrtc", 30)
        self.emit("listening", addrs=[addr])

    async def report_connections(self) -> None:
        while True:
            try:
                ev = await self.page.wait_event("connection", timeout=3600)
            except BrowserPeerError:
                continue
            direct = _is_direct(ev)
            pair = await self.selected_pair() if direct else None
            remote = ev.get("remoteAddr", "")
            kind = "webrtc" if direct else "relay" if "/p2p-circuit" in remote else "ws"
            self.emit("connected", peer=ev.get("peer"), transport=kind,
                      limited=bool(ev.get("limited")), direction=ev.get("direction"),
                      remote_addr=ev.get("remoteAddr"), candidate_pair=pair,
                      path=path_of(pair, self.turn_hosts))

    async def dial(self, target: str, pings: int, nbytes: int) -> Json:
        peer = target.rsplit("/p2p/", 1)[1]
        summary: Json = {"direct": False}
        if self.turn == "auto" and "/p2p-circuit" in target:
            relay = target[:target.index("/p2p-circuit")]
            try:  # connect to the relay first: its TURN credentials go into the WebRTC dial
                await self.page.dial(relay, timeout=DIAL_TIMEOUT)
                await self.fetch_turn(relay)
            except BrowserPeerError as e:
                self.emit("error", reason=f"connecting to the relay for TURN: {e}")
        self.emit("dialing", addr=target)
        t0 = time.perf_counter()
        try:
            reply = await self.page.dial(target, timeout=DIAL_TIMEOUT)
            ms = (time.perf_counter() - t0) * 1000
            if _is_direct(reply):
                pair = await self.selected_pair()
                path = path_of(pair, self.turn_hosts)
                summary.update(direct=True, ms=round(reply.get("ms", ms), 1), path=path,
                               turn_relay=turn_relay_of(pair) if pair and path == "turn" else None,
                               candidate_pair=pair)
                self.emit("direct", **summary, remote_addr=reply.get("remoteAddr"))
            else:
                summary.update(ms=round(ms, 1), reason=f"dial gave {reply.get('remoteAddr')}")
                self.emit("no-direct", ms=summary["ms"], reason=summary["reason"])
        except BrowserPeerError as e:
            ms = (time.perf_counter() - t0) * 1000
            reason = str(e).split("; ", 1)[0]  # without the console tail
            summary.update(ms=round(ms, 1), reason=reason)
            self.emit("no-direct", ms=summary["ms"], reason=reason)

        rtt: dict[str, float] = {}
        try:
            r = await asyncio.wait_for(self.page.page.evaluate(RELAYED_PING, [peer, pings]),
                                       STEP_TIMEOUT)
            if r.get("ok"):
                ms_list = [round(x, 2) for x in r["rtts"]]
                rtt["relay"] = round(statistics.median(ms_list), 2)
                self.emit("rtt", path="relay", ms=ms_list, median=rtt["relay"])
            else:
                self.emit("error", reason=f"ping over the relayed connection: {r.get('error')}")
        except Exception as e:  # noqa: BLE001 - a measurement, not the verdict
            self.emit("error", reason=f"ping over the relayed connection failed: {e}")
        if summary["direct"]:
            try:
                ms_list = []
                for _ in range(pings):
                    r = await self.page.ping(peer=peer, timeout=STEP_TIMEOUT)
                    ms_list.append(round(r["rtt_ms"], 2))
                rtt["direct"] = round(statistics.median(ms_list), 2)
                self.emit("rtt", path="direct", ms=ms_list, median=rtt["direct"])
            except BrowserPeerError as e:
                self.emit("error", reason=f"ping failed: {str(e).split('; ', 1)[0]}")
            if nbytes > 0:
                try:
                    r = await self.page.perf(peer=peer, upload_bytes=nbytes, timeout=STEP_TIMEOUT)
                    secs = r["upload_ms"] / 1000
                    summary["throughput"] = {"bytes": nbytes, "seconds": round(secs, 3),
                                             "MBps": round(nbytes / secs / 1e6, 2)}
                    self.emit("throughput", **summary["throughput"])
                except BrowserPeerError as e:
                    self.emit("error", reason=f"throughput test failed: {str(e).split('; ', 1)[0]}")
        summary["rtt_ms"] = rtt
        summary["chat"] = None  # the harness page has no chat protocol
        if summary["direct"]:
            await self._settled_path(summary, t0 + summary["ms"] / 1000)
        return summary

    async def _settled_path(self, summary: Json, opened: float) -> None:
        summary["path_at_connect"] = summary.get("path")
        summary["candidate_pair_at_connect"] = summary.get("candidate_pair")
        while True:
            pair = await self.selected_pair()
            path = path_of(pair, self.turn_hosts)
            if path == "direct" or time.perf_counter() >= opened + PATH_SETTLE:
                break
            await asyncio.sleep(PATH_POLL)
        if pair is None:
            return
        summary.update(candidate_pair=pair, path=path,
                       turn_relay=turn_relay_of(pair) if path == "turn" else None)
        if path != summary["path_at_connect"]:
            self.emit("path-changed", path=path, turn_relay=summary["turn_relay"],
                      candidate_pair=pair, was=summary["path_at_connect"])

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


async def main_async(args: argparse.Namespace) -> int:
    peer = BrowserLabPeer(args.stun or [], args.turn)
    stop = asyncio.Event()
    stop_on_signals(args.mode, stop)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await peer.start()
        target = args.target or (await reader.readline()).decode().strip()
        if args.mode == "listen":
            await peer.listen(target)
            reporter = asyncio.ensure_future(peer.report_connections())

            async def until_eof() -> None:
                while await reader.readline():
                    pass
                stop.set()

            eof = asyncio.ensure_future(until_eof())
            await stop.wait()
            reporter.cancel()
            eof.cancel()
            return 0
        summary = await peer.dial(target, args.pings, args.bytes)
        peer.emit("done", **summary)
        return 0
    except Exception as e:  # noqa: BLE001 - reported as the fatal error event
        peer.emit("error", reason=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                  fatal=True)
        return 1
    finally:
        await peer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2prtc.lab.browser_agent")
    p.add_argument("mode", choices=["listen", "dial"])
    p.add_argument("target", nargs="?")
    p.add_argument("--stun", action="append", help="ICE server URL for the page")
    p.add_argument("--pings", type=int, default=5)
    p.add_argument("--bytes", type=int, default=10 * 1000 * 1000)
    p.add_argument("--chat", default=None, help="ignored: the harness page has no chat")
    p.add_argument("--turn", choices=["auto", "none"], default="auto",
                   help="auto: TURN credentials from the relay, as the web app; none: no TURN")
    p.add_argument("-v", "--verbose", action="count", default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(main_async(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        return 143  # stopped by a signal, after closing the browser


if __name__ == "__main__":
    sys.exit(main())
