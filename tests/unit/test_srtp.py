"""SRTP with SDES keys: a=crypto parsing (RFC 4568), libsrtp contexts, the offer/answer policy per mode,
and the socket hook (authentication gates latching), on real loopback UDP."""

from __future__ import annotations

import asyncio
import base64
import socket
import struct

import numpy as np
import pytest

from callbridge.call import srtp_policy
from callbridge.call.srtp_policy import SrtpRefused
from callbridge.media.codecs import codec_for
from callbridge.media.stream import AudioStream
from callbridge.rtp.ports import PortAllocator
from callbridge.rtp.socket import RtpSocket
from callbridge.rtp.srtp import KEY_SALT_LEN, SrtpContext, SrtpError, new_crypto, parse_crypto
from callbridge.sip.sdp import NotAcceptable, apply_answer, build_offer, crypto_values, negotiate_answer, parse_sdp

# RFC 4568 §9.1 (first line without its MKI: we take single-key attributes only).
RFC_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
RFC_CRYPTO = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20"
RFC_CRYPTO_MKI = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:32"
PCMU = codec_for("PCMU")()


def rtp(seq: int, ssrc: int = 0x1234, payload: bytes = b"\xff" * 160, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, seq * 160, ssrc) + payload


def rtcp_rr(ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def pair() -> tuple[SrtpContext, SrtpContext]:
    ours, theirs = new_crypto(), new_crypto()
    return SrtpContext(ours, theirs), SrtpContext(theirs, ours)


# -- a=crypto --------------------------------------------------------------------------------------

def test_rfc4568_example_parses_and_round_trips():
    crypto = parse_crypto(RFC_CRYPTO)
    assert (crypto.tag, crypto.suite, crypto.lifetime) == (1, "AES_CM_128_HMAC_SHA1_80", "2^20")
    assert crypto.key == base64.b64decode(RFC_KEY) and len(crypto.key) == 30
    assert str(crypto) == RFC_CRYPTO
    assert parse_crypto(str(crypto)) == crypto
    short = parse_crypto(f"2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY} WSH=64 KDR=0")
    assert (short.tag, short.suite, short.lifetime) == (2, "AES_CM_128_HMAC_SHA1_32", None)


def test_fresh_keys_are_random_and_the_right_length():
    keys = {new_crypto().key for _ in range(50)}
    assert len(keys) == 50 and all(len(k) == KEY_SALT_LEN for k in keys)
    assert parse_crypto(str(new_crypto(7, "AES_CM_128_HMAC_SHA1_32"))).tag == 7


@pytest.mark.parametrize("value, why", [
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY[:-4]}", "bytes; the suite needs 30"),  # 27-byte key
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}AAAA", "bytes; the suite needs 30"),  # 33 bytes
    ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64*at*all*!!!!!!!!!!!!!!!!!!!", "not valid base64"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:\u00e9\u00e9\u00e9\u00e9", "not valid base64"),
    (RFC_CRYPTO_MKI, "MKI"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY};inline:{RFC_KEY}", "MKI"),
    (f"1 F8_128_HMAC_SHA1_80 inline:{RFC_KEY}", "unsupported crypto suite"),
    (f"1 AES_CM_128_HMAC_SHA1_80 srtp:{RFC_KEY}", "inline:"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNENCRYPTED_SRTP", "unsupported session parameter"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=24", "unsupported session parameter"),
    (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "tag"),
    (f"x AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "tag"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^x", "lifetime"),
    ("1 AES_CM_128_HMAC_SHA1_80", "needs"),
    ("", "needs"),
])
def test_bad_crypto_attributes_are_rejected_with_a_reason(value, why):
    with pytest.raises(SrtpError, match=why.replace("^", r"\^")):
        parse_crypto(value)


# -- protect / unprotect -------------------------------------------------------------------------------

@pytest.mark.parametrize("suite, tag_len", [("AES_CM_128_HMAC_SHA1_80", 10), ("AES_CM_128_HMAC_SHA1_32", 4)])
def test_round_trip_rtp_and_rtcp(suite, tag_len):
    ours, theirs = new_crypto(1, suite), new_crypto(1, suite)
    sender, receiver = SrtpContext(ours, theirs), SrtpContext(theirs, ours)
    for seq in range(1, 60):
        packet = rtp(seq)
        wire = sender.protect(packet)
        assert len(wire) == len(packet) + tag_len
        assert wire[:12] == packet[:12] and wire[12:172] != packet[12:]  # header clear, payload encrypted
        assert receiver.unprotect(wire) == packet
    report = rtcp_rr()
    wire = sender.protect_rtcp(report)
    assert len(wire) == len(report) + 4 + 10  # E-flag/index and the 80-bit SRTCP tag in both suites
    assert receiver.unprotect_rtcp(wire) == report
    assert sender.counters.protected == 60 and receiver.counters.unprotected == 60


def test_tampered_packets_are_dropped_and_counted():
    sender, receiver = pair()
    for seq in range(1, 5):
        wire = bytearray(sender.protect(rtp(seq)))
        wire[20] ^= 0x01
        assert receiver.unprotect(bytes(wire)) is None
    wrong_key = SrtpContext(new_crypto(), new_crypto())  # a stranger: another key
    assert receiver.unprotect(wrong_key.protect(rtp(9))) is None
    assert receiver.unprotect(rtp(10)) is None  # plain RTP on an SRTP call
    assert receiver.unprotect_rtcp(rtcp_rr() + b"\x80\x00\x00\x01" + b"\x00" * 10) is None
    assert receiver.unprotect(b"\x80") is None and receiver.unprotect(b"\x80" * 1600) is None
    counters = receiver.counters
    assert counters.auth_failures == 7 and counters.malformed == 2 and counters.unprotected == 0, counters
    assert receiver.unprotect(sender.protect(rtp(11))) == rtp(11)  # the real stream still works


def test_replayed_and_too_old_packets_are_dropped():
    sender, receiver = pair()
    first = sender.protect(rtp(1))
    assert receiver.unprotect(first) == rtp(1)
    assert receiver.unprotect(first) is None
    wires = [sender.protect(rtp(seq)) for seq in range(2, 300)]
    for wire in wires:
        assert receiver.unprotect(wire) is not None
    assert receiver.unprotect(wires[10]) is None  # older than the 128-packet window
    assert receiver.counters.replays == 2
    report = sender.protect_rtcp(rtcp_rr())
    assert receiver.unprotect_rtcp(report) is not None and receiver.unprotect_rtcp(report) is None
    assert receiver.counters.replays == 3


def test_rekey_takes_the_new_remote_key():
    ours, theirs, renewed = new_crypto(), new_crypto(), new_crypto()
    receiver = SrtpContext(ours, theirs)
    receiver.rekey_remote(renewed)
    assert receiver.unprotect(SrtpContext(renewed, ours).protect(rtp(1))) == rtp(1)
    with pytest.raises(SrtpError):
        receiver.rekey_remote(new_crypto(1, "AES_CM_128_HMAC_SHA1_32"))


# -- offer/answer per mode --------------------------------------------------------------------------------

def offer_sdp(proto: str = "RTP/SAVP", crypto: tuple[str, ...] = (RFC_CRYPTO,)) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio 40000 {proto} 0 101", "a=rtpmap:101 telephone-event/8000",
             *(f"a=crypto:{c}" for c in crypto)]
    return "\r\n".join(lines) + "\r\n"


def answer(text: str, mode: str):
    offer = parse_sdp(text)
    protos, usable = srtp_policy.answer_terms(mode)
    result = negotiate_answer(offer, local_address="127.0.0.1", local_port=41000, codec_preference=["PCMU"],
                              session_id=1, session_version=1, accept_protos=protos, usable=usable)
    return result, srtp_policy.secure_answer(offer, result, mode)


def test_required_answers_savp_with_a_fresh_key_under_the_offer_tag():
    bad_first = "3 AES_CM_128_HMAC_SHA1_80 inline:short"
    result, context = answer(offer_sdp(crypto=(bad_first, RFC_CRYPTO.replace("1 ", "4 ", 1))), "required")
    media = parse_sdp(result.sdp.encode()).media[0]
    assert media.proto == "RTP/SAVP"
    [value] = crypto_values(media)
    local = parse_crypto(value)
    assert local.tag == 4 and local.suite == "AES_CM_128_HMAC_SHA1_80" and local.key != base64.b64decode(RFC_KEY)
    assert context.remote.key == base64.b64decode(RFC_KEY) and context.local == local


@pytest.mark.parametrize("text", [offer_sdp("RTP/AVP", ()), offer_sdp("RTP/SAVP", ()),
                                  offer_sdp(crypto=(RFC_CRYPTO_MKI,))])
def test_required_refuses_offers_without_a_usable_key(text):
    with pytest.raises(NotAcceptable):
        answer(text, "required")


def test_optional_takes_keys_when_offered_and_plain_rtp_otherwise():
    result, context = answer(offer_sdp("RTP/AVP", (RFC_CRYPTO,)), "optional")  # best-effort SDES
    assert context is not None and result.sdp.media[0].proto == "RTP/AVP"
    assert len(crypto_values(result.sdp.media[0])) == 1
    result, context = answer(offer_sdp("RTP/AVP", ()), "optional")
    assert context is None and crypto_values(result.sdp.media[0]) == []
    with pytest.raises(NotAcceptable):
        answer(offer_sdp("RTP/SAVP", ("1 AES_CM_128_HMAC_SHA1_80 inline:@@@@",)), "optional")


def test_off_ignores_keys_and_refuses_savp():
    result, context = answer(offer_sdp("RTP/AVP", (RFC_CRYPTO,)), "off")
    assert context is None and crypto_values(result.sdp.media[0]) == []
    with pytest.raises(NotAcceptable):
        answer(offer_sdp(), "off")


def test_sdes_only_over_tls():
    assert srtp_policy.effective_mode("auto", "tls", where="t") == "optional"
    assert srtp_policy.effective_mode(None, "udp", where="t") == "off"
    assert srtp_policy.effective_mode("required", "TLS", where="t") == "required"
    assert srtp_policy.effective_mode("optional", "tcp", where="t") == "off"
    with pytest.raises(SrtpRefused, match="RFC 4568 §8.3"):
        srtp_policy.effective_mode("required", "udp", where="trunk twilio")


def test_our_offer_and_the_answer_to_it():
    for mode, proto in (("required", "RTP/SAVP"), ("optional", "RTP/AVP")):
        proto_out, keys = srtp_policy.offer_terms(mode)
        offer = build_offer("127.0.0.1", 41000, [("PCMU", 0, 8000)], session_id=1, session_version=1,
                            proto=proto_out, crypto=[str(k) for k in keys])
        media = parse_sdp(offer.encode()).media[0]
        assert media.proto == proto and [parse_crypto(v).tag for v in crypto_values(media)] == [1, 2]
        # The peer takes our second suite.
        theirs = new_crypto(2, "AES_CM_128_HMAC_SHA1_32")
        reply = parse_sdp(offer_sdp(proto, (str(theirs),)).replace("0 101", "0"))
        context = srtp_policy.secure_offer_answered(keys, mode, apply_answer(offer, reply))
        assert context.local == keys[1] and context.remote == theirs and context.profile == proto
    plain = parse_sdp(offer_sdp("RTP/AVP", ()))
    assert srtp_policy.secure_offer_answered(keys, "optional", apply_answer(offer, plain)) is None
    with pytest.raises(SrtpRefused):
        srtp_policy.secure_offer_answered(srtp_policy.offer_terms("required")[1], "required",
                                          apply_answer(offer, plain))
    assert srtp_policy.offer_terms("off") == ("RTP/AVP", [])


def test_a_reoffer_keeps_srtp_and_may_rekey():
    result, context = answer(offer_sdp(), "required")
    renewed = new_crypto(1)
    offer = parse_sdp(offer_sdp(crypto=(str(renewed),)))
    protos, usable = srtp_policy.reanswer_terms(context)
    again = negotiate_answer(offer, local_address="127.0.0.1", local_port=41000, codec_preference=["PCMU"],
                             session_id=1, session_version=2, accept_protos=protos, usable=usable)
    srtp_policy.secure_reanswer(context, offer, again)
    assert context.remote == renewed
    assert parse_crypto(crypto_values(again.sdp.media[0])[0]).key == context.local.key  # our key stays
    with pytest.raises(NotAcceptable):  # a downgrade to plain RTP on an encrypted call
        negotiate_answer(parse_sdp(offer_sdp("RTP/AVP", ())), local_address="127.0.0.1", local_port=1,
                         codec_preference=["PCMU"], session_id=1, session_version=3, accept_protos=protos,
                         usable=usable)


# -- the socket: authentication gates latching -------------------------------------------------------------

@pytest.fixture
async def secure_call():
    ports = PortAllocator(44200, 44300)
    sock = RtpSocket(ports, "127.0.0.1")
    await sock.open()
    ours, theirs = new_crypto(), new_crypto()
    sock.srtp = SrtpContext(ours, theirs)
    peer = SrtpContext(theirs, ours)
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind(("127.0.0.1", 0))
    caller.setblocking(False)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    sock.set_remote(*caller.getsockname())
    stream = AudioStream(sock, "PCMU", 0, telephone_event_pt=101)
    stream.start(0.0)
    yield stream, peer, caller, stranger, ("127.0.0.1", sock.port)
    stream.close()
    caller.close()
    stranger.close()


async def test_only_authenticated_packets_latch_and_reach_the_call(secure_call):
    stream, peer, caller, stranger, local = secure_call
    sock = stream.socket
    tone = PCMU.encode((np.sin(np.arange(160) * 2 * np.pi * 1000 / 8000) * 8000).astype(np.int16))
    # A stranger's plain RTP, perfectly valid in the clear, and forged SRTP: neither latches.
    forger = SrtpContext(new_crypto(), new_crypto())
    for seq in range(1, 30):  # in sequence, one SSRC: without SRTP this would latch after two
        stranger.sendto(rtp(seq, ssrc=0x666, payload=tone), local)
    for seq in range(1, 30):
        stranger.sendto(forger.protect(rtp(seq + 100, ssrc=0x667, payload=tone)), local)
    await asyncio.sleep(0.1)
    assert not sock.latched and stream.stats.packets_received == 0
    assert sock.srtp.counters.auth_failures == 58
    # The keyholder latches at once, from anywhere, and its audio reaches the call.
    received = []
    for seq in range(1, 6):
        caller.sendto(peer.protect(rtp(seq, payload=tone)), local)
    await asyncio.sleep(0.1)
    assert sock.latched and sock.remote == caller.getsockname()
    assert stream.stats.packets_received == 5
    # What we send is SRTP the peer can open, not plain G.711.
    sock.confirm_remote()
    loop = asyncio.get_running_loop()
    for _ in range(5):
        await asyncio.sleep(0.02)
        stream.tick(loop.time())
    await asyncio.sleep(0.05)
    while True:
        try:
            received.append(caller.recv(2048))
        except BlockingIOError:
            break
    media = [p for p in received if p[1] & 0x7F == 0]
    assert media, "nothing was sent"
    for wire in media:
        plain = peer.unprotect(wire)
        assert plain is not None and len(wire) == len(plain) + 10 and wire[12:] != plain[12:]


async def test_replayed_packets_are_dropped_by_the_socket(secure_call):
    stream, peer, caller, _, local = secure_call
    wires = [peer.protect(rtp(seq)) for seq in range(1, 4)]
    for wire in wires + wires:
        caller.sendto(wire, local)
    await asyncio.sleep(0.1)
    assert stream.stats.packets_received == 3 and stream.socket.srtp.counters.replays == 3
    record = stream.media_record()["srtp"]
    assert record["replays"] == 3 and record["suite"] == "AES_CM_128_HMAC_SHA1_80"


# -- configuration ---------------------------------------------------------------------------------------

def test_config_srtp_per_trunk_and_default(tmp_path):
    from callbridge.app.config import load_config
    from callbridge.app.trunk_directory import inbound_policy
    from callbridge.yamlsource import SourceError

    path = tmp_path / "c.yaml"
    path.write_text("media:\n  srtp: off\n"  # YAML 1.1 reads a bare off as false: still "off"
                    "inbound_trunks:\n  - name: tw\n    srtp: required\n  - name: other\n"
                    "outbound_trunks:\n  - name: out\n    host: example.pstn.twilio.com\n    transport: tls\n"
                    "    srtp: required\n")
    config = load_config(path)
    assert config.media.srtp == "off" and config.outbound_trunks[0].srtp == "required"
    assert [inbound_policy(t).srtp for t in config.inbound_trunks] == ["required", None]
    path.write_text("outbound_trunks:\n  - name: out\n    host: example.pstn.twilio.com\n    srtp: optional\n")
    with pytest.raises(SourceError, match="needs transport: tls"):
        load_config(path)
    path.write_text("media:\n  srtp: yes\n")
    with pytest.raises(SourceError, match="srtp"):
        load_config(path)
