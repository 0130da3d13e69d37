"""Media capacity of one callbridge process: N concurrent calls, RTP echoed by SIPp.

For each N a fresh ``callbridge serve`` answers N calls from SIPp
(bench/scenarios/rtp_echo_uac.xml, ramped at --rate calls/s) and plays its
440 Hz PCMU tone, 20 ms a packet. SIPp runs with ``-rtp_echo`` and sends every
packet back to the server. All calls stay up together for at least --window
seconds.

Everything is measured outside the server, from a ``dumpcap`` capture on
``lo`` of the UDP traffic to and from SIPp's media port:

- steady window: where all N server streams are active at once, trimmed by
  --trim seconds at each end;
- send spacing: gaps between consecutive packets of each server stream
  (p50/p99/p99.9/max over all gaps in the window);
- loss: sequence numbers missing from the server's own streams, plus packets
  the server sent that never came back from SIPp;
- kernel UDP receive drops, per socket from /proc/net/udp (server sockets,
  SIPp's echo socket), and the Udp InErrors/RcvbufErrors delta of
  /proc/net/snmp (whole host);
- CPU of the server, SIPp and dumpcap over the window (100% = one core) and
  the server's RSS at the end of the window.

PASS = every call up, 0 loss, no receive drops on the server's sockets and
p99 spacing <= 25 ms (--max-p99). A capture that dropped packets makes the
row INVALID. The server's own counters (GET /api/calls) are printed for
comparison only.

    .venv/bin/python bench/rtp_echo.py --quick                 # smoke test, 20 calls, 10 s
    .venv/bin/python bench/rtp_echo.py --calls 100 300 500      # 40 s window each
    .venv/bin/python bench/rtp_echo.py --calls 500 --keep /tmp/rtp500   # keep capture and logs

SIPp 3.6.1 ignores -rtp_buffsize for its echo socket, which then drops
packets at a few hundred calls; the bench forces a 4 MiB buffer (8 MiB as the
kernel counts) onto that one socket with pidfd_getfd + SO_RCVBUFFORCE.

Needs root (dumpcap on lo, pidfd_getfd, sysctl), sipp (sip-tester) and dumpcap.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from harness import api_token, free_port, get_json, rss_bytes, start_server, stop_process

BENCH_DIR = Path(__file__).resolve().parent
SCENARIO = BENCH_DIR / "scenarios" / "rtp_echo_uac.xml"
SIPP_BUFFER = 4194304  # -rtp_buffsize, and forced onto SIPp's echo socket (see enlarge_socket_buffers)
RTP_PORT_MIN, RTP_PORT_MAX = 20000, 29999
SNAPLEN = 64  # Ethernet 14 + IPv4 20 + UDP 8 + RTP 12 = 54
FRAME_MS = 20.0
SYS_PIDFD_GETFD = 438  # same number on every Linux architecture
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33


# --------------------------------------------------------------------------- capture reading

LINK_HEADER = {0: 4, 1: 14, 101: 0, 108: 4, 113: 16, 228: 0, 229: 0, 276: 20}


@dataclass
class Packets:
    """One row per captured RTP packet (RTCP and non-RTP UDP are dropped)."""

    t0: float  # epoch seconds of t == 0
    t: np.ndarray  # seconds since t0
    sport: np.ndarray
    dport: np.ndarray
    seq: np.ndarray
    ts: np.ndarray
    ssrc: np.ndarray
    pt: np.ndarray
    other: int = 0  # captured frames that were not RTP over UDP


def _u16be(buf: np.ndarray, off: np.ndarray) -> np.ndarray:
    return (buf[off].astype(np.uint32) << 8) | buf[off + 1]


def _u32be(buf: np.ndarray, off: np.ndarray) -> np.ndarray:
    return (_u16be(buf, off) << 16) | _u16be(buf, off + 2)


def _u32(buf: np.ndarray, off: np.ndarray, little: bool) -> np.ndarray:
    if little:
        return ((buf[off + 3].astype(np.uint32) << 24) | (buf[off + 2].astype(np.uint32) << 16)
                | (buf[off + 1].astype(np.uint32) << 8) | buf[off])
    return _u32be(buf, off)


def _index_pcap(data: bytes, buf: np.ndarray):
    """Classic pcap: (data offsets, caplens, sec, frac seconds, linktype)."""
    magic = data[:4]
    formats = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
               b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}
    if magic not in formats:
        raise ValueError("not a pcap or pcapng file")
    endian, resolution = formats[magic]
    _, _, _, _, _, snaplen, linktype = struct.unpack_from(endian + "IHHiIII", data, 0)
    little = endian == "<"
    size = len(data)
    stride = 16 + snaplen
    count = (size - 24) // stride
    records = None
    if count and (size - 24) % stride == 0:
        # Fast path: every packet was cut at snaplen (true for RTP at snaplen 64).
        starts = 24 + np.arange(count, dtype=np.int64) * stride
        if np.all(_u32(buf, starts + 8, little) == snaplen):
            records = starts
    if records is None:
        starts_list = []
        position = 24
        unpack = struct.Struct(endian + "I").unpack_from
        while position + 16 <= size:
            incl = unpack(data, position + 8)[0]
            if position + 16 + incl > size:
                break  # truncated last record (capture killed mid-write)
            starts_list.append(position)
            position += 16 + incl
        records = np.array(starts_list, dtype=np.int64)
    sec = _u32(buf, records, little).astype(np.int64)
    frac = _u32(buf, records + 4, little).astype(np.float64) * resolution
    caplen = _u32(buf, records + 8, little).astype(np.int64)
    link = np.full(len(records), LINK_HEADER.get(linktype, -1), dtype=np.int64)
    return records + 16, caplen, sec, frac, link


def _index_pcapng(data: bytes):
    """pcapng, walked block by block (slower; dumpcap -P avoids it)."""
    size = len(data)
    position = 0
    endian = "<"
    interfaces: list[tuple[int, float]] = []  # (link header length, ticks per second)
    starts, caplens, stamps, links = [], [], [], []
    while position + 12 <= size:
        block_type = struct.unpack_from(endian + "I", data, position)[0]
        if block_type == 0x0A0D0D0A:
            endian = "<" if data[position + 8:position + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            interfaces = []
        length = struct.unpack_from(endian + "I", data, position + 4)[0]
        if length < 12 or position + length > size:
            break
        if block_type == 1:  # interface description
            linktype = struct.unpack_from(endian + "H", data, position + 8)[0]
            rate = 1e6
            option = position + 16
            while option + 4 <= position + length - 4:
                code, olen = struct.unpack_from(endian + "HH", data, option)
                if code == 0:
                    break
                if code == 9 and olen >= 1:
                    value = data[option + 4]
                    rate = float(2 ** (value & 0x7F)) if value & 0x80 else float(10 ** value)
                option += 4 + ((olen + 3) & ~3)
            interfaces.append((LINK_HEADER.get(linktype, -1), rate))
        elif block_type == 6:  # enhanced packet
            iface, high, low, caplen = struct.unpack_from(endian + "IIII", data, position + 8)
            header, rate = interfaces[iface]
            starts.append(position + 28)
            caplens.append(caplen)
            stamps.append(((high << 32) | low) / rate)
            links.append(header)
        position += length
    stamp = np.array(stamps, dtype=np.float64)
    sec = np.floor(stamp).astype(np.int64)
    return (np.array(starts, dtype=np.int64), np.array(caplens, dtype=np.int64), sec, stamp - sec,
            np.array(links, dtype=np.int64))


def read_capture(path: Path) -> Packets:
    data = path.read_bytes()
    buf = np.frombuffer(data, dtype=np.uint8)
    if len(data) < 24:
        raise ValueError(f"{path}: empty capture")
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        starts, caplen, sec, frac, link = _index_pcapng(data)
    else:
        starts, caplen, sec, frac, link = _index_pcap(data, buf)
    t0 = float(sec[0]) if len(sec) else 0.0
    t = (sec - int(t0)).astype(np.float64) + frac
    known = link >= 0
    ip = np.where(known, starts + np.maximum(link, 0), 0)
    end = starts + caplen
    # Only read bytes inside each record: clamp offsets of records that are too short.
    ok = known & (ip + 20 <= end)
    ip = np.where(ok, ip, 0)
    version = buf[ip] >> 4
    header = np.where(version == 4, (buf[ip] & 0x0F).astype(np.int64) * 4, 40)
    proto = np.where(version == 4, buf[np.minimum(ip + 9, len(buf) - 1)],
                     buf[np.minimum(ip + 6, len(buf) - 1)])
    udp = ip + header
    ok &= ((version == 4) | (version == 6)) & (proto == 17) & (udp + 8 + 12 <= end)
    udp = np.where(ok, udp, 0)
    rtp = udp + 8
    first, second = buf[rtp], buf[rtp + 1]
    pt = (second & 0x7F).astype(np.int32)
    ok &= ((first >> 6) == 2) & ~((pt >= 72) & (pt <= 76))  # RTP v2, not RTCP (PT 200-204)
    index = np.nonzero(ok)[0]
    udp, rtp = udp[index], rtp[index]
    return Packets(t0=t0, t=t[index], sport=_u16be(buf, udp).astype(np.int32),
                   dport=_u16be(buf, udp + 2).astype(np.int32), seq=_u16be(buf, rtp + 2).astype(np.int32),
                   ts=_u32be(buf, rtp + 4), ssrc=_u32be(buf, rtp + 8), pt=pt[index],
                   other=int(len(ok) - len(index)))


# --------------------------------------------------------------------------- analysis


def _percentiles(values: np.ndarray, points=(50, 99, 99.9)) -> list[float]:
    if not len(values):
        return [float("nan")] * (len(points) + 1)
    return [float(v) for v in np.percentile(values, points)] + [float(values.max())]


def steady_window(first: np.ndarray, last: np.ndarray, want: int) -> tuple[float, float, int]:
    """Longest interval where the most streams (ideally ``want``) are active at once."""
    if not len(first):
        return float("nan"), float("nan"), 0
    times = np.concatenate([first, last])
    steps = np.concatenate([np.ones(len(first), np.int64), -np.ones(len(last), np.int64)])
    order = np.lexsort((-steps, times))  # starts before ends at equal times
    times, active = times[order], np.cumsum(steps[order])
    peak = int(min(active.max(), want))
    # active[i] streams are up between times[i] and times[i + 1]; find runs of active >= peak.
    flags = np.concatenate([[0], (active[:-1] >= peak).astype(np.int8), [0]])
    edges = np.diff(flags)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return float("nan"), float("nan"), peak
    longest = int(np.argmax(times[ends] - times[starts]))
    best = (float(times[starts[longest]]), float(times[ends[longest]]))
    return best[0], best[1], peak


def analyse(packets: Packets, media_port: int, port_min: int, port_max: int, calls: int, trim: float) -> dict:
    p = packets
    server = (p.dport == media_port) & (p.sport >= port_min) & (p.sport <= port_max)
    echo = (p.sport == media_port) & (p.dport >= port_min) & (p.dport <= port_max)
    t, port, seq, ssrc, ts = p.t[server], p.sport[server], p.seq[server], p.ssrc[server], p.ts[server]
    stream_key = (port.astype(np.uint64) << np.uint64(32)) | ssrc.astype(np.uint64)
    keys, stream = np.unique(stream_key, return_inverse=True)
    order = np.lexsort((t, stream))
    t, port, seq, ssrc, ts, stream = t[order], port[order], seq[order], ssrc[order], ts[order], stream[order]
    bounds = np.flatnonzero(np.diff(stream)) + 1
    heads = np.concatenate([[0], bounds]) if len(t) else np.array([], np.int64)
    tails = np.concatenate([bounds - 1, [len(t) - 1]]) if len(t) else np.array([], np.int64)
    start, end, peak = steady_window(t[heads], t[tails], calls)
    ws, we = start + trim, end - trim
    result: dict = {"streams": int(len(keys)), "concurrent": peak, "window_start": p.t0 + ws,
                    "window_end": p.t0 + we, "window_s": max(0.0, we - ws), "server_packets_total": int(len(t)),
                    "echo_packets_total": int(echo.sum()), "other_frames": p.other}
    inside = (t >= ws) & (t <= we)
    result["packets"] = int(inside.sum())
    pair = (stream[1:] == stream[:-1]) & inside[1:] & inside[:-1]
    gaps = np.diff(t)[pair] * 1000.0
    p50, p99, p999, worst = _percentiles(gaps)
    result.update(p50_ms=p50, p99_ms=p99, p999_ms=p999, max_ms=worst, gaps=int(len(gaps)),
                  late_40ms=int((gaps >= 2 * FRAME_MS).sum()))
    # Stalls: moments when streams went >= 2 frames without a packet (clustered within 100 ms).
    late = pair & (np.diff(t) >= 2 * FRAME_MS / 1000)
    late_at, late_gap = t[:-1][late], np.diff(t)[late]
    order_late = np.argsort(late_at)
    late_at, late_gap = late_at[order_late], late_gap[order_late]
    stalls = []
    if len(late_at):
        cuts = np.flatnonzero(np.diff(late_at) > 0.1) + 1
        for chunk_at, chunk_gap in zip(np.split(late_at, cuts), np.split(late_gap, cuts), strict=True):
            stalls.append({"at_s": round(float(chunk_at[0] - ws), 2), "streams": int(len(chunk_at)),
                           "max_ms": round(float(chunk_gap.max()) * 1000, 1)})
    result["stalls"] = stalls
    step = (seq[1:] - seq[:-1]) % 65536
    # Missing sequence numbers: per stream, the unwrapped span seen in the window minus the distinct
    # numbers seen (robust to wrap-around, reordering and duplicates).
    chosen = np.flatnonzero(inside)
    if len(chosen):
        in_stream, in_seq = stream[chosen], seq[chosen]
        same = in_stream[1:] == in_stream[:-1]
        signed = np.where(same, (np.diff(in_seq) + 32768) % 65536 - 32768, 0)
        unwrapped = np.concatenate([[0], np.cumsum(signed)])
        heads_in = np.concatenate([[0], np.flatnonzero(~same) + 1])
        span = int((np.maximum.reduceat(unwrapped, heads_in) - np.minimum.reduceat(unwrapped, heads_in) + 1).sum())
        distinct = len(np.unique(in_stream.astype(np.int64) * (1 << 40) + unwrapped))
        result["seq_missing"], result["seq_duplicate"] = span - distinct, len(chosen) - distinct
        result["seq_reordered"] = int((same & (signed < 0)).sum())
    else:
        result["seq_missing"] = result["seq_duplicate"] = result["seq_reordered"] = 0
    tstep = (ts[1:].astype(np.int64) - ts[:-1].astype(np.int64)) % (1 << 32)
    result["ts_jumps"] = int((pair & (tstep != 160 * step)).sum())
    # Echo matching: (server port, SSRC, sequence) fits in 64 bits exactly.
    sent_keys = ((port[inside].astype(np.uint64) << np.uint64(48)) | (ssrc[inside].astype(np.uint64) << np.uint64(16))
                 | seq[inside].astype(np.uint64))
    echo_keys = ((p.dport[echo].astype(np.uint64) << np.uint64(48)) | (p.ssrc[echo].astype(np.uint64) << np.uint64(16))
                 | p.seq[echo].astype(np.uint64))
    echo_t = p.t[echo]
    echo_order = np.argsort(echo_keys, kind="stable")
    echo_keys, echo_t = echo_keys[echo_order], echo_t[echo_order]
    where = np.searchsorted(echo_keys, sent_keys)
    found = where < len(echo_keys)
    found[found] = echo_keys[where[found]] == sent_keys[found]
    result["not_echoed"] = int((~found).sum())
    delay = (echo_t[where[found]] - t[inside][found]) * 1000.0
    result["echo_p50_ms"], result["echo_p99_ms"], _, result["echo_max_ms"] = _percentiles(delay)
    result["loss"] = result["seq_missing"] + result["not_echoed"]
    return result


# --------------------------------------------------------------------------- /proc sampling


def _read_host_cpu() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)  # busy, total (jiffies)


def read_udp_sockets() -> dict[str, tuple[int, int, int]]:
    """inode -> (local port, rx_queue bytes, drops) for every IPv4/IPv6 UDP socket."""
    sockets = {}
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 13:
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            rx_queue = int(fields[4].split(":")[1], 16)
            sockets[fields[9]] = (port, rx_queue, int(fields[-1]))
    return sockets


def read_snmp_udp() -> dict[str, int]:
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return dict(zip(lines[0][1:], (int(v) for v in lines[1][1:]), strict=True))


class Sampler(threading.Thread):
    """Samples CPU time and RSS of named processes, host CPU and UDP socket drops."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name="sampler")
        self.interval = interval
        self.pids: dict[str, int] = {}
        self.samples: list[tuple[float, dict[str, float], dict[str, int], int, int]] = []
        self.sockets: dict[str, tuple[int, int, int]] = {}  # inode -> (port, max rx_queue, max drops)
        self._halt = threading.Event()

    def sample(self) -> None:
        now = time.time()
        cpu, rss = {}, {}
        for name, pid in list(self.pids.items()):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                rss[name] = rss_bytes(pid)
            except (OSError, IndexError, ValueError):
                pass
        busy, total = _read_host_cpu()
        self.samples.append((now, cpu, rss, busy, total))
        for inode, (port, queue, drops) in read_udp_sockets().items():
            old = self.sockets.get(inode, (port, 0, 0))
            self.sockets[inode] = (port, max(old[1], queue), max(old[2], drops))

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()

    def cpu_at(self, name: str, when: float) -> float:
        points = [(s[0], s[1][name]) for s in self.samples if name in s[1]]
        if not points:
            return float("nan")
        times, values = zip(*points, strict=True)
        return float(np.interp(when, times, values))

    def cpu_percent(self, name: str, start: float, end: float) -> float:
        if end <= start:
            return float("nan")
        return 100.0 * (self.cpu_at(name, end) - self.cpu_at(name, start)) / (end - start)

    def host_percent(self, start: float, end: float) -> float:
        """Busy share of all cores over [start, end], 100% = one core."""
        times = [s[0] for s in self.samples]
        busy = np.interp([start, end], times, [s[3] for s in self.samples])
        total = np.interp([start, end], times, [s[4] for s in self.samples])
        return 100.0 * (os.cpu_count() or 1) * (busy[1] - busy[0]) / max(total[1] - total[0], 1e-9)

    def rss_at(self, name: str, when: float) -> int:
        before = [s[2][name] for s in self.samples if s[0] <= when and name in s[2]]
        return before[-1] if before else 0

    def drops(self, ports) -> tuple[int, int]:
        """Summed max drops and max rx_queue over sockets bound to ``ports`` (a predicate)."""
        chosen = [v for v in self.sockets.values() if ports(v[0])]
        return sum(v[2] for v in chosen), max((v[1] for v in chosen), default=0)


# --------------------------------------------------------------------------- running one N


@dataclass
class Row:
    calls: int
    result: dict = field(default_factory=dict)
    verdict: str = ""


def _free_media_port(exclude: range) -> int:
    """An even UDP port with port and port + 2 free (SIPp binds both for -rtp_echo)."""
    for _ in range(200):
        port = free_port() & ~1
        if port in exclude or port + 2 in exclude or port < 1024:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 2))
            return port
        except OSError:
            continue
    raise RuntimeError("no free media port")


def enlarge_socket_buffers(pid: int, port: int, size: int, timeout: float = 5.0) -> int:
    """Give the UDP socket that process ``pid`` bound to ``port`` ``size``-byte buffers; return its SO_RCVBUF.

    SIPp 3.6.1 does not apply -rtp_buffsize to its -rtp_echo socket (it keeps
    net.core.rmem_default, 208 KiB, about 170 packets), so under load it drops
    packets itself. We borrow the socket with pidfd_getfd(2) and set
    SO_RCVBUFFORCE/SO_SNDBUFFORCE (root), which touches only that socket.
    """
    deadline = time.monotonic() + timeout
    inodes: set[str] = set()
    while time.monotonic() < deadline and not inodes:
        inodes = {inode for inode, (bound, _, _) in read_udp_sockets().items() if bound == port}
        if not inodes:
            time.sleep(0.02)
    targets = []
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(entry)
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            targets.append(int(entry.name))
    if not targets:
        raise RuntimeError(f"no socket of pid {pid} bound to UDP port {port}")
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        result = 0
        for target in targets:
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, target, 0)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "pidfd_getfd")
            with socket.socket(fileno=fd) as borrowed:  # closes only our duplicate
                borrowed.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
                borrowed.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
                result = borrowed.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        return result
    finally:
        os.close(pidfd)


def write_config(path: Path, port_min: int, port_max: int, record: bool | None, nice: int | None = None) -> None:
    # The 440 Hz test-tone line: continuous audio, no IVR prompts or transfers.
    lines = ["routing:", "  default_flow: tone",
             "media:", f"  rtp_port_min: {port_min}", f"  rtp_port_max: {port_max}"]
    if record is not None:
        lines.append(f"  record: {'true' if record else 'false'}")
    # SIPp brings every call from one address: no per-source limit on new calls (sip/ratelimit.py).
    lines += ["server:", "  new_requests_per_source: 0"]
    if nice is not None:
        lines.append(f"  nice: {nice}")
    path.write_text("\n".join(lines) + "\n")


def _wait_for_text(path: Path, text: str, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    output = path.read_text(errors="replace")[-1000:] if path.exists() else ""
    raise RuntimeError(f"{process.args[0]} did not start: {output}")


def _dumpcap_stats(text: str) -> tuple[int, int]:
    """(received, dropped) from dumpcap's closing summary, or (-1, -1)."""
    match = re.search(r"Packets received/dropped on interface .*: (\d+)/(\d+)", text)
    if match is None:
        match = re.search(r"received/dropped[^:]*:\s*(\d+)/(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else (-1, -1)


def _sipp_stats(path: Path) -> tuple[int, int]:
    """(successful, failed) calls from SIPp's -trace_stat CSV."""
    try:
        rows = [line.split(";") for line in path.read_text().splitlines() if line.strip()]
        header, last = rows[0], rows[-1]
        return int(last[header.index("SuccessfulCall(C)")]), int(last[header.index("FailedCall(C)")])
    except (OSError, ValueError, IndexError):
        return -1, -1


def reference_loop_ms(rounds: int = 3) -> float:
    """Best of a few runs of a fixed pure-Python workload.

    This VM's speed drifts between runs (the same N has used 74% and 104% of a
    core); printing this beside each row shows whether a failing row ran on a
    slow host rather than a slower server.
    """
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i & 7
        best = min(best, time.perf_counter() - start)
    return best * 1000


def run_calls(calls: int, args: argparse.Namespace, workdir: Path) -> Row:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    config = workdir / "callbridge.yaml"
    write_config(config, args.rtp_port_min, args.rtp_port_max, args.record, args.nice)
    ramp = calls / args.rate
    hold = ramp + args.window + 2 * args.trim + args.margin
    sipp_timeout = int(hold + ramp + 60)
    rtp_ports = range(args.rtp_port_min, args.rtp_port_max + 1)
    server = sipp = dumpcap = None
    sampler = Sampler()
    row = Row(calls)
    r = row.result
    r.update(hold_s=hold, ramp_s=ramp, reference_ms=reference_loop_ms())
    try:
        server, sip_port, http_port = start_server(workdir, config=config, host="127.0.0.1",
                                                   source=args.server_src)
        media_port = _free_media_port(rtp_ports)
        sipp_port = free_port()
        r["media_port"] = media_port
        sampler.pids["server"] = server.pid
        capture = workdir / "rtp.pcap"
        dumpcap_log = workdir / "dumpcap.log"
        with dumpcap_log.open("w") as log:
            dumpcap = subprocess.Popen(
                ["dumpcap", "-i", "lo", "-f", f"udp port {media_port}", "-s", str(SNAPLEN), "-P",
                 "-B", str(args.capture_buffer), "-q", "-w", str(capture)],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        _wait_for_text(dumpcap_log, "Capturing on", 15, dumpcap)
        sampler.pids["dumpcap"] = dumpcap.pid
        snmp_before = read_snmp_udp()
        sampler.start()
        scenario = workdir / SCENARIO.name
        shutil.copy(SCENARIO, scenario)
        sipp_command = [
            "sipp", f"127.0.0.1:{sip_port}", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(sipp_port),
            "-mi", "127.0.0.1", "-mp", str(media_port), "-rtp_echo", "-rtp_buffsize", str(SIPP_BUFFER),
            "-r", str(args.rate), "-l", str(calls), "-m", str(calls), "-d", str(int(hold * 1000)),
            "-nostdin", "-trace_stat", "-stf", str(workdir / "sipp_stat.csv"), "-fd", "1",
            "-trace_err", "-error_file", str(workdir / "sipp_errors.log"),
            "-timeout", f"{sipp_timeout}s", "-timeout_error"]
        if args.verbose:
            print("  $", " ".join(sipp_command), flush=True)
        with (workdir / "sipp.out").open("w") as out:
            sipp = subprocess.Popen(sipp_command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        sampler.pids["sipp"] = sipp.pid
        try:
            r["sipp_rcvbuf"] = enlarge_socket_buffers(sipp.pid, media_port, SIPP_BUFFER)
        except (OSError, RuntimeError) as exc:
            r["sipp_rcvbuf"] = -1
            print(f"  warning: could not enlarge SIPp's echo socket buffer ({exc}); SIPp may drop packets",
                  file=sys.stderr, flush=True)
        try:
            r["sipp_status"] = sipp.wait(sipp_timeout + 15)
        except subprocess.TimeoutExpired:
            r["sipp_status"] = "timeout"
        time.sleep(0.5)  # last echoes
        sampler.stop()
        snmp_after = read_snmp_udp()
        stop_process(dumpcap, sig=signal.SIGINT)
        r["capture_received"], r["capture_dropped"] = _dumpcap_stats(dumpcap_log.read_text(errors="replace"))
        r["sipp_ok"], r["sipp_failed"] = _sipp_stats(workdir / "sipp_stat.csv")
        try:
            records = get_json(f"http://127.0.0.1:{http_port}/api/calls", token=api_token(workdir)).get("calls", [])
            media = [c.get("media") or {} for c in records]
            r["api_calls"] = len(records)
            r["api_sent"] = sum(m.get("packets_sent", 0) for m in media)
            r["api_received"] = sum(m.get("packets_received", 0) for m in media)
        except (OSError, ValueError, AttributeError) as exc:
            r["api_error"] = str(exc)
        r["snmp_in_errors"] = snmp_after.get("InErrors", 0) - snmp_before.get("InErrors", 0)
        r["snmp_rcvbuf_errors"] = snmp_after.get("RcvbufErrors", 0) - snmp_before.get("RcvbufErrors", 0)
        r["server_rx_drops"], r["server_rxq_max"] = sampler.drops(lambda p: p in rtp_ports or p == sip_port)
        r["sipp_rx_drops"], r["sipp_rxq_max"] = sampler.drops(
            lambda p: p in (media_port, media_port + 2, sipp_port))
        r["capture_mb"] = capture.stat().st_size / 1e6 if capture.exists() else 0.0
        parse_start = time.monotonic()
        packets = read_capture(capture)
        r.update(analyse(packets, media_port, args.rtp_port_min, args.rtp_port_max, calls, args.trim))
        r["analysis_s"] = time.monotonic() - parse_start
        ws, we = r["window_start"], r["window_end"]
        for name in ("server", "sipp", "dumpcap"):
            r[f"{name}_cpu"] = sampler.cpu_percent(name, ws, we)
        r["host_cpu"] = sampler.host_percent(ws, we)
        r["server_rss_mb"] = sampler.rss_at("server", we) / 2**20
    finally:
        # Each step on its own, so one failure cannot leave the others running.
        for cleanup in (lambda: stop_process(sipp, sig=signal.SIGINT),
                        lambda: sampler.stop() if sampler.is_alive() else None,
                        lambda: stop_process(dumpcap, sig=signal.SIGINT),
                        lambda: stop_process(server)):
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - report and go on cleaning up
                print(f"warning: cleanup failed: {exc!r}", file=sys.stderr)
    row.verdict = verdict(row, args)
    return row


def verdict(row: Row, args: argparse.Namespace) -> str:
    r = row.result
    if r.get("capture_dropped", -1) != 0:
        return "INVALID: capture dropped" if r.get("capture_dropped", -1) > 0 else "INVALID: no capture stats"
    reasons = []
    if r.get("sipp_failed", 1) != 0 or r.get("sipp_ok") != row.calls or r.get("concurrent") != row.calls:
        reasons.append("calls")
    if r.get("window_s", 0) < args.window:
        reasons.append("short window")
    if r.get("loss", 1):
        reasons.append("loss")
    if r.get("server_rx_drops", 1):
        reasons.append("server rx drops")
    if not r.get("p99_ms", float("inf")) <= args.max_p99:
        reasons.append("p99")
    return "PASS" if not reasons else "FAIL: " + ", ".join(reasons)


# --------------------------------------------------------------------------- output

HEADER = (f"{'N':>5} {'win s':>6} {'packets':>9} {'p50':>6} {'p99':>6} {'p99.9':>6} {'max':>7} "
          f"{'seqgap':>6} {'noecho':>6} {'drop srv/sipp/all':>17} {'srv CPU%':>8} {'sipp%':>6} {'RSS MB':>7}  verdict")


def format_row(row: Row) -> str:
    r = row.result
    drops = f"{r.get('server_rx_drops', -1)}/{r.get('sipp_rx_drops', -1)}/{r.get('snmp_rcvbuf_errors', -1)}"
    return (f"{row.calls:>5} {r.get('window_s', 0):>6.1f} {r.get('packets', 0):>9} "
            f"{r.get('p50_ms', float('nan')):>6.1f} "
            f"{r.get('p99_ms', float('nan')):>6.1f} {r.get('p999_ms', float('nan')):>6.1f} "
            f"{r.get('max_ms', float('nan')):>7.1f} {r.get('seq_missing', -1):>6} {r.get('not_echoed', -1):>6} "
            f"{drops:>17} {r.get('server_cpu', float('nan')):>8.1f} {r.get('sipp_cpu', float('nan')):>6.1f} "
            f"{r.get('server_rss_mb', float('nan')):>7.1f}  {row.verdict}")


def _format_stalls(stalls: list[dict], shown: int = 6) -> str:
    if not stalls:
        return ""
    text = ", ".join(f"{s['at_s']:.1f} s: {s['streams']} streams up to {s['max_ms']:.0f} ms" for s in stalls[:shown])
    return f" ({text}{', ...' if len(stalls) > shown else ''}; times from window start)"


def format_details(row: Row) -> str:
    r = row.result
    return (f"      calls ok/failed {r.get('sipp_ok')}/{r.get('sipp_failed')} (sipp exit {r.get('sipp_status')}), "
            f"streams {r.get('streams')}, max concurrent {r.get('concurrent')}; "
            f"ts jumps {r.get('ts_jumps')}, dup/reordered {r.get('seq_duplicate')}/{r.get('seq_reordered')}\n"
            f"      gaps >= 40 ms: {r.get('late_40ms')} in {len(r.get('stalls', []))} stalls"
            f"{_format_stalls(r.get('stalls', []))}\n"
            f"      echo delay p50/p99/max {r.get('echo_p50_ms', float('nan')):.2f}/"
            f"{r.get('echo_p99_ms', float('nan')):.2f}/"
            f"{r.get('echo_max_ms', float('nan')):.1f} ms; rx queue max srv/sipp {r.get('server_rxq_max')}/"
            f"{r.get('sipp_rxq_max')} B; SIPp echo SO_RCVBUF {r.get('sipp_rcvbuf', -1) / 2**20:.0f} MiB; "
            f"Udp InErrors {r.get('snmp_in_errors')}\n"
            f"      capture: {r.get('capture_received')} received, {r.get('capture_dropped')} dropped, "
            f"{r.get('capture_mb', 0):.0f} MB, {r.get('server_packets_total')} sent/"
            f"{r.get('echo_packets_total')} echoed "
            f"seen in all; dumpcap CPU {r.get('dumpcap_cpu', float('nan')):.1f}%, host busy "
            f"{r.get('host_cpu', float('nan')):.0f}% of {100 * (os.cpu_count() or 1)}%\n"
            f"      server API: {r.get('api_calls')} calls, sent {r.get('api_sent')}, received {r.get('api_received')}"
            f"{'  ERROR ' + r['api_error'] if 'api_error' in r else ''}; hold {r.get('hold_s', 0):.0f} s; "
            f"host speed: reference loop {r.get('reference_ms', float('nan')):.0f} ms (lower is faster)")


def ensure_socket_buffers() -> list[tuple[str, int]]:
    """SIPp's -rtp_buffsize is capped by net.core.{r,w}mem_max: raise them if lower. Returns old values."""
    changed = []
    for key in ("net.core.rmem_max", "net.core.wmem_max"):
        path = Path("/proc/sys") / key.replace(".", "/")
        old = int(path.read_text())
        if old < SIPP_BUFFER:
            path.write_text(str(SIPP_BUFFER))
            print(f"raised {key} from {old} to {SIPP_BUFFER} for this run (restored at exit)", flush=True)
            changed.append((key, old))
    return changed


def restore_socket_buffers(changed: list[tuple[str, int]]) -> None:
    for key, old in changed:
        (Path("/proc/sys") / key.replace(".", "/")).write_text(str(old))
        print(f"restored {key} to {old}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 200, 300, 400, 500, 600],
                        help="concurrent call counts to try, each with a fresh server")
    parser.add_argument("--window", type=float, default=40.0,
                        help="seconds all calls are up together (>= 40 for the target)")
    parser.add_argument("--rate", type=float, default=50.0, help="call setup rate while ramping up (calls/s)")
    parser.add_argument("--trim", type=float, default=2.0, help="seconds cut from each end of the steady window")
    parser.add_argument("--margin", type=float, default=3.0, help="extra hold seconds beyond ramp + window + 2*trim")
    parser.add_argument("--max-p99", type=float, default=25.0, help="p99 send spacing limit for PASS (ms)")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=None,
                        help="write media.record: true/false into the server config (default: leave it out)")
    parser.add_argument("--nice", type=int, default=None,
                        help="server.nice for the server (e.g. -10: scheduled ahead of SIPp and dumpcap)")
    parser.add_argument("--rtp-port-min", type=int, default=RTP_PORT_MIN)
    parser.add_argument("--rtp-port-max", type=int, default=RTP_PORT_MAX)
    parser.add_argument("--server-src", type=Path,
                        help="run the server from this source tree (the directory holding callbridge/), "
                             "e.g. `git archive HEAD src | tar -x -C /tmp/head` then /tmp/head/src")
    parser.add_argument("--capture-buffer", type=int, default=64, help="dumpcap kernel buffer, MiB")
    parser.add_argument("--quick", action="store_true", help="smoke test: 20 calls, 10 s window")
    parser.add_argument("--stop-on-fail", action="store_true", help="stop at the first N that does not pass")
    parser.add_argument("--keep", type=Path, help="keep captures and logs under this directory")
    parser.add_argument("--json", type=Path, help="also write all results as JSON here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.window = [20], 10.0
    for tool in ("sipp", "dumpcap"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install sip-tester tshark)")
    if os.geteuid() != 0:
        sys.exit("run as root: dumpcap captures on lo and the socket buffer sysctls may need raising")
    changed = ensure_socket_buffers()
    keep = args.keep
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="rtp_echo_")
    base = keep if keep else Path(tmp.name)
    rows: list[Row] = []
    try:
        print(f"one callbridge process; SIPp -rtp_echo -rtp_buffsize {SIPP_BUFFER}; ramp {args.rate:g} calls/s; "
              f"window {args.window:g} s (+{args.trim:g} s trimmed each end); spacing in ms; "
              f"CPU 100% = one core of {os.cpu_count()}", flush=True)
        print(HEADER, flush=True)
        for calls in args.calls:
            try:
                row = run_calls(calls, args, base / f"n{calls}")
            except RuntimeError as exc:
                message = str(exc)
                if args.record is not None and "record" in message:
                    print(f"the server rejected media.record (not merged yet?): {message}", file=sys.stderr)
                    sys.exit(2)
                print(f"{calls:>5} error: {message}", flush=True)
                row = Row(calls, verdict=f"ERROR: {message[:200]}")
                rows.append(row)
                if args.stop_on_fail:
                    break
                continue
            rows.append(row)
            print(format_row(row), flush=True)
            print(format_details(row), flush=True)
            if row.verdict != "PASS" and args.stop_on_fail:
                break
        passing = [row.calls for row in rows if row.verdict == "PASS"]
        if passing:
            best = max(passing)
            r = next(row.result for row in rows if row.calls == best)
            print(f"\nlargest passing N: {best} calls (p99 spacing {r['p99_ms']:.1f} ms, server CPU "
                  f"{r['server_cpu']:.0f}% of one core, RSS {r['server_rss_mb']:.0f} MB)")
        else:
            print("\nno N passed")
        if args.json:
            args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2, default=str))
        if keep:
            print(f"captures and logs kept in {keep}")
    finally:
        if tmp is not None:
            tmp.cleanup()
        restore_socket_buffers(changed)


if __name__ == "__main__":
    main()
