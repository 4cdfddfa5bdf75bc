"""`p2prtc web --acme-domain`: the plain-http side of an https deployment with ACME.

A small aiohttp server on the http port (80 in production) answers ACME http-01 challenges at
`/.well-known/acme-challenge/<token>` and sends every other request to the https page (301).
`start_acme()` starts it, obtains a certificate when there is none (or it is due), and returns a
`ReloadingCertificate` for the https server plus a renewal task that keeps it fresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from ..acme import AcmeCertificates, AcmeFailure
from ..transports.tls import ReloadingCertificate

log = logging.getLogger(__name__)

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


def make_http_app(acme: AcmeCertificates, https_port: Callable[[], int]) -> web.Application:
    """`https_port()` gives the port to redirect to (known only once the https server is up)."""
    async def challenge(request: web.Request) -> web.Response:
        answer = acme.challenge_response(request.match_info["token"])
        if answer is None:
            return web.Response(status=404, text="no such ACME challenge\n")
        return web.Response(text=answer, content_type="application/octet-stream")

    async def to_https(request: web.Request) -> web.Response:
        host = (request.url.host or acme.domains[0])
        port = "" if https_port() == 443 else f":{https_port()}"
        raise web.HTTPMovedPermanently(f"https://{host}{port}{request.rel_url}")

    app = web.Application()
    app.router.add_get(CHALLENGE_PREFIX + "{token}", challenge)
    app.router.add_route("*", "/{tail:.*}", to_https)
    return app


@dataclass
class AcmeRunning:
    certificate: ReloadingCertificate
    renewals: asyncio.Task[None]
    runner: web.AppRunner
    http_port: int
    https_port: int = 443  # where plain-http requests are redirected; set once https is up

    async def close(self) -> None:
        self.renewals.cancel()
        try:
            await self.renewals
        except asyncio.CancelledError:
            pass
        await self.runner.cleanup()


async def start_acme(acme: AcmeCertificates, host: str, http_port: int,
                     https_port: int) -> AcmeRunning:
    """Serve the challenges, get a certificate if needed, start renewing. Raises AcmeFailure
    when there is no usable certificate at all, OSError when the http port cannot be bound."""
    holder: list[AcmeRunning] = []
    runner = web.AppRunner(make_http_app(acme, lambda: holder[0].https_port if holder
                                         else https_port), access_log=None,
                           handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or None, http_port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1]
        if acme.needs_certificate():
            try:
                await acme.obtain()
            except AcmeFailure as e:
                if acme.expires() is None:
                    raise
                log.warning("ACME: %s; serving the certificate we have (valid until %s)",
                            e, acme.expires())
        cert = ReloadingCertificate(str(acme.cert_file), str(acme.key_file))
    except BaseException:
        await runner.cleanup()
        raise
    renewals = asyncio.create_task(acme.keep_renewed(cert.check))
    holder.append(AcmeRunning(cert, renewals, runner, bound, https_port))
    return holder[0]
