"""INVITE flood from one address while live calls talk: does callbridge shed the load?

One command starts a fresh ``callbridge serve`` (the 440 Hz tone line), sets
up --live calls from 127.0.0.1 with a small Python UA (INVITE, 200, ACK), and
sends PCMU both ways, 20 ms a packet. Then a separate process floods
INVITEs (unique Call-IDs, an SDP offer each, never ACKed) from 127.0.0.2 at
--rate per second for --seconds. Everything is measured from outside:

- live audio: the server's RTP packets received on the live callers' own
  sockets during the flood (percent of 50/s per call) and the p99 gap
  between consecutive packets of each call, timestamped at receipt;
- the server's RSS (/proc/<pid>/status) before, at the peak and after the
  flood (polling up to --settle seconds for /healthz active_calls to fall
  back to the live calls);
- flood responses by status, what is left in data/recordings, stuck calls;
- server log lines written during the flood.

    .venv/bin/python bench/flood.py                      # 10 live calls, 1,500/s for 10 s
    .venv/bin/python bench/flood.py --source /tmp/old/src   # the same against another tree

PASS = live audio >= 97 %, p99 gap <= 25 ms, RSS back within 25 %, no flood
call left and no flood recording left. ``--json`` prints the figures as JSON
(the interop test uses that).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import get_json, rss_bytes, start_server, stop_process

FRAME_S = 0.020
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value
PCMU_SILENCE = b"\xff" * 160
TONE_CONFIG = "routing:\n  default_flow: tone\n"
LIVE_HOST, FLOOD_HOST = "127.0.0.1", "127.0.0.2"


def sdp(host: str, port: int) -> str:
    return (f"v=0\r\no=live 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def invite(sip_port: int, host: str, local_port: int, call_id: str, rtp_port: int, tag: str) -> bytes:
    body = sdp(host, rtp_port)
    return (f"INVITE sip:live@127.0.0.1:{sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{local_port};branch=z9hG4bK{call_id};rport\r\n"
            f"From: <sip:caller@{host}>;tag={tag}\r\nTo: <sip:live@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{host}:{local_port}>\r\n"
            f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()


def in_dialog(method: str, sip_port: int, local_port: int, call_id: str, tag: str, to: str, cseq: int) -> bytes:
    return (f"{method} sip:live@127.0.0.1:{sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LIVE_HOST}:{local_port};branch=z9hG4bK{method}{cseq}{call_id}\r\n"
            f"From: <sip:caller@{LIVE_HOST}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def header(message: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(.*?)\r?$", message, re.MULTILINE | re.IGNORECASE)
    return match.group(1) if match else ""


@dataclass
class LiveCall:
    call_id: str
    tag: str
    rtp: socket.socket
    to: str = ""
    server_rtp: int = 0
    received: list[float] = field(default_factory=list)


class LiveCalls:
    """N calls from one SIP socket on 127.0.0.1, each with its own RTP socket; RTP both ways."""

    def __init__(self, sip_port: int, count: int) -> None:
        self.sip_port = sip_port
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((LIVE_HOST, 0))
        self.local_port = self.sip.getsockname()[1]
        self.calls: list[LiveCall] = []
        for i in range(count):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind((LIVE_HOST, 0))
            rtp.setblocking(False)
            # Kernel receive timestamps: the gaps are the server's, not this script's thread scheduling.
            rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.calls.append(LiveCall(f"live-{i}-{random.getrandbits(32):x}", f"lt{i}", rtp))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def connect(self, timeout: float = 10.0) -> None:
        pending = {c.call_id: c for c in self.calls}
        for c in self.calls:
            self.sip.sendto(invite(self.sip_port, LIVE_HOST, self.local_port, c.call_id, c.rtp.getsockname()[1], c.tag),
                            ("127.0.0.1", self.sip_port))
        deadline = time.monotonic() + timeout
        self.sip.settimeout(0.5)
        while pending and time.monotonic() < deadline:
            try:
                data = self.sip.recv(65535).decode(errors="replace")
            except TimeoutError:
                continue
            if not data.startswith("SIP/2.0 200"):
                continue
            call = pending.pop(header(data, "Call-ID"), None)
            if call is None:
                continue
            call.to = header(data, "To")
            call.server_rtp = int(re.search(r"m=audio (\d+)", data).group(1))
            self.sip.sendto(in_dialog("ACK", self.sip_port, self.local_port, call.call_id, call.tag, call.to, 1),
                            ("127.0.0.1", self.sip_port))
        if pending:
            raise RuntimeError(f"{len(pending)} live calls were not answered")

    def start_media(self) -> None:
        for target in (self._send, self._receive):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _send(self) -> None:
        seq, next_at = 0, time.monotonic()
        while not self._stop.is_set():
            header_ = bytes([0x80, 0]) + (seq & 0xFFFF).to_bytes(2, "big") + (seq * 160 & 0xFFFFFFFF).to_bytes(4, "big")
            for i, c in enumerate(self.calls):
                c.rtp.sendto(header_ + (0x11110000 + i).to_bytes(4, "big") + PCMU_SILENCE, ("127.0.0.1", c.server_rtp))
            seq += 1
            next_at += FRAME_S
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _receive(self) -> None:
        by_socket = {c.rtp: c for c in self.calls}
        while not self._stop.is_set():
            readable, _, _ = select.select(list(by_socket), [], [], 0.05)
            for sock in readable:
                while True:
                    try:
                        data, ancillary, _, _ = sock.recvmsg(2048, 64)
                    except BlockingIOError:
                        break
                    if len(data) >= 12 and data[1] & 0x7F == 0:  # PCMU, not RTCP
                        by_socket[sock].received.append(kernel_time(ancillary))

    def hang_up(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        for c in self.calls:
            self.sip.sendto(in_dialog("BYE", self.sip_port, self.local_port, c.call_id, c.tag, c.to, 2),
                            ("127.0.0.1", self.sip_port))
            c.rtp.close()

    def audio(self, since: float, until: float) -> tuple[float, float]:
        """(percent of expected packets received, p99 gap in ms) over [since, until]."""
        expected = (until - since) / FRAME_S * len(self.calls)
        got, gaps = 0, []
        for c in self.calls:
            times = [t for t in c.received if since <= t <= until]
            got += len(times)
            gaps += [b - a for a, b in zip(times, times[1:], strict=False)]
        gaps.sort()
        p99 = gaps[int(len(gaps) * 0.99)] * 1000 if gaps else float("inf")
        return 100.0 * got / expected if expected else 0.0, p99


def kernel_time(ancillary: list) -> float:
    """The SCM_TIMESTAMPNS of a datagram (CLOCK_REALTIME, like time.time()), else now."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack("qq", data[:16])
            return seconds + nanoseconds / 1e9
    return time.time()


def flood(sip_port: int, rate: float, seconds: float) -> None:
    """The flooder (a separate process): INVITEs from FLOOD_HOST, never ACKed; prints counts as JSON."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((FLOOD_HOST, 0))
    sock.setblocking(False)
    local_port = sock.getsockname()[1]
    statuses: dict[str, int] = {}
    sent, start = 0, time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end + 2.0:
        due = int((min(now, end) - start) * rate)
        while sent < due:
            call_id = f"flood-{sent}-{os.getpid()}"
            try:
                sock.sendto(invite(sip_port, FLOOD_HOST, local_port, call_id, 40000, f"f{sent}"),
                            ("127.0.0.1", sip_port))
            except BlockingIOError:
                pass
            sent += 1
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            status = data[8:11].decode(errors="replace") if data.startswith(b"SIP/2.0 ") else "request"
            statuses[status] = statuses.get(status, 0) + 1
        time.sleep(0.002)
    print(json.dumps({"sent": sent, "responses": statuses}))


@dataclass
class Result:
    label: str
    live_calls: int
    flood_rate: float
    flood_seconds: float
    flood_sent: int = 0
    flood_responses: dict = field(default_factory=dict)
    audio_percent: float = 0.0
    p99_gap_ms: float = 0.0
    baseline_p99_gap_ms: float = 0.0  # the same calls in the seconds before the flood: the machine's noise
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    active_after_flood: int = 0
    settle_seconds: float = 0.0
    active_after_hangup: int = 0
    recordings_left: int = 0
    recordings_mb: float = 0.0
    log_lines_during_flood: int = 0
    rss_after_each_round_mb: list = field(default_factory=list)
    health_after_flood: dict = field(default_factory=dict)
    log_has_traceback: bool = False

    @property
    def passed(self) -> bool:
        return (self.audio_percent >= 97.0 and self.p99_gap_ms <= 25.0
                and self.rss_after_mb <= self.rss_before_mb * 1.25
                and self.active_after_flood <= self.live_calls and self.active_after_hangup == 0
                and self.recordings_left <= self.live_calls)


def recordings(data_dir: Path) -> tuple[int, int]:
    files = list((data_dir / "recordings").glob("*.wav")) if (data_dir / "recordings").exists() else []
    return len(files), sum(f.stat().st_size for f in files if f.exists())


def run(args: argparse.Namespace) -> Result:
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="flood-"))
    config = workdir / "callbridge.yaml"
    config.write_text(TONE_CONFIG + (args.extra_config or ""))
    process, sip_port, http_port = start_server(workdir, config=config, source=args.source, log_level="info",
                                                timeout=90)
    result = Result(args.label, args.live, args.rate, args.seconds)
    log_path = workdir / "server.log"
    health = lambda: get_json(f"http://127.0.0.1:{http_port}/healthz")  # noqa: E731
    live = LiveCalls(sip_port, args.live)
    try:
        live.connect()
        live.start_media()
        quiet_from = time.time() + 0.5
        time.sleep(args.baseline)
        result.baseline_p99_gap_ms = live.audio(quiet_from, time.time())[1]
        result.rss_before_mb = rss_bytes(process.pid) / 1e6
        log_before = len(log_path.read_text(errors="replace").splitlines())
        peak = 0.0
        for _ in range(args.rounds):
            flooder = subprocess.Popen([sys.executable, __file__, "--flood-only", str(sip_port), str(args.rate),
                                        str(args.seconds)], stdout=subprocess.PIPE, text=True)
            since = time.time()
            while flooder.poll() is None:
                peak = max(peak, rss_bytes(process.pid) / 1e6)
                time.sleep(0.2)
            until = since + args.seconds
            counts = json.loads(flooder.stdout.read() or "{}")
            result.flood_sent += counts.get("sent", 0)
            for status, n in counts.get("responses", {}).items():
                result.flood_responses[status] = result.flood_responses.get(status, 0) + n
            percent, p99 = live.audio(since + 0.5, until)
            result.audio_percent = min(percent, result.audio_percent or 100.0)
            result.p99_gap_ms = max(p99, result.p99_gap_ms)
            result.log_lines_during_flood = len(log_path.read_text(errors="replace").splitlines()) - log_before
            settle_start = time.monotonic()
            while time.monotonic() - settle_start < args.settle:
                peak = max(peak, rss_bytes(process.pid) / 1e6)
                if health()["active_calls"] <= args.live:
                    break
                time.sleep(0.5)
            result.settle_seconds = time.monotonic() - settle_start
            result.active_after_flood = health()["active_calls"]
            time.sleep(2.0)
            result.rss_after_mb = rss_bytes(process.pid) / 1e6
            result.rss_after_each_round_mb.append(round(result.rss_after_mb, 1))
        result.health_after_flood = health()
        result.rss_peak_mb = peak
        live.hang_up()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and health()["active_calls"]:
            time.sleep(0.2)
        result.active_after_hangup = health()["active_calls"]
        time.sleep(1.5)  # the recorder's last flush
        count, size = recordings(workdir / "data")
        result.recordings_left, result.recordings_mb = count, size / 1e6
    finally:
        stop_process(process)
        result.log_has_traceback = "Traceback" in log_path.read_text(errors="replace")
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return result


def table(results: list[Result]) -> str:
    rows = ["| tree | flood | sent | responses | live audio % | p99 gap ms (before flood) | RSS before/peak/after MB | "
            "calls left (settle s) | recordings left (MB) | log lines | pass |",
            "|---|---|---:|---|---:|---:|---|---|---|---:|---|"]
    for r in results:
        responses = ", ".join(f"{k}:{v}" for k, v in sorted(r.flood_responses.items()))
        rows.append(f"| {r.label} | {r.flood_rate:.0f}/s x {r.flood_seconds:.0f} s | {r.flood_sent} | {responses} | "
                    f"{r.audio_percent:.1f} | {r.p99_gap_ms:.1f} ({r.baseline_p99_gap_ms:.1f}) | "
                    f"{r.rss_before_mb:.0f}/{r.rss_peak_mb:.0f}/"
                    f"{r.rss_after_mb:.0f} | {r.active_after_flood} ({r.settle_seconds:.0f}) | "
                    f"{r.recordings_left} ({r.recordings_mb:.1f}) | {r.log_lines_during_flood} | "
                    f"{'PASS' if r.passed else 'FAIL'} |")
    return "\n".join(rows)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--flood-only":
        flood(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", type=int, default=10, help="live calls with audio both ways")
    parser.add_argument("--rate", type=float, default=1500.0, help="flood INVITEs per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="flood duration")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of live calls measured before the flood")
    parser.add_argument("--rounds", type=int, default=1, help="floods, one after another (a leak grows each time)")
    parser.add_argument("--settle", type=float, default=40.0, help="how long to wait for flood calls to end")
    parser.add_argument("--source", type=Path, help="run the server from this tree (a dir holding callbridge/)")
    parser.add_argument("--label", default="this tree")
    parser.add_argument("--extra-config", help="YAML appended to the config")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps({**asdict(result), "passed": result.passed}))
    else:
        print(table([result]))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
