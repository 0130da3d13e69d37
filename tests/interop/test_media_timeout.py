"""media.media_timeout_s against a real server and SIPp: a caller gone silent gets a BYE, a talking one does not.

Measured at the far side: SIPp's scenario requires the server's BYE (or, for the talking caller, the 200
to its own BYE, which a server that hung up first could not give), and the wait is timed from outside.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import numpy as np
import pytest

from callbridge.media.codecs import codec_for

from .conftest import free_udp_block, run_sipp
from .worker_peers import finished, healthz, sipp_args, sipp_started, workdir

pytestmark = pytest.mark.interop

TIMEOUT_S = 2.0
CHECK_INTERVAL_S = 1.0  # call/media_watchdog.py: half the timeout, at most 5 s


def config(rtp_low: int) -> str:
    return (f"media:\n  media_timeout_s: {TIMEOUT_S}\n  rtp_port_min: {rtp_low}\n  rtp_port_max: {rtp_low + 4}\n"
            "  record: false\n")


def record_of(server) -> dict:
    (call,) = server.get("/api/calls")["calls"]
    return server.get(f"/api/calls/{call['id']}")


class StraySender:
    """Valid-looking RTP at the server's ports from a stranger: a new SSRC each packet, so no run ever forms."""

    def __init__(self, ports: range) -> None:
        self.ports, self.sent = ports, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            while not self._stop.wait(0.02) and self.sent < 2000:  # bounded: at most 2000 packets
                for port in self.ports:
                    header = struct.pack("!BBHII", 0x80, 0, random.getrandbits(16), random.getrandbits(32),
                                         random.getrandbits(32))
                    sock.sendto(header + b"\xff" * 160, ("127.0.0.1", port))
                    self.sent += 1

    def __enter__(self) -> StraySender:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_a_caller_that_sends_no_rtp_gets_a_bye_and_stray_packets_do_not_keep_it_up(server_factory, tmp_path):
    rtp_low = free_udp_block(6)
    server = server_factory(config(rtp_low))
    caller = sipp_started(server, tmp_path, "silent", scenario="uac_wait_bye.xml")
    try:
        server.wait_for(lambda: healthz(server)[1].get("active_calls") == 1, timeout=15, what="the call up")
        up = time.monotonic()
        with StraySender(range(rtp_low, rtp_low + 4)) as stray:
            code, output = finished(caller, timeout=TIMEOUT_S + CHECK_INTERVAL_S + 15)
        waited = time.monotonic() - up
    finally:
        if caller.poll() is None:
            caller.kill()
    assert code == 0, output  # the scenario requires the server's BYE
    assert stray.sent > 0
    assert TIMEOUT_S - 0.5 <= waited <= TIMEOUT_S + CHECK_INTERVAL_S + 3, waited
    record = server.wait_for(lambda: (r := record_of(server))["status"] == "hangup" and r, what="the record")
    assert record["end_reason"] == "media_timeout", record
    (timed_out,) = [e for e in record["events"] if e["type"] == "media_timeout"]
    assert TIMEOUT_S <= timed_out["silent_s"] <= TIMEOUT_S + CHECK_INTERVAL_S + 1, timed_out


def test_a_caller_sending_rtp_outlives_the_timeout_and_hangs_up_itself(server_factory, tmp_path):
    server = server_factory(config(free_udp_block(6)))
    cwd = workdir(tmp_path, "talking")
    # 6 s of a 300 Hz tone as raw mu-law, streamed while the call stays up 5 s: three timeouts' worth.
    tone = (np.sin(2 * np.pi * 300 * np.arange(6 * 8000) / 8000) * 8000).astype(np.int16)
    (cwd / "caller.ulaw").write_bytes(codec_for("PCMU", 8000)().encode(tone))
    result = run_sipp(sipp_args(server, scenario="uac_audio.xml", extra=["-mp", str(free_udp_block(4)),
                                                                          "-d", "5000"]), cwd=cwd, timeout=30)
    assert result.returncode == 0, result.output  # its own BYE was answered 200: the call was still up
    record = server.wait_for(lambda: (r := record_of(server))["status"] == "hangup" and r, what="the record")
    assert record["end_reason"] == "caller_hangup", record
    assert not [e for e in record["events"] if e["type"] == "media_timeout"], record["events"]
    assert record["duration_s"] >= 4.5, record
