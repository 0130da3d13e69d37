"""A stand-in on its own event loop, in a thread: apart from its client, as a real server is.

Sharing the client's loop couples the two: the stand-in's timers and socket reads wait for the
client's loop turns, so under load a "server-side" decision (a session limit) lands a whole turn
behind the bytes the client already wrote. A real provider runs on its own clock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

STOP_TIMEOUT_S = 10.0


class StandinThread:
    def __init__(self, start: Callable[[], Awaitable[Any]], stop: Callable[[], Awaitable[Any]]) -> None:
        self._start, self._stop = start, stop
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="standin", daemon=True)

    async def _run(self, make: Callable[[], Awaitable[Any]]) -> Any:
        async def call() -> Any:
            return await make()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), self._loop))

    async def start(self) -> None:
        self._thread.start()
        await self._run(self._start)

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self._run(self._stop), STOP_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, STOP_TIMEOUT_S)
            self._loop.close()
