"""static_codec: a configured codec name becomes the static payload type an offer lists (RFC 3551 §6)."""

from __future__ import annotations

import pytest

from callbridge.sip.sdp import Codec, build_offer, parse_sdp, static_codec


def test_configured_names_map_to_static_payload_types() -> None:
    assert static_codec("PCMU") == Codec("PCMU", 0, 8000)
    assert static_codec("pcma") == Codec("PCMA", 8, 8000)
    # RFC 3551 §4.5.2: G722 samples at 16 kHz but its RTP clock is 8000.
    assert static_codec("G722") == Codec("G722", 9, 8000)
    assert static_codec("G722/8000") == Codec("G722", 9, 8000)
    assert static_codec("DVI4/16000").payload_type == 6
    assert static_codec("DVI4").payload_type == 5  # several static types: the lowest


@pytest.mark.parametrize("entry", ["OPUS", "G722/16000", "", "/", "PCMU/abc", "telephone-event", "PCMU\r\nm=x"])
def test_names_without_a_static_type_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        static_codec(entry)


def test_offer_keeps_the_configured_order_then_telephone_event() -> None:
    codecs = [static_codec(name) for name in ("G722", "PCMA", "PCMU")]
    offer = parse_sdp(build_offer("127.0.0.1", 40000, codecs, session_id=1, session_version=1).encode())
    media = offer.media[0]
    assert media.formats == [9, 8, 0, 101]
    assert [str(media.codec(pt)) for pt in media.formats] == ["G722/8000", "PCMA/8000", "PCMU/8000",
                                                              "telephone-event/8000"]
