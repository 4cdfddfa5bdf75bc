"""A rust-libp2p peer or relay (tests/interop/rust) driven over the JSON-lines control protocol.

    binary = rust_binary()                     # builds with tests/interop/rust/build.sh
    async with RustPeer.peer(binary, listen=["/ip4/127.0.0.1/tcp/0"]) as a: ...
    relay = RustPeer.relay(binary, websocket_port=0, no_limits=True)

Peer commands (see tests/interop/rust/src/node.rs): dial {addr}, ping {peer}, identify {peer},
echo {peer|addr, bytes}, listen {addr}, listen_relay {addr}, connections, addrs, close {peer}, stop.
Events: ready, connection, disconnection, identify, reservation, ping, relay, relay-client, ...
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from .control import ControlledProcess

RUST_DIR = Path(__file__).resolve().parent / "rust"
BUILD_SCRIPT = RUST_DIR / "build.sh"
BINARY_NAME = "p2prtc-interop-rust"
# The first build compiles ~400 crates: minutes on 2 cores.
BUILD_TIMEOUT_S = 1800

_build_lock = threading.Lock()
_built: str | None = None


class RustUnavailable(RuntimeError):
    """The rust interop peer cannot be built or found."""


def _prebuilt_candidates() -> list[Path]:
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/p2prtc/cargo-target"))
    return [target / profile / BINARY_NAME for profile in ("debug", "release")]


def rust_binary() -> str:
    """Path of the rust interop binary, building it (once per process) with build.sh.

    `P2PRTC_RUST_BINARY` names a prebuilt binary and skips the build. Without cargo, an existing
    build in the cache directory is used; otherwise RustUnavailable says what is missing.
    """
    global _built
    explicit = os.environ.get("P2PRTC_RUST_BINARY")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RustUnavailable(f"P2PRTC_RUST_BINARY={explicit} is not an executable file")
        return explicit
    with _build_lock:
        if _built:
            return _built
        if shutil.which("cargo") is None:
            for candidate in _prebuilt_candidates():
                if os.access(candidate, os.X_OK):
                    _built = str(candidate)
                    return _built
            raise RustUnavailable(
                "cargo is not installed, so the rust-libp2p interop peer cannot be built: install "
                f"Rust >= 1.88 (rustup) or set P2PRTC_RUST_BINARY; build script: {BUILD_SCRIPT}")
        try:
            proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                                  timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RustUnavailable(f"{BUILD_SCRIPT} did not finish within {BUILD_TIMEOUT_S}s") from None
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.splitlines()[-40:])
            raise RustUnavailable(f"{BUILD_SCRIPT} failed (exit {proc.returncode}):\n{tail}")
        path = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if not os.access(path, os.X_OK):
            raise RustUnavailable(f"{BUILD_SCRIPT} printed {path!r}, which is not an executable")
        _built = path
        return _built


class RustPeer(ControlledProcess):
    """One `p2prtc-interop-rust peer|relay` process."""

    def __init__(self, binary: str, mode: str, args: Iterable[str] = (), *, name: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        full_env = {"RUST_LOG": os.environ.get("RUST_LOG", "info")}
        full_env.update(env or {})
        super().__init__([binary, mode, *args], env=full_env, name=name or f"rust-{mode}")

    @classmethod
    def peer(cls, binary: str, *, listen: Iterable[str] = ("/ip4/127.0.0.1/tcp/0",),
             seed: int | None = None, dcutr: bool = False, extra: Iterable[str] = (),
             name: str | None = None, env: dict[str, str] | None = None) -> RustPeer:
        args: list[str] = []
        for addr in listen:
            args += ["--listen", addr]
        if seed is not None:
            args += ["--seed", str(seed)]
        if dcutr:
            args.append("--dcutr")
        return cls(binary, "peer", [*args, *extra], name=name or "rust-peer", env=env)

    @classmethod
    def relay(cls, binary: str, *, port: int = 0, websocket_port: int | None = None,
              webrtc_port: int | None = None, seed: int | None = None, no_limits: bool = False,
              listen_ip: str = "127.0.0.1", quic: bool = True, extra: Iterable[str] = (),
              name: str | None = None, env: dict[str, str] | None = None) -> RustPeer:
        args = ["--port", str(port), "--listen-ip", listen_ip]
        if websocket_port is not None:
            args += ["--websocket-port", str(websocket_port)]
        if webrtc_port is not None:
            args += ["--webrtc-port", str(webrtc_port)]
        if seed is not None:
            args += ["--secret-key-seed", str(seed)]
        if no_limits:
            args.append("--no-limits")
        if not quic:
            args.append("--no-quic")
        return cls(binary, "relay", [*args, *extra], name=name or "rust-relay", env=env)

    # --- what `ready` said ------------------------------------------------------------------
    @property
    def peer_id(self) -> str:
        return self.ready["peerId"]

    @property
    def addrs(self) -> list[str]:
        return list(self.ready.get("addrs", []))

    def addr(self, transport: str = "tcp") -> str:
        """First ready address of a transport: tcp, ws, quic-v1, webrtc-direct, p2p-circuit."""
        for a in self.addrs:
            parts = a.split("/")
            if transport == "tcp":
                if "tcp" in parts and not {"ws", "wss", "p2p-circuit"} & set(parts):
                    return a
            elif transport in parts:
                return a
        raise LookupError(f"{self.name} has no {transport} address among {self.addrs}")

    # --- commands ---------------------------------------------------------------------------
    async def dial(self, addr: str, **kw: Any) -> dict[str, Any]:
        return await self.call("dial", addr=addr, **kw)

    async def ping(self, peer: str, **kw: Any) -> dict[str, Any]:
        return await self.call("ping", peer=peer, **kw)

    async def identify(self, peer: str, **kw: Any) -> dict[str, Any]:
        return await self.call("identify", peer=peer, **kw)

    async def echo(self, target: str, nbytes: int, **kw: Any) -> dict[str, Any]:
        """`target` is a peer id (connected) or a multiaddr ending in /p2p/<id> (dialed if needed)."""
        return await self.call("echo", peer=target, bytes=nbytes, **kw)

    async def listen_relay(self, relay_addr: str, **kw: Any) -> list[str]:
        return (await self.call("listen_relay", addr=relay_addr, **kw))["addrs"]

    async def connections(self) -> list[dict[str, Any]]:
        return (await self.call("connections"))["connections"]
