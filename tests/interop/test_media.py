"""Real peers against the RTP media engine: the acceptance tests of the media issue.

DTMF arrives three ways (RFC 4733 from SIPp's shipped pcap and from ``play_dtmf`` on PT 96, and as
in-band tones), speech alone never yields digits, a key press sent both ways counts once, hold works
in both directions, 100 calls give back every RTP port, and bad media never crashes the server.
The baresip recording test lives in test_baresip.py.

SIPp facts these tests rely on (SIPp 3.6.1, see also /work/shared/notes/telephony-peers.md):

* ``rtp_stream="caller.ulaw,1,0"`` plays raw µ-law once, from the ``-mp`` port, SSRC 0xca110000;
  the file is read when SIPp starts, relative to its working directory.
* ``play_dtmf`` (and ``play_pcap_audio``) send through a raw socket from the port of ``[media_port]``
  (source port 0 if the SDP used another keyword), with their own SSRC: first 20 "noop" packets on
  PT 97 over 400 ms (never offered, so the server must ignore them), then per digit 10 updates and 3
  end packets on PT 96: digit k starts 0.8 + 0.4 k s after the action, 200 ms on, 200 ms off.
  The audio stream is not paused meanwhile. ``-key name value`` fills ``[name]`` in ``play_dtmf``.
* ``play_pcap_audio`` keeps RTP headers byte for byte and maps each packet's destination port to the
  SDP's port plus its offset from the lowest port in the file (so RTCP can be replayed too).
"""

from __future__ import annotations

import select
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest

from . import media_assets as ma
from .conftest import (SCENARIOS, SippResult, free_port, free_udp_block, require_tool, sipp_log, sipp_messages,
                       start_server, stop_server)

pytestmark = pytest.mark.interop

INBAND_DIGITS = "123456789*0#77"  # every key, and a repeat that needs the gap to count twice
BOTH_DIGITS_PLAY_DTMF = "1559#"
BOTH_DIGITS_PCAP = "2558*"
SPEECH_CALLS, SPEECH_SECONDS = 8, 25.0
DEMO_TONE_HZ = 440.0
MOH_HZ = 660.0


# -- assets --------------------------------------------------------------------------------------------------

class Assets:
    """What the callers send, generated once per session and checked with an FFT before use."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @cached_property
    def inband_tones(self) -> Path:
        # 120 ms tones, 120 ms gaps, -10/-8 dBFS: a phone keypad, at a brisk pace.
        samples = ma.dtmf_sequence(INBAND_DIGITS, tone_s=0.12, gap_s=0.12)
        path = ma.ulaw_file(self.dir, "inband_tones", samples)
        assert ma.fft_dtmf_digits(ma.ulaw_decode(path.read_bytes())) == INBAND_DIGITS
        return path

    @cached_property
    def tones_for_play_dtmf(self) -> Path:
        """Audio holding the tones exactly where play_dtmf sends the events (0.8 + 0.4 k s, 200 ms)."""
        samples = ma.silence(0.8 + 0.4 * len(BOTH_DIGITS_PLAY_DTMF) + 0.6)
        for k, digit in enumerate(BOTH_DIGITS_PLAY_DTMF):
            tone = ma.dtmf_tone(digit, 0.2)
            start = int((0.8 + 0.4 * k) * ma.RATE)
            samples[start:start + len(tone)] += tone
        path = ma.ulaw_file(self.dir, "tones_for_play_dtmf", samples)
        assert ma.fft_dtmf_digits(ma.ulaw_decode(path.read_bytes())) == BOTH_DIGITS_PLAY_DTMF
        return path

    @cached_property
    def _pcap_presses(self) -> tuple[bytes, list[tuple[str, float, float]]]:
        presses = [(digit, 0.5 + 0.3 * k, 0.12) for k, digit in enumerate(BOTH_DIGITS_PCAP)]
        samples = ma.silence(0.5 + 0.3 * len(presses) + 0.5)
        for digit, start, length in presses:
            tone = ma.dtmf_tone(digit, length)
            samples[int(start * ma.RATE):int(start * ma.RATE) + len(tone)] += tone
        ulaw = ma.ulaw_file(self.dir, "pcap_tones", samples).read_bytes()
        assert ma.fft_dtmf_digits(ma.ulaw_decode(ulaw)) == BOTH_DIGITS_PCAP
        return ulaw, presses

    @cached_property
    def tones_and_events_pcap(self) -> Path:
        """One SSRC carrying tones and, for the same presses, RFC 4733 events on PT 101 that start 60 ms
        after each tone (a gateway's detection delay): here the tone comes first, with play_dtmf the event."""
        ulaw, presses = self._pcap_presses
        return ma.dual_dtmf_pcap(self.dir / "tones_and_events.pcap", ulaw, presses, event_pt=101,
                                 detection_delay_frames=3)

    @cached_property
    def tones_only_pcap(self) -> Path:
        """The same tones with no events, although telephone-event is offered."""
        ulaw, _ = self._pcap_presses
        return ma.dual_dtmf_pcap(self.dir / "tones_only.pcap", ulaw, [], event_pt=101)

    @cached_property
    def _speech(self) -> np.ndarray:
        corpus = ma.speech_corpus(self.dir, SPEECH_CALLS * SPEECH_SECONDS)
        assert len(corpus) >= SPEECH_CALLS * SPEECH_SECONDS * ma.RATE
        return corpus

    def speech(self, index: int) -> Path:
        """The index-th distinct stretch of SPEECH_SECONDS of speech, as raw µ-law."""
        path = self.dir / f"speech_stretch{index}.ulaw"
        if not path.exists():
            n = int(SPEECH_SECONDS * ma.RATE)
            stretch = self._speech[index * n:(index + 1) * n]
            assert ma.rms_dbfs(stretch) > -30, "a speech stretch is mostly silence"
            # Our plain FFT reader finds no DTMF in it either: the stretch is speech, not tones.
            assert ma.fft_dtmf_digits(stretch) == ""
            ma.ulaw_file(self.dir, path.stem, stretch)
        return path

    @cached_property
    def music_on_hold(self) -> Path:
        path = ma.write_wav(self.dir / "moh.wav", ma.sine(MOH_HZ, 10.0, -12.0))
        samples, rate = ma.read_wav(path)
        assert rate == 8000 and abs(ma.dominant_frequency(samples[0], rate) - MOH_HZ) < 2
        return path

    @cached_property
    def bad_media(self) -> tuple[Path, int]:
        return ma.bad_media_pcap(self.dir / "bad_media.pcap", seconds=4.0, freq=300.0, garbage_from=0.5,
                                 garbage_until=3.0)


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    require_tool("sox")
    require_tool("espeak-ng")
    return Assets(tmp_path_factory.mktemp("media_assets"))


# -- SIPp in the background ----------------------------------------------------------------------------------

@dataclass
class SippCall:
    """One SIPp process placing one call, in its own working directory."""

    process: subprocess.Popen
    cwd: Path
    timeout: float

    @property
    def call_id(self) -> str:
        return f"1-{self.process.pid}@127.0.0.1"  # SIPp's [call_id] for call 1

    def wait(self) -> SippResult:
        try:
            self.process.wait(timeout=self.timeout + 15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return SippResult(self.process.returncode, sipp_log(self.cwd))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def messages(self) -> str:
        return sipp_messages(self.cwd)


def start_call(server, cwd: Path, scenario: str, *args: str, files: dict[str, Path] | None = None,
               service: str = "demo", calls: int = 1, timeout: float = 60.0) -> SippCall:
    """Start SIPp on ``scenario`` (a file in scenarios/, or a built-in name) from ``cwd``, where ``files``
    are linked in (SIPp reads caller.ulaw / caller.pcap relative to it)."""
    sipp = require_tool("sipp")
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "pcap").symlink_to("/usr/share/sip-tester")  # the built-in scenarios' pcap/ folder
    for name, source in (files or {}).items():
        (cwd / name).symlink_to(source)
    chosen = ["-sf", str(SCENARIOS / scenario)] if scenario.endswith(".xml") else ["-sn", scenario]
    # -mp: SIPp's RTP and RTCP, and the echo's +2/+3.
    command = [sipp, f"127.0.0.1:{server.sip_port}", *chosen, "-i", "127.0.0.1", "-p", str(free_port()),
               "-mp", str(free_udp_block(4)), "-m", str(calls), "-s", service, "-nostdin", "-trace_err",
               "-timeout", str(int(timeout)), "-timeout_error", *args]
    with (cwd / "sipp.out").open("w") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    return SippCall(process, cwd, timeout)


def run_call(server, cwd: Path, scenario: str, *args: str, **kwargs) -> SippResult:
    return start_call(server, cwd, scenario, *args, **kwargs).wait()


@contextmanager
def killed_on_failure(sipp: SippCall):
    """While the test drives the call: if it fails, stop SIPp instead of waiting out its timeouts."""
    try:
        yield sipp
    except BaseException:
        sipp.kill()
        raise


# -- reading calls -------------------------------------------------------------------------------------------

def find_call(server, sipp: SippCall) -> dict | None:
    calls = server.get(f"/api/calls?sip_call_id={sipp.call_id}")["calls"]
    return calls[0] if calls else None


def wait_status(server, sipp: SippCall, status: str, timeout: float = 20.0) -> dict:
    return server.wait_for(lambda: (c := find_call(server, sipp)) is not None and c["status"] == status and c,
                           timeout=timeout, what=f"call {sipp.call_id} to be {status}")


def digits(call: dict) -> str:
    return "".join(d["digit"] for d in call["dtmf"])


def dtmf_summary(call: dict) -> str:
    media = call.get("media") or {}
    return (f"dtmf={[(d['digit'], d['source']) for d in call.get('dtmf', [])]} "
            f"dtmf events={[(e.get('digit'), e.get('source')) for e in call['events'] if e['type'] == 'dtmf']} "
            f"media={media}")


def assert_dtmf_events_match(call: dict) -> None:
    """With one source, the event log holds each press once too, in the same order."""
    events = [(e["digit"], e["source"]) for e in call["events"] if e["type"] == "dtmf"]
    assert events == [(d["digit"], d["source"]) for d in call["dtmf"]], dtmf_summary(call)


def assert_times_within_call(call: dict) -> None:
    times = [d["at"] for d in call["dtmf"]]
    assert times == sorted(times), dtmf_summary(call)
    assert all(call["answered_at"] - 0.5 <= t <= call["ended_at"] + 0.5 for t in times), (times, call["answered_at"],
                                                                                          call["ended_at"])


def sdp_answer_ports(messages: str) -> tuple[int, int]:
    """(RTP, RTCP) port of the server's first SDP answer in a SIPp message trace."""
    answer = messages[messages.index("SIP/2.0 200 OK"):]
    rtp = int(answer.split("m=audio ", 1)[1].split()[0])
    rtcp = rtp + 1
    for line in answer.split("m=audio", 1)[1].splitlines():
        if line.startswith("a=rtcp:"):
            rtcp = int(line[len("a=rtcp:"):].split()[0])
            break
        if line.startswith(("m=", "SIP/2.0", "BYE", "ACK")):
            break
    return rtp, rtcp


# -- a test RTP endpoint -------------------------------------------------------------------------------------

class RtpSink:
    """Where the SDP sends the server's RTP (port) and RTCP (port + 1): keeps (arrival, datagram)."""

    def __init__(self) -> None:
        for _ in range(200):
            self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.rtp.bind(("127.0.0.1", free_port() & ~1))
                self.rtcp.bind(("127.0.0.1", self.port + 1))
                break
            except OSError:
                self.rtp.close()
                self.rtcp.close()
        else:
            raise RuntimeError("no free RTP port pair")
        self.packets: list[tuple[float, bytes]] = []
        self.rtcp_packets: list[tuple[float, bytes]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.rtp.getsockname()[1]

    def _run(self) -> None:
        while not self._stop:
            readable, _, _ = select.select([self.rtp, self.rtcp], [], [], 0.05)
            for sock in readable:
                data = sock.recv(65536)
                (self.packets if sock is self.rtp else self.rtcp_packets).append((time.monotonic(), data))

    def count(self, since: float, until: float) -> int:
        return sum(1 for at, _ in list(self.packets) if since <= at < until)

    def audio(self, since: float, until: float) -> np.ndarray:
        """PCMU payloads that arrived in [since, until), in sequence order, decoded."""
        chosen = [data for at, data in list(self.packets) if since <= at < until and len(data) > 12
                  and data[1] & 0x7F == 0]
        chosen.sort(key=lambda d: int.from_bytes(d[2:4], "big"))
        return ma.ulaw_decode(b"".join(ma.rtp_payload(d) for d in chosen))

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.rtp.close()
        self.rtcp.close()


@pytest.fixture
def sink():
    endpoint = RtpSink()
    yield endpoint
    endpoint.close()


def assert_tone(samples: np.ndarray, freq: float, what: str, min_dbfs: float = -20.0) -> None:
    assert len(samples) >= 2000, f"{what}: only {len(samples)} samples"
    heard = ma.dominant_frequency(samples, ma.RATE)
    level = ma.tone_dbfs(samples, ma.RATE, freq)
    assert abs(heard - freq) < 10 and level > min_dbfs, \
        f"{what}: dominant {heard:.0f} Hz, {freq:.0f} Hz at {level:.1f} dBFS"


# -- the background talk-off run -------------------------------------------------------------------------------

@dataclass
class TalkOff:
    server: object
    calls: list[SippCall]


@pytest.fixture(scope="module", autouse=True)
def talk_off(tmp_path_factory, assets):
    """Several minutes of speech take time, so they start with the first test of this module and run
    while the others do: SPEECH_CALLS concurrent calls, each streaming a different SPEECH_SECONDS of
    espeak-ng speech (several voices and speeds) with no telephone-event offered, so the in-band
    detector listens to all of it. test_speech_alone_never_yields_digits collects the result."""
    root = tmp_path_factory.mktemp("talk_off")
    (root / "server").mkdir()
    server = start_server(root / "server")
    calls = []
    try:
        for i in range(SPEECH_CALLS):
            calls.append(start_call(server, root / f"caller{i}", "uac_audio.xml", "-d",
                                    str(int(SPEECH_SECONDS * 1000) + 500), files={"caller.ulaw": assets.speech(i)},
                                    timeout=SPEECH_SECONDS + 60))
        yield TalkOff(server, calls)
    finally:
        for call in calls:
            call.kill()
        stop_server(server)


# -- DTMF -----------------------------------------------------------------------------------------------------

def test_uac_pcap_digit_arrives_as_rfc4733(server, tmp_path):
    """SIPp's own uac_pcap: PCMA speech from g711a.pcap, then RFC 2833 digit 1 (PT 101) from dtmf_2833_1.pcap."""
    sipp = start_call(server, tmp_path / "caller", "uac_pcap")
    result = sipp.wait()
    assert result.returncode == 0, result.output
    call = wait_status(server, sipp, "hangup")
    assert call["end_reason"] == "caller_hangup"
    media = call["media"]
    assert (media["codec"], media["payload_type"], media["telephone_event_pt"]) == ("PCMA", 8, 101), media
    assert media["dtmf_inband"] is False, "telephone-event was negotiated: auto must not run the in-band detector"
    assert [(d["digit"], d["source"]) for d in call["dtmf"]] == [("1", "rfc4733")], dtmf_summary(call)
    assert_dtmf_events_match(call)
    assert_times_within_call(call)
    # The digit follows 8 s of speech: it must not have been taken from the speech.
    assert call["dtmf"][0]["at"] - call["answered_at"] > 7.0, dtmf_summary(call)
    # g711a.pcap holds 236 packets of 30 ms (the digit's pcap 10 more): all of the audio arrived.
    assert media["packets_received"] >= 236, media


def test_play_dtmf_on_payload_type_96(server, tmp_path):
    """play_dtmf="123#": PT 96 as offered (not the usual 101), after 20 noop packets on unoffered PT 97."""
    sipp = start_call(server, tmp_path / "caller", "uac_dtmf_rfc4733.xml", "-d", "3500")
    result = sipp.wait()
    assert result.returncode == 0, result.output
    call = wait_status(server, sipp, "hangup")
    assert call["end_reason"] == "caller_hangup"
    assert call["media"]["telephone_event_pt"] == 96, call["media"]
    assert call["media"]["dtmf_inband"] is False, call["media"]
    assert digits(call) == "123#", dtmf_summary(call)
    assert {d["source"] for d in call["dtmf"]} == {"rfc4733"}, dtmf_summary(call)
    assert_dtmf_events_match(call)
    assert_times_within_call(call)
    # SIPp sends a digit every 400 ms: four presses span 1.2 s (loosely: the server may be busy).
    span = call["dtmf"][-1]["at"] - call["dtmf"][0]["at"]
    assert 0.6 < span < 2.5, f"the digits span {span:.2f} s, not about 1.2 s: {dtmf_summary(call)}"


def test_inband_tones_without_telephone_event(server, tmp_path, assets):
    """A caller that offers PCMU only and sends its key presses as tones: they are detected in-band."""
    sipp = start_call(server, tmp_path / "caller", "uac_audio.xml", "-d", "4500",
                      files={"caller.ulaw": assets.inband_tones})
    result = sipp.wait()
    assert result.returncode == 0, result.output
    call = wait_status(server, sipp, "hangup")
    assert call["end_reason"] == "caller_hangup"
    assert call["media"]["telephone_event_pt"] is None, call["media"]
    assert call["media"]["dtmf_inband"] is True, "no telephone-event negotiated: auto must run the in-band detector"
    assert digits(call) == INBAND_DIGITS, dtmf_summary(call)
    assert {d["source"] for d in call["dtmf"]} == {"inband"}, dtmf_summary(call)
    assert_dtmf_events_match(call)
    assert_times_within_call(call)


def test_press_sent_as_rfc4733_and_tone_counts_once(server_factory, tmp_path, assets):
    """dtmf_inband: always, and a trunk that sends every press both as RFC 4733 and as a tone.

    Three concurrent calls: (a) SIPp's play_dtmf on PT 96 with the tones streamed alongside (two
    SSRCs, as SIPp does it; each event starts ~35 ms before its tone); (b) one SSRC carrying the tones
    and the events on PT 101, as a gateway does it (each event starts 60 ms after its tone began);
    (c) the control: the same tones as (b) with telephone-event offered but no events, which proves
    that under this configuration the detector hears these tones. Both sequences repeat a digit,
    which must still count twice. How duplicates are dropped (a window, or trusting RFC 4733 once it
    shows up) is the server's business; which source is reported is not checked.
    """
    server = server_factory("media:\n  dtmf_inband: always\n")
    play_dtmf = start_call(server, tmp_path / "play_dtmf", "uac_dtmf_both.xml", "-d", "3500",
                           "-key", "dtmf_digits", BOTH_DIGITS_PLAY_DTMF,
                           files={"caller.ulaw": assets.tones_for_play_dtmf})
    one_stream = start_call(server, tmp_path / "one_stream", "uac_pcap_audio.xml", "-d", "3000",
                            files={"caller.pcap": assets.tones_and_events_pcap})
    control = start_call(server, tmp_path / "control", "uac_pcap_audio.xml", "-d", "3000",
                         files={"caller.pcap": assets.tones_only_pcap})
    results = {name: sipp.wait() for name, sipp in
               [("play_dtmf", play_dtmf), ("one_stream", one_stream), ("control", control)]}
    for name, result in results.items():
        assert result.returncode == 0, f"{name}:\n{result.output}"
    calls = {name: wait_status(server, sipp, "hangup") for name, sipp in
             [("play_dtmf", play_dtmf), ("one_stream", one_stream), ("control", control)]}
    assert calls["play_dtmf"]["media"]["telephone_event_pt"] == 96
    assert calls["one_stream"]["media"]["telephone_event_pt"] == 101
    control_call = calls["control"]
    assert control_call["media"]["telephone_event_pt"] == 101
    assert control_call["media"]["dtmf_inband"] is True, f"always must run the detector: {control_call['media']}"
    assert digits(control_call) == BOTH_DIGITS_PCAP, f"control (tones only): {dtmf_summary(control_call)}"
    assert {d["source"] for d in control_call["dtmf"]} == {"inband"}, dtmf_summary(control_call)
    for name, expected in [("play_dtmf", BOTH_DIGITS_PLAY_DTMF), ("one_stream", BOTH_DIGITS_PCAP)]:
        call = calls[name]
        assert digits(call) == expected, f"{name}: each press must count once: {dtmf_summary(call)}"
        assert {d["source"] for d in call["dtmf"]} <= {"rfc4733", "inband"}, dtmf_summary(call)
        assert_times_within_call(call)


# -- hold ------------------------------------------------------------------------------------------------------

def poll_call(server, call_id: str, until, timeout: float) -> list[tuple[float, dict]]:
    """Sample the call every 50 ms until ``until(record)``; returns every (monotonic time, record)."""
    samples = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = server.get(f"/api/calls/{call_id}")
        samples.append((time.monotonic(), record))
        if until(record):
            return samples
        time.sleep(0.05)
    raise AssertionError(f"timed out polling call {call_id}: last {samples[-1][1]['media'] if samples else None};"
                         f" server log:\n{server.log_tail()}")


def test_caller_puts_us_on_hold_and_resumes(server, tmp_path, sink):
    """re-INVITE a=sendonly: we answer a=recvonly (SIPp checks), report hold "remote" and stop sending;
    re-INVITE a=sendrecv: hold is null again and the tone flows again."""
    sipp = start_call(server, tmp_path / "caller", "uac_hold.xml", "-set", "rtp_port", str(sink.port))
    with killed_on_failure(sipp):
        call = wait_status(server, sipp, "active")
        assert call["media"]["hold"] is None, call["media"]
        server.wait_for(lambda: len(sink.packets) >= 25, timeout=5, what="RTP before hold")
        # SIPp holds for 3 s: sample through it, then through the resume (2.5 s until its BYE).
        held = poll_call(server, call["id"], lambda c: c["media"]["hold"] == "remote", timeout=10)
        during = poll_call(server, call["id"], lambda c: c["media"]["hold"] != "remote", timeout=10)
        assert during[-1][1]["media"]["hold"] is None, during[-1][1]["media"]
        after = poll_call(server, call["id"], lambda c: c["status"] == "hangup", timeout=10)
    result = sipp.wait()
    assert result.returncode == 0, result.output  # includes: the hold answer said a=recvonly, the resume did not hold

    start_hold = held[-1][0] + 0.25  # let packets already in flight land
    in_hold = [(t, c["media"]["packets_sent"]) for t, c in during[:-1] if t >= start_hold]
    assert in_hold and in_hold[-1][0] - in_hold[0][0] >= 1.0, "the hold window was too short to measure"
    assert in_hold[0][1] == in_hold[-1][1], f"packets_sent rose during remote hold: {in_hold[0]} -> {in_hold[-1]}"
    assert sink.count(start_hold, in_hold[-1][0]) == 0, "RTP reached the caller while it had us on hold"

    start_resume = during[-1][0] + 0.25
    resumed = [(t, c["media"]["packets_sent"]) for t, c in after[:-1] if t >= start_resume and c["status"] == "active"]
    assert resumed and resumed[-1][0] - resumed[0][0] >= 1.0, "the resumed window was too short to measure"
    span = resumed[-1][0] - resumed[0][0]
    assert (resumed[-1][1] - resumed[0][1]) / span > 35, f"packets_sent after resume: {resumed[0]} -> {resumed[-1]}"
    assert sink.count(resumed[0][0], resumed[-1][0]) / span > 35
    assert_tone(sink.audio(resumed[0][0], resumed[-1][0]), DEMO_TONE_HZ, "after resume")
    final = after[-1][1]
    assert final["end_reason"] == "caller_hangup" and final["media"]["hold"] is None, final


def test_we_put_the_caller_on_hold_with_music(server_factory, tmp_path, assets, sink):
    """POST hold: a re-INVITE offering a=sendonly (SIPp checks and answers a=recvonly), hold "local",
    and the music-on-hold file keeps flowing; POST unhold: a re-INVITE that resumes, and the tone again."""
    server = server_factory(f"media:\n  music_on_hold: {assets.music_on_hold}\n")
    sipp = start_call(server, tmp_path / "caller", "uac_held.xml", "-set", "rtp_port", str(sink.port))
    with killed_on_failure(sipp):
        call = wait_status(server, sipp, "active")
        server.wait_for(lambda: len(sink.packets) >= 40, timeout=5, what="RTP before hold")
        now = time.monotonic()
        assert_tone(sink.audio(now - 0.6, now), DEMO_TONE_HZ, "before hold")

        status, body = server.post(f"/api/calls/{call['id']}/hold", {})
        assert status == 200 and body.get("hold") == "local", (status, body)
        server.wait_for(lambda: server.get(f"/api/calls/{call['id']}")["media"]["hold"] == "local", timeout=5,
                        what="hold local")
        time.sleep(0.4)  # the file starts playing
        before = server.get(f"/api/calls/{call['id']}")["media"]["packets_sent"]
        since = time.monotonic()
        time.sleep(1.2)
        until = time.monotonic()
        during = server.get(f"/api/calls/{call['id']}")
        assert during["media"]["hold"] == "local" and during["status"] == "active", during["media"]
        assert during["media"]["packets_sent"] - before > 40, "music on hold must keep packets flowing"
        assert sink.count(since, until) > 40
        assert_tone(sink.audio(since, until), MOH_HZ, "music on hold", min_dbfs=-18)

        status, body = server.post(f"/api/calls/{call['id']}/unhold", {})
        assert status == 200 and "hold" in body and body["hold"] is None, (status, body)
        server.wait_for(lambda: server.get(f"/api/calls/{call['id']}")["media"]["hold"] is None, timeout=5,
                        what="unhold")
        time.sleep(0.4)
        since = time.monotonic()
        time.sleep(0.8)
        assert_tone(sink.audio(since, time.monotonic()), DEMO_TONE_HZ, "after unhold")
    result = sipp.wait()
    # SIPp saw a re-INVITE with a=sendonly, then one that no longer held, then hung up.
    assert result.returncode == 0, result.output
    final = wait_status(server, sipp, "hangup")
    assert final["end_reason"] == "caller_hangup" and final["media"]["hold"] is None, final


# -- ports and bad input ------------------------------------------------------------------------------------------

def udp_ports_held(pid: int, low: int, high: int) -> list[int]:
    """UDP ports in [low, high] bound by sockets that process ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if str(target).startswith("socket:["):
            inodes.add(str(target)[8:-1])
    ports = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[9] in inodes and low <= port <= high:
                ports.append(port)
    return sorted(ports)


def test_hundred_calls_free_every_rtp_port(server_factory, tmp_path):
    low = free_udp_block(200)
    # SIPp's 100 calls at 20/s come from one address: above the default per-source rate of new calls.
    server = server_factory(f"media:\n  rtp_port_min: {low}\n  rtp_port_max: {low + 199}\n"
                            "server:\n  new_requests_per_source: 0\n")
    result = run_call(server, tmp_path / "callers", "uac", "-d", "500", "-r", "20", "-l", "30", calls=100)
    assert result.returncode == 0, result.output
    calls = server.wait_for(lambda: (c := server.calls()) and len(c) == 100 and all(x["status"] == "hangup" for x in c)
                            and c, timeout=20, what="100 calls hung up")
    assert {c["end_reason"] for c in calls} == {"caller_hangup"}
    assert all(c["media"]["packets_sent"] > 0 for c in calls)
    health = server.wait_for(lambda: (h := server.get("/healthz"))["rtp_ports_in_use"] == 0 and h, timeout=10,
                             what="rtp_ports_in_use == 0")
    assert health["active_calls"] == 0, health
    assert udp_ports_held(server.process.pid, low, low + 199) == [], "the server still holds RTP sockets"


def test_bad_media_never_crashes(server, tmp_path, assets):
    """Garbage, short and truncated RTP and random RTCP, from the caller's own address (replayed by SIPp in
    between its 300 Hz audio) and from a stranger (a socket here), to the RTP and RTCP ports."""
    pcap, valid_packets = assets.bad_media
    sipp = start_call(server, tmp_path / "caller", "uac_pcap_audio.xml", "-d", "4500", "-trace_msg",
                      files={"caller.pcap": pcap})
    with killed_on_failure(sipp):
        call = wait_status(server, sipp, "active")
        server.wait_for(lambda: "m=audio" in sipp.messages().split("SIP/2.0 200 OK", 1)[-1], timeout=5,
                        what="SDP answer in SIPp's trace")
        rtp_port, rtcp_port = sdp_answer_ports(sipp.messages())
        rng = np.random.default_rng(20260)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.1", 0))
            for data in ma.garbage_rtp(rng, ssrc=0x0BADF00D):
                stranger.sendto(data, ("127.0.0.1", rtp_port))
                time.sleep(0.001)
            for data in ma.garbage_rtcp(rng, ssrc=0x0BADF00D):
                stranger.sendto(data, ("127.0.0.1", rtcp_port))
                time.sleep(0.001)
            for size in (9000, 65507):  # jumbo datagrams, larger than any RTP
                stranger.sendto(bytes(size), ("127.0.0.1", rtp_port))
                stranger.sendto(bytes(size), ("127.0.0.1", rtcp_port))
        sent = server.get(f"/api/calls/{call['id']}")["media"]["packets_sent"]
        time.sleep(1.0)
        mid = server.get(f"/api/calls/{call['id']}")
        assert mid["status"] == "active", mid
        assert mid["media"]["packets_sent"] - sent > 35, "the server stopped sending while fed garbage"
        assert server.get("/healthz")["status"] == "ok"
    result = sipp.wait()
    assert result.returncode == 0, result.output  # the server answered the caller's BYE
    call = wait_status(server, sipp, "hangup")
    assert call["end_reason"] == "caller_hangup", call
    assert call["media"]["packets_received"] >= 0.95 * valid_packets, (valid_packets, call["media"])
    assert server.process.poll() is None
    # Still serving calls afterwards (and the fixture checks the log for tracebacks).
    after = run_call(server, tmp_path / "next", "uac", "-d", "300")
    assert after.returncode == 0, after.output
    assert call["media"]["local_port"] == rtp_port, call["media"]


# -- speech (collects the background run) ---------------------------------------------------------------------------

def test_speech_alone_never_yields_digits(talk_off):
    """SPEECH_CALLS x SPEECH_SECONDS of speech with the in-band detector on: not a single digit."""
    server = talk_off.server
    results = [call.wait() for call in talk_off.calls]
    for i, result in enumerate(results):
        assert result.returncode == 0, f"caller {i}:\n{result.output}"
    records = [wait_status(server, sipp, "hangup") for sipp in talk_off.calls]
    for i, call in enumerate(records):
        assert call["end_reason"] == "caller_hangup", call
        media = call["media"]
        assert media["telephone_event_pt"] is None and media["dtmf_inband"] is True, media
        # All of the speech reached the detector: 50 packets a second.
        assert media["packets_received"] >= 0.95 * SPEECH_SECONDS * 50, f"caller {i}: {media}"
    false_digits = {i: dtmf_summary(c) for i, c in enumerate(records) if c["dtmf"]
                    or any(e["type"] == "dtmf" for e in c["events"])}
    assert not false_digits, f"talk-off: speech was taken for DTMF: {false_digits}"
    total = sum(c["ended_at"] - c["answered_at"] for c in records)
    assert total >= SPEECH_CALLS * SPEECH_SECONDS, f"only {total:.0f} s of speech"
