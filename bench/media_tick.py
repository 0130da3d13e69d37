"""Micro-benchmark of one call's media work per 20 ms tick, without sockets.

Each stream plays a tone, gets its own packet echoed back (as SIPp's
``-rtp_echo`` does in bench/rtp_echo.py) and records both sides, exactly as
``AudioStream.tick`` and ``RtpSocket._rtp_received`` run in the server. The
socket is the real one without its OS sockets, so what is measured is the
Python media work alone: latch + receive + jitter buffer + decode + playback
+ encode + RTCP + recording.

    .venv/bin/python bench/media_tick.py                 # 500 streams, 10 s of audio
    .venv/bin/python bench/media_tick.py --no-record

Prints µs per stream per tick (best of --repeat) and what that means as a
share of one core at 500 calls.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

try:
    import callbridge  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from callbridge.media.diskwriter import BackgroundFileWriter
from callbridge.media import stream as stream_module
from callbridge.media.recorder import CallRecorder
from callbridge.media.stream import AudioStream
from callbridge.media.tone import ToneSource
from callbridge.rtp.ports import PortAllocator
from callbridge.rtp.socket import RtpSocket

TICKS_PER_SECOND = 50
ECHO_ADDR = ("127.0.0.1", 40000)
ECHO_DELAY_S = 0.0001  # SIPp's echo on loopback comes back within a fraction of a millisecond


class SyntheticClock:
    """Replaces the stream module's ``time``: packets arrive on the benchmark's clock, not the wall's."""

    now = 0.0
    time = staticmethod(time.time)

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


class EchoSocket(RtpSocket):
    """The real RtpSocket (latch included) without OS sockets: keeps the last packet sent so it can be echoed."""

    def __init__(self) -> None:
        super().__init__(PortAllocator(ECHO_ADDR[1], ECHO_ADDR[1] + 1), ECHO_ADDR[0])
        self.port = ECHO_ADDR[1]
        self.sent: bytes | None = None
        self.set_remote(*ECHO_ADDR)
        self.confirm_remote()  # as on the ACK

    def send(self, data: bytes) -> None:
        self.sent = data

    def send_rtcp(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def run(streams: int, seconds: float, record: bool, directory: Path) -> float:
    """µs of media work per stream per tick."""
    pool = []
    disk = BackgroundFileWriter()  # as in the server: file writes off the ticking thread
    for i in range(streams):
        recorder = CallRecorder(directory / f"{i}.wav", 8000, io=disk) if record else None
        stream = AudioStream(EchoSocket(), "PCMU", 0, telephone_event_pt=101, recorder=recorder)
        stream.start(0.0)
        stream.playback.enqueue(ToneSource((440.0,), 8000))
        pool.append(stream)
    ticks = int(seconds * TICKS_PER_SECOND)
    clock = 0.0
    busy = 0.0
    stream_module.time = SyntheticClock
    try:
        for _ in range(ticks):
            clock += 1 / TICKS_PER_SECOND
            SyntheticClock.now = clock + ECHO_DELAY_S  # the echo is back well before the next tick
            start = time.perf_counter()
            for stream in pool:
                stream.tick(clock)
                stream.socket._rtp_received(stream.socket.sent, ECHO_ADDR, SyntheticClock.now)
            busy += time.perf_counter() - start
    finally:
        stream_module.time = time
    for stream in pool:
        stream.close(clock)
    disk.close()
    return busy / (ticks * streams) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per stream per repeat")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    async def measure() -> list[float]:  # streams create futures, so a loop must be running
        results = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="media_tick_") as tmp:
                results.append(run(args.streams, args.seconds, args.record, Path(tmp)))
        return results

    results = asyncio.run(measure())
    best = min(results)
    print(f"{'streams':>8} {'recording':>9} {'µs/stream/tick':>15} {'core % at 500 calls':>20}  runs")
    print(f"{args.streams:>8} {'on' if args.record else 'off':>9} {best:>15.2f} "
          f"{best * 500 * TICKS_PER_SECOND / 1e4:>20.1f}  {', '.join(f'{r:.2f}' for r in results)}")


if __name__ == "__main__":
    main()
