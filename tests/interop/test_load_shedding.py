"""Load shedding against a real server process (issue 15 finding 7), measured from outside.

- An INVITE flood from one address (1,500/s for 10 s from 127.0.0.2, never ACKed) while 10 live
  calls send and receive audio (bench/flood.py): the live calls keep their audio, the server's
  memory comes back, no flood call stays and no flood recording is left.
- A TCP peer dripping one byte every 2 s, and one that never says anything, are closed.
- Too many header lines / Vias are answered 513 / 483.
- Thousands of bad datagrams leave a few summary lines in the log, not one line each.
- Recordings past the retention period or over the quota are deleted.

Against HEAD before the change (``git archive HEAD src | tar -x -C /tmp/old``, then
``bench/flood.py --source /tmp/old/src``) the flood left 33 % of the live audio, a p99 gap of
150 ms, RSS +128 % and 848 recordings; the other tests fail on it as their messages say.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import wave
from pathlib import Path

import pytest

from .conftest import TONE_LINE, start_server, stop_server

pytestmark = pytest.mark.interop

BENCH = Path(__file__).resolve().parents[2] / "bench"
SLOW_MESSAGE_DEADLINE = 20.0  # sip/transport.py MESSAGE_TIMEOUT and FIRST_MESSAGE_TIMEOUT


def flood_bench():
    sys.path.insert(0, str(BENCH))
    try:
        import flood  # bench/flood.py
    finally:
        sys.path.remove(str(BENCH))
    return flood


def test_invite_flood_spares_live_calls_and_leaves_nothing_behind():
    flood = flood_bench()
    args = argparse.Namespace(live=10, rate=1500.0, seconds=10.0, settle=40.0, baseline=4.0, rounds=1, source=None,
                              label="test", extra_config=None, keep=False)
    result = flood.run(args)
    summary = json.dumps(vars(result), default=str)
    assert result.flood_sent >= 14_000, summary
    # The flood was shed: a few 503s, most never answered, far fewer calls than INVITEs.
    assert 1 <= result.flood_responses.get("503", 0) <= 20, summary
    assert result.flood_responses.get("100", 0) <= 300, summary
    # Live audio, counted on the callers' own sockets with kernel timestamps.
    assert result.audio_percent >= 97.0, summary
    # 25 ms, unless this shared machine's own jitter (the same calls just before the flood) is
    # already near it: then no more than 5 ms worse than that.
    assert result.p99_gap_ms <= max(25.0, result.baseline_p99_gap_ms + 5.0), summary
    assert result.rss_after_mb <= result.rss_before_mb * 1.25, summary
    assert result.active_after_flood == 10 and result.active_after_hangup == 0, summary
    assert result.health_after_flood["calls_in_memory"] <= 10, summary
    assert result.recordings_left == 10, summary  # the live calls' own; none for the flood
    assert not result.log_has_traceback, summary


@pytest.fixture
def tone_server(tmp_path):
    running = start_server(tmp_path, TONE_LINE)
    yield running
    stop_server(running)


def test_slow_drip_and_silent_tcp_connections_are_closed(tone_server):
    drip = socket.create_connection(("127.0.0.1", tone_server.sip_port))
    silent = socket.create_connection(("127.0.0.1", tone_server.sip_port))
    for sock in (drip, silent):
        sock.setblocking(False)
    message = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK-drip\r\n"
    started = time.monotonic()
    closed: dict[str, float] = {}
    sent = 0
    while len(closed) < 2 and time.monotonic() - started < SLOW_MESSAGE_DEADLINE + 10:
        for name, sock in (("drip", drip), ("silent", silent)):
            if name in closed:
                continue
            try:
                if sock.recv(100) == b"":
                    closed[name] = time.monotonic() - started
            except BlockingIOError:
                pass
            except ConnectionError:
                closed[name] = time.monotonic() - started
        if "drip" not in closed and time.monotonic() - started >= sent * 2.0:
            try:
                drip.send(message[sent:sent + 1])  # one byte every 2 s: the idle timer never fires
                sent += 1
            except (BlockingIOError, ConnectionError):
                closed.setdefault("drip", time.monotonic() - started)
        time.sleep(0.1)
    drip.close()
    silent.close()
    assert "drip" in closed, f"a connection dripping a byte every 2 s stayed open {time.monotonic() - started:.0f} s"
    assert "silent" in closed, "a connection that never sent a message stayed open"
    assert SLOW_MESSAGE_DEADLINE - 1 <= closed["drip"] <= SLOW_MESSAGE_DEADLINE + 3, closed
    assert SLOW_MESSAGE_DEADLINE - 1 <= closed["silent"] <= SLOW_MESSAGE_DEADLINE + 3, closed


def options(extra: str, branch: str) -> bytes:
    return (f"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{{port}};branch=z9hG4bK-{branch};rport\r\n"
            f"{extra}From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: {branch}@t\r\n"
            f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def ask(server, extra: str, branch: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(3)
        sock.sendto(options(extra, branch).format(port=sock.getsockname()[1]).encode(),
                    ("127.0.0.1", server.sip_port))
        return int(sock.recv(65535).split(b" ", 2)[1])


def test_header_and_via_caps_are_answered(tone_server):
    assert ask(tone_server, "", "plain") == 200
    assert ask(tone_server, "".join(f"X-Pad-{i}: {i}\r\n" for i in range(400)), "headers") == 513
    vias = "".join(f"Via: SIP/2.0/UDP 10.0.0.{i % 250}:5060;branch=z9hG4bK-hop{i}\r\n" for i in range(100))
    assert ask(tone_server, vias, "vias") == 483
    assert ask(tone_server, "", "after") == 200  # still serving


def test_bad_datagrams_leave_a_few_summary_lines(tone_server):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.3", 0))
    in_dialog_garbage = (b"BYE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:9;branch=z9hG4bK-g\r\n"
                         b"To: <sip:x@127.0.0.1>;tag=t\r\nFrom: <sip:a@b>;tag=f\r\nCall-ID: g\r\nCSeq: x BYE\r\n\r\n")
    for n in range(2000):
        sock.sendto(b"\x16\x03\x01\x00garbage %d\r\n\r\n" % n, ("127.0.0.1", tone_server.sip_port))
        sock.sendto(in_dialog_garbage, ("127.0.0.1", tone_server.sip_port))
        if n % 200 == 0:
            time.sleep(0.02)
    sock.close()
    time.sleep(1.0)
    assert ask(tone_server, "", "alive") == 200
    lines = [line for line in tone_server.log_path.read_text(errors="replace").splitlines() if "127.0.0.3" in line]
    assert 1 <= len(lines) <= 6, f"{len(lines)} log lines for 4,000 bad datagrams:\n" + "\n".join(lines[:10])


def write_wav(path: Path, seconds: float, age_days: float) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0" * int(seconds * 8000) * 4)
    stamp = time.time() - age_days * 86400
    import os

    os.utime(path, (stamp, stamp))


def test_recordings_past_retention_or_quota_are_deleted(tmp_path):
    recordings = tmp_path / "data" / "recordings"
    recordings.mkdir(parents=True)
    write_wav(recordings / "ancient.wav", 1, age_days=10)
    for i in range(5):  # 5 x 320 kB, the oldest first
        write_wav(recordings / f"recent{i}.wav", 10, age_days=1 - i * 0.1)
    config = TONE_LINE + "media:\n  recordings_retention_days: 7\n  recordings_max_bytes: 1000000\n"
    server = start_server(tmp_path, config)
    try:
        def left() -> list[str]:
            return sorted(p.name for p in recordings.glob("*.wav"))

        # One sweep deletes a file at a time, oldest first: wait for where it ends, then check it stopped there.
        expected = ["recent2.wav", "recent3.wav", "recent4.wav"]  # 960 kB fit in 1 MB
        server.wait_for(lambda: left() == expected, timeout=10, what=f"retention and quota to leave {expected}")
        time.sleep(0.5)
        assert left() == expected
    finally:
        stop_server(server)
