"""Turns a raw byte stream into a Connection: multistream-select /noise, Noise XX,
multistream-select /yamux/1.0.0, yamux."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .connection import Connection
from .errors import DialError, P2PError, ProtocolError
from .identity import Identity, PeerId
from .muxer.yamux import YamuxMuxer
from .resources import ConnectionScope, Direction, Refusal, ResourceLimitExceeded, ResourceManager
from .security import noise
from .transports.base import RawConnection
from .wire import multistream

log = logging.getLogger(__name__)

NOISE_PROTOCOL = "/noise"
YAMUX_PROTOCOL = "/yamux/1.0.0"
# Whole upgrade (both negotiations and the handshake) must finish in this time.
UPGRADE_TIMEOUT = 15.0


class Upgrader:
    def __init__(self, identity: Identity, resources: ResourceManager | None = None) -> None:
        self.identity = identity
        # Budgets of connections, streams and buffered bytes; the relay gives its own.
        self.resources = resources if resources is not None else ResourceManager()
        # Called with each inbound RawConnection before any byte is read; False drops it.
        self.inbound_gate: Callable[[RawConnection], bool] | None = None

    async def upgrade_outbound(
        self, raw: RawConnection, remote_peer: PeerId | None, transport: str,
        *, limited: bool = False,
    ) -> Connection:
        scope = None
        try:
            scope = self.open_scope("outbound", raw)
            async with asyncio.timeout(UPGRADE_TIMEOUT):
                await multistream.select_outbound(raw, [NOISE_PROTOCOL])
                secure = await noise.secure_outbound(raw, self.identity, remote_peer)
                _checked(scope.set_peer(secure.remote_peer))
                await multistream.select_outbound(secure, [YAMUX_PROTOCOL])
        except TimeoutError:
            _close(scope, raw)
            raise DialError(f"connection upgrade to {raw.remote_addr} timed out") from None
        except P2PError as e:
            _close(scope, raw)
            raise DialError(f"connection upgrade to {raw.remote_addr} failed: {e}") from None
        except BaseException:
            _close(scope, raw)
            raise
        return self._connection(raw, secure, "outbound", transport, limited, scope,
                                is_client=True)

    async def upgrade_inbound(
        self, raw: RawConnection, transport: str, *, limited: bool = False,
        scope: ConnectionScope | None = None,
    ) -> Connection:
        """`scope`: the connection's reservation when the transport took one already (e.g.
        before a WebSocket upgrade), else one is taken here."""
        try:
            if scope is None:
                scope = self.open_scope("inbound", raw)
            async with asyncio.timeout(UPGRADE_TIMEOUT):
                await multistream.handle_inbound(raw, lambda p: p == NOISE_PROTOCOL)
                secure = await noise.secure_inbound(raw, self.identity)
                # the peer is known: its budget decides, before the muxer is agreed
                _checked(scope.set_peer(secure.remote_peer))
                await multistream.handle_inbound(secure, lambda p: p == YAMUX_PROTOCOL)
        except BaseException:
            _close(scope, raw)
            raise
        return self._connection(raw, secure, "inbound", transport, limited, scope,
                                is_client=False)

    def admit_inbound(self, peername: object) -> ConnectionScope | None:
        """A transient reservation for an accepted socket (`peername` as asyncio gives it), or
        None when a budget refuses it (logged); the caller then closes the socket unread."""
        ip = peername[0] if isinstance(peername, tuple) and peername else None
        result = self.resources.open_connection("inbound", ip if isinstance(ip, str) else None)
        if isinstance(result, Refusal):
            line = self.resources.log_line(f"inbound connection from {ip} refused", result)
            if line is not None:
                log.info("%s", line)
            return None
        return result

    def open_scope(self, direction: Direction, raw: RawConnection) -> ConnectionScope:
        """A transient reservation for a connection not yet upgraded (raises
        ResourceLimitExceeded when a budget is full)."""
        ip = raw.remote_addr.value_for("ip4") or raw.remote_addr.value_for("ip6")
        result = self.resources.open_connection(direction, ip)
        if isinstance(result, Refusal):
            raise ResourceLimitExceeded(result)
        return result

    async def upgrade_inbound_or_log(
        self, raw: RawConnection, transport: str, *, limited: bool = False,
        scope: ConnectionScope | None = None,
    ) -> Connection | None:
        """Inbound upgrade for a listener: failures are the remote's problem, logged, not raised."""
        if self.inbound_gate is not None and not self.inbound_gate(raw):
            _close(scope, raw)
            return None
        try:
            return await self.upgrade_inbound(raw, transport, limited=limited, scope=scope)
        except TimeoutError:
            log.info("inbound %s connection from %s: upgrade timed out", transport, raw.remote_addr)
        except ResourceLimitExceeded as e:
            line = self.resources.log_line(
                f"inbound {transport} connection from {raw.remote_addr} refused", e.refusal)
            if line is not None:
                log.info("%s", line)
        except (P2PError, ProtocolError, OSError) as e:
            log.info("inbound %s connection from %s failed to upgrade: %s",
                     transport, raw.remote_addr, e)
        return None

    def _connection(self, raw: RawConnection, secure: noise.SecureSession, direction: str,
                    transport: str, limited: bool, scope: ConnectionScope, *,
                    is_client: bool) -> Connection:
        muxer = YamuxMuxer(secure, is_client=is_client, resources=scope)
        return Connection(
            muxer=muxer,
            remote_peer=secure.remote_peer,
            remote_public_key=secure.remote_public_key,
            local_addr=raw.local_addr,
            remote_addr=raw.remote_addr,
            direction=direction,
            transport=transport,
            limited=limited,
            security=NOISE_PROTOCOL,
            muxer_protocol=YAMUX_PROTOCOL,
        )


def _checked(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise ResourceLimitExceeded(refusal)


def _close(scope: ConnectionScope | None, raw: RawConnection) -> None:
    if scope is not None:
        scope.close()
    raw.reset()
