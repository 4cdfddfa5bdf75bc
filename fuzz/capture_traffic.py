"""A pytest plugin that records the Kademlia and AutoNAT v2 bytes our side reads from the remote,
to seed the fuzz corpus with real traffic (go-libp2p, rust-libp2p):

    scripts/netns-run env PYTHONPATH=$PWD/fuzz .venv/bin/python -m pytest -p capture_traffic \\
        tests/interop/test_kad_go.py tests/interop/test_kad_rust.py \\
        tests/interop/test_autonat_go.py tests/interop/test_autonat_rust.py
    .venv/bin/python fuzz/capture_traffic.py   # -> fuzz/corpus/{kad,autonat}/interop-*

Recorded to fuzz/.work/capture/ (gitignored); the second step wraps each in the targets' input
format. Not a test dependency: only run by hand.
"""

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / ".work" / "capture"


def _save(kind: str, data: bytes) -> None:
    d = OUT / kind
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(bytes(data))


def pytest_configure(config) -> None:
    from p2prtc.kad import service
    from p2prtc.protocols import autonat_core as core

    decode = service.decode
    server_receive, client_receive = core.ServerRequest.receive, core.ClientRequest.receive

    def kad_decode(data):
        _save("kad", data)
        return decode(data)

    def s_receive(self, data):
        _save("autonat_server", data)
        return server_receive(self, data)

    def c_receive(self, data):
        _save("autonat_client", data)
        return client_receive(self, data)

    service.decode = kad_decode
    core.ServerRequest.receive = s_receive
    core.ClientRequest.receive = c_receive


def main() -> None:
    """Wrap what was recorded as inputs of the kad and autonat targets."""
    wrap = {
        # kad: one raw request/response, its peers going into the routing table (op 0x08)
        "kad": ("kad", lambda b: b"\x08" + len(b).to_bytes(2, "big") + b),
        # autonat: the server side (header even, as our server) / the client side (odd)
        "autonat_server": ("autonat", lambda b: b"\x12\x00" + b),
        "autonat_client": ("autonat", lambda b: b"\x49\x00" + b),
    }
    for kind, (target, fmt) in wrap.items():
        src = OUT / kind
        if not src.is_dir():
            continue
        dst = HERE / "corpus" / target
        for old in dst.glob("interop-*"):
            if old.read_bytes()[:1] == fmt(b"")[:1]:
                old.unlink()
        for f in sorted(src.iterdir()):
            # run.py's -max_len (a 30 KB read of dial data keeps its first 8 KiB)
            data = fmt(f.read_bytes())[:8192]
            (dst / f"interop-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
        print(f"{kind}: {len(list(src.iterdir()))} -> {dst}")


if __name__ == "__main__":
    sys.exit(main())
