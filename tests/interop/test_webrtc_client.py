"""A browser call without a browser: an aiortc client offers to a real server, talks, and hangs up.

The client is the far side: it measures the audio it received (the tone line's 440 Hz), and the
server's recording shows the client's own tone on the caller's channel.
"""

from __future__ import annotations

import asyncio
import fractions
import wave

import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
import av

from callbridge.call.webrtc.aiortc_compat import check_supported, extra_host_addresses

pytestmark = pytest.mark.interop

CLIENT_TONE_HZ = 1000.0
CLIENT_RATE = 48_000
FRAME = 960  # 20 ms at 48 kHz
SERVER_TONE_HZ = 440.0  # the tone line (app/demo.py)


class ToneTrack(MediaStreamTrack):
    """A 1 kHz tone at real-time pace, as a microphone would deliver it."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._pts / CLIENT_RATE - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(FRAME) + self._pts) / CLIENT_RATE
        pcm = (8000 * np.sin(2 * np.pi * CLIENT_TONE_HZ * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = CLIENT_RATE, self._pts, fractions.Fraction(1, CLIENT_RATE)
        self._pts += FRAME
        return frame


async def collect(track: MediaStreamTrack, into: list[np.ndarray]) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        into.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0].copy())


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


async def offer(server, pc: RTCPeerConnection, to: str) -> tuple[int, dict]:
    await pc.setLocalDescription(await pc.createOffer())
    return await asyncio.to_thread(server.post, "/api/webrtc/calls",
                                   {"type": "offer", "sdp": pc.localDescription.sdp, "to": to})


async def talk(server, *, hang_up_from_server: bool) -> tuple[dict, list[np.ndarray]]:
    check_supported()  # the client on loopback too: aioice leaves 127.0.0.1 out otherwise
    received: list[np.ndarray] = []
    pc = RTCPeerConnection()
    pc.addTrack(ToneTrack())
    tasks = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(collect(track, received))))
    connected = asyncio.Event()
    pc.on("connectionstatechange", lambda: connected.set() if pc.connectionState == "connected" else None)
    with extra_host_addresses(("127.0.0.1",)):
        status, body = await offer(server, pc, "tone")
    assert status == 201, body
    assert body["type"] == "answer" and "a=candidate:" in body["sdp"]
    await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))
    await asyncio.wait_for(connected.wait(), 10)
    await asyncio.sleep(2.5)  # talk: the tone line plays, we send our tone
    call_id = body["call_id"]
    if hang_up_from_server:
        status, _ = await asyncio.to_thread(server.post, f"/api/calls/{call_id}/hangup", {})
        assert status == 200
        # The browser side sees the call end: DTLS close_notify closes our peer connection.
        for _ in range(100):
            if pc.connectionState in ("closed", "failed"):
                break
            await asyncio.sleep(0.05)
        assert pc.connectionState in ("closed", "failed")
    await pc.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return body, received


def test_aiortc_client_talks_both_ways_and_the_server_hangs_up(server_factory):
    server = server_factory()  # the tone line
    body, received = asyncio.run(talk(server, hang_up_from_server=True))
    pcm = np.concatenate(received)
    rate = 48_000  # aiortc decodes Opus at 48 kHz
    tail = pcm[-rate:]  # the last second we heard
    assert np.sqrt(np.mean(tail.astype(np.float64) ** 2)) > 500, "the client heard silence"
    assert abs(dominant_hz(tail, rate) - SERVER_TONE_HZ) < 10
    record = server.wait_for(lambda: (r := server.get(f"/api/calls/{body['call_id']}"))["status"] == "hangup" and r,
                             what="the call ended")
    assert record["source"] == "webrtc" and record["caller"] == "browser"
    assert record["end_reason"] == "agent_hangup"
    assert record["route"] == "tone" and record["called"] == "tone"
    assert record["sip_call_id"].startswith("webrtc-")
    media = record["media"]
    assert media["codec"] == "opus" and media["packets_received"] > 50 and media["packets_sent"] > 50
    statuses = [e["status"] for e in record["events"] if e["type"] == "status"]
    assert statuses == ["ringing", "active", "hangup"]
    # The recording: our tone on the caller's (left) channel, the line's tone on the right.
    path = server.wait_for(lambda: server.get(f"/api/calls/{body['call_id']}").get("recording"),
                           what="a recording")
    with wave.open(path) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 16_000
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    left, right = stereo[-16_000:, 0], stereo[-16_000:, 1]
    assert abs(dominant_hz(left, 16_000) - CLIENT_TONE_HZ) < 10
    assert abs(dominant_hz(right, 16_000) - SERVER_TONE_HZ) < 10
    health = server.get("/healthz")
    assert health["active_calls"] == 0


def test_aiortc_client_hangs_up_and_the_call_ends_as_a_caller_hangup(server_factory):
    server = server_factory()
    body, received = asyncio.run(talk(server, hang_up_from_server=False))
    assert received
    record = server.wait_for(lambda: (r := server.get(f"/api/calls/{body['call_id']}"))["status"] == "hangup" and r,
                             what="the call ended")
    assert record["end_reason"] == "caller_hangup" and record["source"] == "webrtc"
