"""Fixtures for rust-libp2p interop peers; to be merged into tests/interop/conftest.py.

Until then a test module imports them: `from .conftest_rust import rust_built, rust_peer_factory`.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from .rustpeer import RustPeer, RustUnavailable, rust_binary


@pytest.fixture(scope="session")
def rust_built() -> str:
    """Path of the built rust interop binary (built once per session; minutes when cold)."""
    try:
        return rust_binary()
    except RustUnavailable as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
async def rust_peer_factory(rust_built: str) -> AsyncIterator[Callable[..., Awaitable[RustPeer]]]:
    """`await rust_peer_factory(listen=[...], seed=N)` starts a peer (returns after `ready`);
    `await rust_peer_factory(mode="relay", websocket_port=0, no_limits=True)` starts a relay.
    Every process started is stopped when the test ends."""
    started: list[RustPeer] = []

    async def make(mode: str = "peer", *, start_timeout: float = 60, **kw: Any) -> RustPeer:
        if mode == "peer":
            proc = RustPeer.peer(rust_built, **kw)
        elif mode == "relay":
            proc = RustPeer.relay(rust_built, **kw)
        else:
            raise ValueError(f"mode must be 'peer' or 'relay', not {mode!r}")
        started.append(proc)
        await proc.start(timeout=start_timeout)
        return proc

    yield make
    for proc in reversed(started):
        await proc.stop()
