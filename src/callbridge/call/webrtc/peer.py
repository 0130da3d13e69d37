"""One browser call's peer connection and everything hanging off it: tracks, tasks, the timeout.

:meth:`BrowserPeer.close` is the one way out, from any path (our hangup, the browser leaving, the
connect timeout, a refused offer): it cancels the tasks and closes the peer connection, which
frees its ICE sockets. It is idempotent and never blocks (the close runs as a task).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration

from ...media.webrtc_audio import WebRtcAudio
from .aiortc_compat import SoftphonePeerConnection
from .media import PacedAudioTrack, pump_received, refresh_stats

log = logging.getLogger("callbridge.webrtc")


class BrowserPeer:
    def __init__(self, configuration: RTCConfiguration, *, on_closed: Callable[[BrowserPeer], None]) -> None:
        self.pc = SoftphonePeerConnection(configuration)
        self.track = PacedAudioTrack()
        self.audio: WebRtcAudio | None = None
        self.connected = asyncio.Event()
        self.closed = False
        self._on_closed = on_closed
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Task[None] | None = None

    def spawn(self, coro: Any, name: str) -> None:
        """A task that lives as long as this peer (cancelled by close)."""
        if self.closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("browser call task %s failed", task.get_name(), exc_info=task.exception())

    def receive(self, track: MediaStreamTrack) -> None:
        """The browser's audio track: decoded frames go to the call's audio."""
        if track.kind == "audio" and self.audio is not None:
            self.spawn(pump_received(track, self.audio), "webrtc-receive")

    def start_stats(self) -> None:
        if self.audio is not None:
            self.spawn(refresh_stats(self.pc, self.audio, self.pc.telephone_event_pt), "webrtc-stats")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        self.track.stop()
        self._closing = asyncio.get_running_loop().create_task(self._close(), name="webrtc-close")

    async def _close(self) -> None:
        try:
            await self.pc.close()
        except Exception:  # noqa: BLE001 - a failing close must still release our slot
            log.exception("closing a browser peer connection failed")
        finally:
            self._on_closed(self)

    async def wait_closed(self) -> None:
        if self._closing is not None:
            await asyncio.shield(self._closing)
