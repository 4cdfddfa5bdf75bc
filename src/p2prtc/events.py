"""A tiny typed event bus: synchronous callbacks plus awaitable waits (no polling)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class EventBus:
    def __init__(self) -> None:
        self._subs: dict[str, list[Callable[..., None]]] = defaultdict(list)

    def on(self, name: str, callback: Callable[..., None]) -> Callable[[], None]:
        """Subscribe; returns a function that unsubscribes."""
        self._subs[name].append(callback)
        return lambda: self._subs[name].remove(callback) if callback in self._subs[name] else None

    def emit(self, name: str, *args: Any) -> None:
        for cb in list(self._subs.get(name, ())):
            try:
                cb(*args)
            except Exception:
                log.exception("event handler for %r failed", name)

    async def wait_for(self, name: str, predicate: Callable[..., bool] = lambda *a: True,
                       timeout: float | None = None) -> tuple:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()

        def cb(*args: Any) -> None:
            if not fut.done() and predicate(*args):
                fut.set_result(args)

        off = self.on(name, cb)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            off()
