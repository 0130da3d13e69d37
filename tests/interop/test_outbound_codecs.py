"""Outbound INVITEs offer the configured codecs in the configured order, and the call runs on the answer's.

The server is configured with codecs [G722, PCMA, PCMU]. A SIPp callee that speaks only G.722 checks
the offer it received ("9 8 0 101", G722/8000) and answers with PT 9 alone; the test's RTP socket (the
callee's media address in that answer) keeps what the server sends, and in-band digits sent through
the API must come out of it, decoded as 16 kHz G.722, as the digits pressed.
"""

from __future__ import annotations

import re
import subprocess
import time
from itertools import pairwise

import G722
import numpy as np
import pytest

from . import media_assets as ma
from .conftest import SCENARIOS, free_port, require_tool, sipp_log, sipp_messages
from .rtp_capture import RtpCapture

pytestmark = pytest.mark.interop

CODECS_CONFIG = "media:\n  codecs: [G722, PCMA, PCMU]\n"
EXPECTED_FORMATS = "9 8 0 101"  # G722, PCMA, PCMU by static PT (RFC 3551 §6), then telephone-event
G722_PT = 9
G722_RATE = 16000  # audio rate; the RTP clock stays 8000 (RFC 3551 §4.5.2)
FRAME_BYTES = 160  # 20 ms at 64 kbit/s
FRAME_TICKS = 160  # 20 ms at the 8000 Hz RTP clock
DIGITS = "159"
TALK_MS = 5000


def test_outbound_offer_follows_the_configured_codecs_and_media_uses_the_answer(server_factory, tmp_path):
    uas_port = free_port()
    server = server_factory(CODECS_CONFIG)
    capture = RtpCapture()
    command = [require_tool("sipp"), "-sf", str(SCENARIOS / "outbound_g722_callee.xml"), "-i", "127.0.0.1",
               "-p", str(uas_port), "-m", "1", "-set", "rtp_port", str(capture.port), "-d", str(TALK_MS),
               "-trace_msg", "-trace_err", "-nostdin", "-timeout", "40", "-timeout_error"]
    with (tmp_path / "sipp.out").open("w") as out:
        callee = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)  # let SIPp bind
        status, body = server.post("/api/calls", {"to": f"sip:callee@127.0.0.1:{uas_port}"})
        assert status == 201, body
        call_id = body["id"]
        server.wait_for(lambda: callee.poll() is not None or server.get(f"/api/calls/{call_id}")["status"] == "active",
                        timeout=10, what="the G.722 callee to answer")
        assert callee.poll() is None, f"the callee gave up on our INVITE:\n{sipp_log(tmp_path)}"
        time.sleep(0.5)
        status, body = server.post(f"/api/calls/{call_id}/dtmf", {"digits": DIGITS})
        assert status == 202, body
        callee.wait(timeout=TALK_MS / 1000 + 30)
    finally:
        if callee.poll() is None:
            callee.kill()
            callee.wait()
        capture.close()
    # The scenario's own checks: the offer listed exactly 9 8 0 101, with G722/8000.
    assert callee.returncode == 0, sipp_log(tmp_path) + server.log_tail()

    # What SIPp received, from its message trace: the INVITE's SDP in the configured order.
    trace = sipp_messages(tmp_path)
    invite = trace[trace.index("INVITE sip:"):]
    invite = invite[:invite.index("SIP/2.0 180")]
    assert re.search(rf"^m=audio \d+ RTP/AVP {EXPECTED_FORMATS}\r?$", invite, re.MULTILINE), invite
    rtpmaps = re.findall(r"^a=rtpmap:(\d+) (\S+)\r?$", invite, re.MULTILINE)
    assert rtpmaps == [("9", "G722/8000"), ("8", "PCMA/8000"), ("0", "PCMU/8000"), ("101", "telephone-event/8000")]

    # What the callee's media port received: G.722 only, 20 ms frames on the 8000 Hz clock.
    packets = sorted(capture.packets, key=lambda p: p.sequence)
    assert len(packets) > 0.6 * TALK_MS / 20, f"only {len(packets)} RTP packets"
    assert {p.payload_type for p in packets} == {G722_PT}, sorted({p.payload_type for p in packets})
    assert all(len(p.payload) == FRAME_BYTES for p in packets)
    steps = {(b.timestamp - a.timestamp) % 2 ** 32 for a, b in pairwise(packets)
             if b.sequence == (a.sequence + 1) % 2 ** 16}
    assert steps == {FRAME_TICKS}, steps
    # The digits went in-band (the answer had no telephone-event), so decoding the stream as
    # 16 kHz G.722 must give them back; at the wrong codec or rate these tones would be other keys.
    decoder = G722.G722(G722_RATE, 64000)
    pcm = np.asarray(decoder.decode(b"".join(p.payload for p in packets)), dtype=np.int16)
    assert len(pcm) == len(packets) * 2 * FRAME_BYTES
    heard = ma.fft_dtmf_digits(pcm.astype(np.float64) / 32768, rate=G722_RATE)
    assert heard == DIGITS, heard

    call = server.wait_for(lambda: (c := server.get(f"/api/calls/{call_id}"))["status"] == "hangup" and c,
                           what="the callee's BYE")
    assert call["end_reason"] == "caller_hangup"
    assert call["media"]["codec"] == "G722" and call["media"]["payload_type"] == G722_PT
    assert any(e["type"] == "dtmf_sent" and e["method"] == "inband" for e in call["events"])
    health = server.get("/healthz")
    assert health["rtp_ports_in_use"] == 0 and health["active_calls"] == 0, health
