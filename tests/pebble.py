"""Let's Encrypt's ACME test server, pebble, with its DNS stub (pebble-challtestsrv) answering
every name with one address: a local ACME CA for end-to-end tests, never a public one.

Both are built from the Go module proxy by `tests/build-pebble.sh` (run by `scripts/setup
--test`) into ~/.cache/p2prtc/bin (or $P2PRTC_PEBBLE_BIN). Pebble's own https API gets a
certificate from a CA made here; `Pebble.roots_pem()` fetches the root that signs the
certificates it issues (new on every start).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import aiohttp

from .tlsca import TestCA

BIN = Path(os.environ.get("P2PRTC_PEBBLE_BIN", Path.home() / ".cache" / "p2prtc" / "bin"))
BUILD = Path(__file__).resolve().parent / "build-pebble.sh"


def _free(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PebbleMissing(RuntimeError):
    pass


class Pebble:
    """`async with Pebble(tmp, http_port=P, answer_ip="127.0.0.1") as p:` then p.directory,
    p.ca_file (trust for pebble's API), await p.roots_pem()."""

    def __init__(self, workdir: Path, *, http_port: int, answer_ip: str = "127.0.0.1",
                 validity_seconds: int | None = None) -> None:
        self.dir = Path(workdir)
        self.http_port = http_port
        self.answer_ip = answer_ip
        self.validity = validity_seconds
        self.procs: list[asyncio.subprocess.Process] = []
        self.logs: list[Path] = []

    async def __aenter__(self) -> Pebble:
        pebble, chall = BIN / "pebble", BIN / "pebble-challtestsrv"
        for b in (pebble, chall):
            if not os.access(b, os.X_OK):
                raise PebbleMissing(f"{b} is missing: run {BUILD}")
        self.dir.mkdir(parents=True, exist_ok=True)
        ca = TestCA(self.dir / "api-ca", name="pebble API test CA")
        api = ca.issue("pebble-api", ["127.0.0.1", "localhost"])
        self.ca_file = str(ca.ca_pem)
        api_port, mgmt_port, dns_port = _free(), _free(), _free(socket.SOCK_DGRAM)
        cfg = {"pebble": {
            "listenAddress": f"127.0.0.1:{api_port}",
            "managementListenAddress": f"127.0.0.1:{mgmt_port}",
            "certificate": str(api.cert), "privateKey": str(api.key),
            "httpPort": self.http_port, "tlsPort": _free(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        if self.validity is not None:
            cfg["pebble"]["profiles"] = {"default": {"description": "test",
                                                     "validityPeriod": self.validity}}
        (self.dir / "pebble.json").write_text(json.dumps(cfg))
        await self._start("challtestsrv", str(chall), "-defaultIPv4", self.answer_ip,
                          "-defaultIPv6", "", "-dns01", f"127.0.0.1:{dns_port}", "-http01", "",
                          "-https01", "", "-tlsalpn01", "", "-doh", "",
                          "-management", f"127.0.0.1:{_free()}")
        # no random validation delays, no random nonce rejections: deterministic and fast
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        await self._start("pebble", str(pebble), "-config", str(self.dir / "pebble.json"),
                          "-dnsserver", f"127.0.0.1:{dns_port}", env=env)
        self.directory = f"https://127.0.0.1:{api_port}/dir"
        self.management = f"https://127.0.0.1:{mgmt_port}"
        await self._wait_ready()
        return self

    async def _start(self, name: str, *argv: str, env=None) -> None:
        log = self.dir / f"{name}.log"
        self.logs.append(log)
        with open(log, "wb") as f:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=f, stderr=f,
                                                        stdin=asyncio.subprocess.DEVNULL,
                                                        env=env)
        self.procs.append(proc)

    def describe(self) -> str:
        return "\n".join(f"-- {p.name} --\n{p.read_text(errors='replace')[-3000:]}"
                         for p in self.logs if p.exists())

    async def _wait_ready(self, timeout: float = 20) -> None:
        import ssl

        ctx = ssl.create_default_context(cafile=self.ca_file)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as s:
            while True:
                try:
                    async with s.get(self.directory, ssl=ctx) as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientConnectorError:
                    pass
                if any(p.returncode is not None for p in self.procs) or loop.time() > deadline:
                    raise RuntimeError(f"pebble did not start; {self.describe()}")
                await asyncio.sleep(0.1)  # polling a port that is not open yet, with a deadline

    async def roots_pem(self) -> str:
        import ssl

        ctx = ssl.create_default_context(cafile=self.ca_file)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{self.management}/roots/0", ssl=ctx) as r:
                assert r.status == 200, await r.text()
                return await r.text()

    async def __aexit__(self, *exc) -> None:
        for p in self.procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
