"""The caller's very first RTP packet is heard: in the call recording and by the voice agent (issue 14).

SIPp replays (``play_pcap_audio``) a pcap built here from a signal whose every 20 ms frame is distinct
(seeded noise under a slow chirp), starting right after the ACK. The server's G.711 decoding is exact,
so the recording's caller channel, and the µ-law the agent's provider received, must hold the decoded
signal sample for sample, from its first sample on.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from callbridge.standins.openai_realtime import OpenAIRealtimeStandin

from . import media_assets as ma
from .conftest import http_get
from .test_media import killed_on_failure, start_call, wait_status

pytestmark = pytest.mark.interop

SIGNAL_FRAMES = 50  # one second of caller audio
START_FRAMES = 5  # the first 100 ms of the signal, every frame of it, in order
CALLS = 4  # the start-up race depends on the pacer's phase: several calls, several phases


def caller_signal(directory: Path) -> tuple[bytes, np.ndarray]:
    """(µ-law bytes, the int16 samples they decode to): loud from the very first sample."""
    rng = np.random.default_rng(14)
    t = np.arange(SIGNAL_FRAMES * ma.FRAME) / ma.RATE
    chirp = 0.3 * np.cos(2 * np.pi * (300 * t + 1200 * t * t))  # loud from sample 0
    samples = np.clip(chirp + 0.15 * rng.standard_normal(len(t)), -0.9, 0.9)
    ulaw = ma.ulaw_file(directory, "first_frame", samples).read_bytes()[:SIGNAL_FRAMES * ma.FRAME]
    assert len(ulaw) == SIGNAL_FRAMES * ma.FRAME
    decoded = np.round(ma.ulaw_decode(ulaw) * 32768).astype(np.int16)
    frames = decoded.reshape(SIGNAL_FRAMES, ma.FRAME)
    assert len({f.tobytes() for f in frames}) == SIGNAL_FRAMES, "frames must be told apart"
    assert np.min(np.abs(frames).max(axis=1)) > 1000, "every frame, the first too, must be loud"
    return ulaw, decoded


def signal_pcap(path: Path, ulaw: bytes, held_up: float = 0.0, ssrc: int = 0xF125F00D) -> Path:
    """20 ms PCMU packets; with ``held_up``, the first three leave that much late and the rest on time
    (a sender or path warming up), so a later packet is faster than the first while it waits."""
    datagrams = [(k * 0.02 + (held_up if k < 3 else 0.0),
                  ma.rtp_packet(0, 31000 + k, 160000 + k * ma.FRAME, ssrc, ulaw[k * ma.FRAME:(k + 1) * ma.FRAME],
                                marker=k == 0))
                 for k in range(SIGNAL_FRAMES)]
    return ma.write_pcap(path, sorted(datagrams, key=lambda d: d[0]))


def find_frame(heard: np.ndarray, frame: np.ndarray) -> int | None:
    """Where ``frame`` first occurs verbatim in ``heard``, or None."""
    for at in np.flatnonzero(heard[:len(heard) - len(frame) + 1] == frame[0]):
        if np.array_equal(heard[at:at + len(frame)], frame):
            return int(at)
    return None


def frames_heard(heard: np.ndarray, signal: np.ndarray) -> tuple[int, list[int | None]]:
    """Where the signal's audio starts in ``heard`` (the earliest of its frames found verbatim), and from
    there, which frame of the signal each 20 ms is (None: none of them: concealment, silence)."""
    frames = signal.reshape(-1, ma.FRAME)
    found = [at for f in frames if (at := find_frame(heard, f)) is not None]
    assert found, "none of the signal was heard"
    start = min(found)
    index = {f.tobytes(): k for k, f in enumerate(frames)}
    return start, [index.get(heard[at:at + ma.FRAME].tobytes()) for at in range(start, len(heard) - ma.FRAME + 1,
                                                                               ma.FRAME)]


def missing_at_start(heard: np.ndarray, signal: np.ndarray) -> int:
    """Samples of the signal's start that never made it: 160 per frame before the first one heard."""
    _, order = frames_heard(heard, signal)
    return ma.FRAME * order[0]


def assert_heard_from_first_sample(heard: np.ndarray, signal: np.ndarray, what: str) -> None:
    start, order = frames_heard(heard, signal)
    missing = ma.FRAME * order[0]
    assert missing == 0, f"{what}: {missing} samples missing at call start (frames heard: {order[:8]}...)"
    # Before it: silence (nothing from the caller yet), so nothing of the signal came earlier.
    assert not np.any(heard[max(0, start - 800):start]), f"{what}: audio before the first frame"
    # Then the rest in order. On a loaded machine the server may see its own stalls as jitter and
    # stretch a frame (None here) or, much later, shed one; it must never skip the start.
    played = [k for k in order if k is not None]
    assert played[:START_FRAMES] == list(range(START_FRAMES)), f"{what}: frames heard {order[:12]}..."
    assert played == sorted(played) and len(played) >= SIGNAL_FRAMES - 2, f"{what}: frames heard {order}"


@pytest.fixture(scope="module")
def signal(tmp_path_factory) -> tuple[dict[str, Path], np.ndarray]:
    directory = tmp_path_factory.mktemp("first_frame")
    ulaw, decoded = caller_signal(directory)
    pcaps = {"steady": signal_pcap(directory / "steady.pcap", ulaw),
             "warming_up": signal_pcap(directory / "warming_up.pcap", ulaw, held_up=0.019)}
    return pcaps, decoded


def recorded_caller(server, sipp, tmp_path: Path) -> tuple[np.ndarray, dict]:
    """The left (caller) channel of the call's recording, as int16, and the call record."""
    call = wait_status(server, sipp, "hangup")
    call = server.wait_for(lambda: (c := server.get(f"/api/calls/{call['id']}"))["recording"] and c,
                           timeout=10, what="the recording")
    status, _, body = http_get(server, f"/api/calls/{call['id']}/recording")
    assert status == 200
    recorded, rate = ma.read_wav_bytes(body, tmp_path / f"{call['id']}.wav")
    assert rate == ma.RATE and recorded.shape[0] == 2
    return np.round(recorded[0] * 32768).astype(np.int16), call


@pytest.mark.parametrize("start", ["steady", "warming_up"])
def test_recording_holds_the_callers_first_frame(server, tmp_path, signal, start):
    """Several calls at once, each SIPp playing the signal right after its ACK: every recording's left
    channel holds the signal from its first sample."""
    pcaps, decoded = signal
    sipps = [start_call(server, tmp_path / f"caller{i}", "uac_pcap_audio.xml", "-d", "2000",
                        files={"caller.pcap": pcaps[start]}) for i in range(CALLS)]
    for sipp in sipps:
        result = sipp.wait()
        assert result.returncode == 0, result.output
    problems = []
    for i, sipp in enumerate(sipps):
        left, call = recorded_caller(server, sipp, tmp_path)
        # Every packet arrived: whatever is missing, the server lost it, not SIPp.
        assert call["media"]["packets_received"] == SIGNAL_FRAMES, call["media"]
        try:
            assert_heard_from_first_sample(left, decoded, f"call {i} recording")
        except AssertionError as exc:
            problems.append(f"{exc} (media {call['media']})")
    assert not problems, "\n".join(problems)


# -- what the voice agent receives ----------------------------------------------------------------------------

AGENT_FLOW = """\
flow: straight_to_agent
start: agent
nodes:
  agent:
    type: agent
    agent: assistant
    reason: first frame test
"""


class StandinThread:
    """The OpenAI Realtime stand-in on its own event loop, so the test can block on SIPp meanwhile."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.standin = OpenAIRealtimeStandin(key="sk-first-frame")
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.standin.start(), self.loop).result(timeout=10)

    def input_audio(self) -> bytes:
        """Every byte of caller audio the first session was sent (µ-law), read on the stand-in's loop."""
        async def read() -> bytes:
            record = await self.standin.session(0, timeout=10)
            return bytes(record.input_audio)
        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(timeout=15)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.standin.close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


@pytest.fixture
def standin():
    running = StandinThread()
    yield running
    running.close()


def test_the_agent_receives_the_callers_first_frame(server_factory, tmp_path, signal, standin):
    """A line that goes straight to an OpenAI Realtime agent (the stand-in, G.711 µ-law both ways, so no
    resampling): the audio the provider received holds the caller's signal from its first sample.
    The agent hears the same 20 ms ticks as the recorder (AudioStream.tick's listeners)."""
    pcaps, decoded = signal
    flow = tmp_path / "straight.yaml"
    flow.write_text(AGENT_FLOW)
    server = server_factory(f"""\
flows:
  straight: {flow}
routing:
  default_flow: straight
agents:
  - name: assistant
    provider: openai_realtime
    openai_realtime: {{url: '{standin.standin.url}', api_key: sk-first-frame, audio_format: g711_ulaw}}
""", ivr=True)
    sipp = start_call(server, tmp_path / "caller", "uac_pcap_audio.xml", "-d", "2000",
                      files={"caller.pcap": pcaps["warming_up"]})
    with killed_on_failure(sipp):
        result = sipp.wait()
    assert result.returncode == 0, result.output
    call = wait_status(server, sipp, "hangup")
    assert call["media"]["packets_received"] == SIGNAL_FRAMES, call["media"]
    sent = standin.input_audio()
    heard = np.round(ma.ulaw_decode(sent) * 32768).astype(np.int16)
    assert len(heard) >= len(decoded), f"the agent got {len(heard)} samples"
    assert_heard_from_first_sample(heard, decoded, "agent input")
