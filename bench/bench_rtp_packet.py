"""Micro-benchmark of the RTP per-packet hot path. Prints µs per packet.

Run: .venv/bin/python bench/bench_rtp_packet.py
Budget reference: 500 calls × 50 packets/s each way = 50,000 packets/s,
i.e. 20 µs per packet for *everything* if one core does all of it.
"""

from __future__ import annotations

import struct
import sys
import timeit
from pathlib import Path

try:
    import callbridge  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from callbridge.rtp.jitter import JitterBuffer
from callbridge.rtp.packet import RtpPacket, is_rtcp
from callbridge.rtp.stats import ReceiverStats

PCMU_PAYLOAD = b"\xff" * 160  # 20 ms of G.711 at 8 kHz
PLAIN = struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234) + PCMU_PAYLOAD
FULL = (
    struct.pack("!BBHII", 0xB2, 0x80 | 96, 1, 160, 0x1234)
    + struct.pack("!II", 1, 2)
    + struct.pack("!HH", 0xBEDE, 1)
    + b"\x10\x01\x00\x00"
    + PCMU_PAYLOAD
    + b"\x00\x00\x03"
)
ROUNDS = 200_000


def per_packet_us(stmt, number: int = ROUNDS, repeat: int = 5) -> float:
    best = min(timeit.repeat(stmt, number=number, repeat=repeat))
    return best / number * 1e6


def jitter_cycle_us(packets: int = 50_000) -> float:
    """push + pop per 20 ms frame on a clean stream."""

    def run() -> None:
        jb = JitterBuffer()
        push, pop = jb.push, jb.pop
        for i in range(packets):
            t = i * 0.02
            push(i & 0xFFFF, (i * 160) & 0xFFFFFFFF, PCMU_PAYLOAD, t)
            pop(t + 0.01)

    best = min(timeit.repeat(run, number=1, repeat=3))
    return best / packets * 1e6


def stats_update_us(packets: int = 100_000) -> float:
    def run() -> None:
        s = ReceiverStats(1, 8000)
        update = s.update
        for i in range(packets):
            update(i & 0xFFFF, (i * 160) & 0xFFFFFFFF, i * 0.02, 160)

    best = min(timeit.repeat(run, number=1, repeat=3))
    return best / packets * 1e6


def main() -> None:
    plain = RtpPacket.parse(PLAIN)
    full = RtpPacket.parse(FULL)
    rows = [
        ("is_rtcp", per_packet_us(lambda: is_rtcp(PLAIN))),
        ("parse (plain 172 B)", per_packet_us(lambda: RtpPacket.parse(PLAIN))),
        ("serialize (plain)", per_packet_us(plain.serialize)),
        ("parse+serialize (plain)", per_packet_us(lambda: RtpPacket.parse(PLAIN).serialize())),
        ("parse (CSRC+ext+pad)", per_packet_us(lambda: RtpPacket.parse(FULL))),
        ("serialize (CSRC+ext+pad)", per_packet_us(full.serialize)),
        ("parse+serialize (CSRC+ext+pad)", per_packet_us(lambda: RtpPacket.parse(FULL).serialize())),
        ("ReceiverStats.update", stats_update_us()),
        ("JitterBuffer push+pop", jitter_cycle_us()),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  µs/packet")
    print(f"{'-' * width}  ---------")
    for name, us in rows:
        print(f"{name:<{width}}  {us:9.3f}")


if __name__ == "__main__":
    main()
