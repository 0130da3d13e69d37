"""A browser leg in a call: what the record says, how it ends, and the SIP-only operations it refuses."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from callbridge.call import events as ev
from callbridge.call.call import Call, CallStatus, Leg
from callbridge.call.manager import CallManager
from callbridge.call.webrtc.leg import NotSipError, WebRtcLeg
from callbridge.media.webrtc_audio import WebRtcAudio


class FakeMedia:
    def __init__(self) -> None:
        self.stopped: list[Call] = []

    def stop(self, call: Call) -> None:
        self.stopped.append(call)
        call.leg.release()


def manager_with(media: FakeMedia) -> CallManager:
    # Only the lifecycle is exercised: no SIP endpoint, ports or pacer.
    manager = CallManager.__new__(CallManager)
    manager.media = media  # type: ignore[assignment]
    manager.outbound = SimpleNamespace(forget=lambda call: None)  # type: ignore[assignment]
    manager.transfers = SimpleNamespace(forget=lambda call: None)  # type: ignore[assignment]
    manager.calls, manager.consumers, manager._tasks = {}, [], set()
    manager.worker_id = None
    return manager


def browser_call() -> tuple[Call, list[str]]:
    closed: list[str] = []
    leg = WebRtcLeg(close=lambda: closed.append("closed"), stream=WebRtcAudio(lambda pcm: None, inband_dtmf=False))
    call = Call(direction="inbound", leg=leg, caller="browser", called="demo", status=CallStatus.ACTIVE)
    return call, closed


def test_the_record_names_the_source_and_a_generated_id():
    call, _ = browser_call()
    record = call.to_record()
    assert record["source"] == "webrtc"
    assert record["sip_call_id"].startswith("webrtc-") and record["sip_call_id"] == call.sip_call_id
    assert record["media"]["codec"] == "opus"
    sip = Call(direction="inbound", leg=Leg(SimpleNamespace(call_id="abc@host")))
    assert sip.to_record()["source"] == "sip" and sip.sip_call_id == "abc@host"


def test_hanging_up_closes_the_peer_connection_once():
    media = FakeMedia()
    manager = manager_with(media)
    call, closed = browser_call()
    manager.register(call)
    manager.hangup(call)
    assert call.status is CallStatus.HANGUP and call.end_reason == "agent_hangup"
    assert media.stopped == [call]
    assert closed  # the leg's close ran (release at stop, end after): closing twice is the peer's no-op
    manager.hangup(call)  # again: nothing changes
    assert media.stopped == [call]


def test_hold_and_transfer_refuse_a_browser_call_with_value_error():
    manager = manager_with(FakeMedia())
    manager.transfers = SimpleNamespace(forget=lambda call: None)  # type: ignore[assignment]
    call, _ = browser_call()
    with pytest.raises(ValueError):
        manager.hold(call)
    with pytest.raises(NotSipError):
        call.leg.sip()
    from callbridge.call.transfer import Transfers

    transfers = Transfers.__new__(Transfers)
    transfers.manager = manager
    with pytest.raises(ValueError):
        transfers.transfer(call, "sip:operator@example.com")
    assert call.events_of(ev.TransferRequested) == []  # nothing published for a refused REFER
