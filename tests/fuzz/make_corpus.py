"""Write the seed corpora under tests/fuzz/corpus/<target>/ (committed; rerun after changing this).

    .venv/bin/python -m tests.fuzz.make_corpus

Seeds come from the unit tests' fixtures (tests/unit/sipfixtures.py, the RFC
4475 torture messages in tests/unit/test_sip_torture.py, the flows) and from
the encoders of the modules themselves, so each is a valid input that reaches
deep into its parser: libFuzzer mutates from there.
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import struct
import uuid

from callbridge.media.dtmf.rfc4733 import DTMF_DIGITS
from callbridge.rtp.packet import RtpPacket
from callbridge.rtp.rtcp import (
    SDES_CNAME,
    ReportBlock,
    RtcpBye,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    RtcpUnknown,
    SdesChunk,
    serialize_compound,
)
from callbridge.sip.sdp import build_offer
from callbridge.standins.eventstream import HeaderType, HeaderValue, Message, encode, encode_headers
from tests.fuzz.targets import CORPUS_DIR, TARGETS
from tests.unit.sipfixtures import SDP_OFFER, invite
from tests.unit.test_sip_torture import MESSAGES

TORTURE = ("wsinv", "intmeth", "esc01", "lwsdisp", "mpart01", "unreason", "badvers", "multi01",
           "dblreq", "transports", "ncl", "escnull")


def sip_parser() -> dict[str, bytes]:
    ok = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv1;rport=5070\r\n"
          b"From: \"Alice\" <sip:alice@127.0.0.1:5070>;tag=alice-tag\r\nTo: <sip:demo@127.0.0.1>;tag=b1\r\n"
          b"Call-ID: call-1@peer\r\nCSeq: 1 INVITE\r\nContact: <sip:demo@127.0.0.1:5060>\r\n"
          b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
          b"Content-Type: application/sdp\r\nContent-Length: " + str(len(SDP_OFFER)).encode()
          + b"\r\n\r\n" + SDP_OFFER.encode())
    seeds = {"invite": invite(), "ok_200": ok,
             "register": invite(method="REGISTER", body="", extra="Expires: 3600\r\n"
                                "Authorization: Digest username=\"u\", realm=\"r\", nonce=\"n\", "
                                "uri=\"sip:r\", response=\"0123456789abcdef0123456789abcdef\"\r\n")}
    seeds.update({f"rfc4475_{name}": MESSAGES[name] for name in TORTURE})
    return seeds


def sip_uri() -> dict[str, bytes]:
    lines = {
        "sip_full": "sip:alice:pw@[2001:db8::10]:5070;transport=tcp;lr?subject=hi&x=y",
        "name_addr": '"Alice \\"A\\"" <sip:alice@example.com>;tag=1234;q=0.7',
        "addr_spec": "sip:bob@biloxi.example.com;tag=a48s",
        "via_list": "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;received=192.0.2.2, "
                    "SIP/2.0/TCP host.example.com;rport;x=\"a,b\"",
        "tel": "tel:+1-555-123-0000;phone-context=example.com",
        "dial_string": "sip:*21#@pbx.example.com",
        "contacts": 'Bob <sips:bob%20b@biloxi.com>;expires=60, <sip:c@[::1]:5061>, "C, D" <sip:d@e>',
    }
    return {name: text.encode() for name, text in lines.items()}


def sdp() -> dict[str, bytes]:
    offer = build_offer("192.0.2.1", 40000, [("PCMU", 0, 8000), ("G722", 9, 8000)],
                        session_id=1, session_version=2, comfort_noise=True).encode()
    hold = (b"v=0\r\no=- 5 6 IN IP4 0.0.0.0\r\ns= \r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=sendonly\r\n"
            b"m=audio 49170 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
            b"a=ptime:20.0\r\na=maxptime:40\r\n")
    ipv6 = (b"v=0\r\no=bob 2890844730 2890844731 IN IP6 2001:db8::2\r\ns=call\r\ni=info\r\nu=http://x/\r\n"
            b"e=a@b\r\np=+1 555\r\nb=AS:64\r\nt=2873397496 2873404696\r\nr=7d 1h 0 25h\r\nz=0 -1h\r\n"
            b"k=prompt\r\nm=audio 5000/2 RTP/AVP 96 0\r\nc=IN IP6 2001:db8::2\r\nb=TIAS:64000\r\n"
            b"a=rtpmap:96 opus/48000/2\r\na=rtcp:5003 IN IP6 2001:db8::3\r\na=recvonly\r\n"
            b"m=video 0 RTP/AVP 31\r\nm=image 6000 udptl t38\r\na=T38FaxVersion:0\r\n")
    return {"fixture_offer": SDP_OFFER.encode(), "our_offer": offer, "hold": hold, "ipv6_multi": ipv6}


def rtp() -> dict[str, bytes]:
    plain = RtpPacket(0, 1, 160, 0x1234, b"\xff" * 160).serialize()
    full = RtpPacket(96, 2, 320, 0x1234, b"\x01" * 20, marker=True, csrcs=(1, 2),
                     extension_profile=0xBEDE, extension_data=b"\x10\x01\x00\x00", padding=3).serialize()
    event = RtpPacket(101, 3, 480, 0x1234, b"\x05\x8a\x03\x20", marker=True).serialize()
    return {"pcmu": plain, "full_header": full, "telephone_event": event}


def rtcp() -> dict[str, bytes]:
    block = ReportBlock(0x11223344, 12, -3, 70000, 40, 0xAABBCCDD, 65536)
    sr = RtcpSenderReport(0x55667788, 0xE1234567_89ABCDEF, 8000, 50, 8000, [block])
    sdes = RtcpSdes([SdesChunk(0x55667788, [(SDES_CNAME, b"peer@example"), (6, b"tool")])])
    seeds = {
        "sr_sdes": serialize_compound([sr, sdes]),
        "rr_bye": serialize_compound([RtcpReceiverReport(0x55667788, [block, block]),
                                      RtcpBye([0x55667788, 1], b"hangup")]),
        "app": serialize_compound([RtcpReceiverReport(1), RtcpUnknown(204, 1, b"\0\0\0\1name1234")]),
    }
    # A padded RR (P bit, last octet counts the padding).
    rr = RtcpReceiverReport(9).serialize()
    padded = bytes([rr[0] | 0x20, rr[1]]) + struct.pack("!H", 2) + rr[4:] + b"\0\0\0\4"
    seeds["padded_rr"] = padded
    return seeds


def rfc4733() -> dict[str, bytes]:
    packets = b""
    for step, flags, duration, end in ((0, 1, 160, 0), (0, 0, 320, 0), (0, 0, 480, 0x80), (0, 0, 480, 0x80),
                                       (800, 1, 160, 0), (0, 4, 800, 0x80)):
        packets += struct.pack("!HBB", step, flags, 1) + struct.pack("!BBH", 5, end | 10, duration)
    return {
        "wire_two_keys": b"\x00\x00\x01" + struct.pack("!I", 1000) + packets,
        "one_digit_long": bytes([1, 11, 2]) + struct.pack("!H", 9000) + bytes([1, 10]) + struct.pack("!I", 2**32 - 5),
        "dial_string": bytes([2, 0]) + struct.pack("!I", 77)
        + bytes(DTMF_DIGITS.index(c) if c in DTMF_DIGITS else 20 for c in "12*#A9") + bytes([20, 21, 1]),
    }


def eventstream() -> dict[str, bytes]:
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event",
               "flag": True, "off": False, "byte": HeaderValue(HeaderType.BYTE, -5),
               "short": HeaderValue(HeaderType.SHORT, 300), "int": 70000,
               "long": HeaderValue(HeaderType.LONG, 2**40), "bytes": b"\x00\x01",
               "date": datetime.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=datetime.UTC),
               "id": uuid.UUID(bytes=b"0123456789abcdef")}
    message = encode(Message(headers, b'{"bytes":"eyJldmVudCI6e319"}'))
    raw_headers = encode_headers(headers)
    return {
        "message": b"\x00" + message,
        "framed_headers": b"\x01" + struct.pack(">H", len(raw_headers)) + raw_headers + b"payload",
        "headers_only": b"\x02" + raw_headers,
        "stream": b"\x03\x07" + bytes([len(raw_headers[:200])]) + raw_headers[:200] + b"{}\xff\xfe"
        + b"\x00abc\xff\xfe" + message[:20],
    }


def nova_events() -> dict[str, bytes]:
    def line(name: str, fields: dict) -> str:
        return json.dumps({"event": {name: fields}})

    audio = base64.b64encode(b"\x01\x00" * 8).decode()
    reply = [
        line("completionStart", {"sessionId": "s"}),
        line("contentStart", {"contentId": "c1", "type": "TEXT", "role": "ASSISTANT",
                              "additionalModelFields": json.dumps({"generationStage": "SPECULATIVE"})}),
        line("textOutput", {"contentId": "c1", "content": "Hello there", "role": "ASSISTANT"}),
        line("contentEnd", {"contentId": "c1", "stopReason": "PARTIAL_TURN"}),
        line("contentStart", {"contentId": "c2", "type": "AUDIO", "role": "ASSISTANT"}),
        line("audioOutput", {"contentId": "c2", "content": audio}),
        line("contentEnd", {"contentId": "c2", "stopReason": "END_TURN"}),
        line("usageEvent", {"totalInputTokens": 10, "totalOutputTokens": 4, "totalTokens": 14,
                            "details": {"delta": {}}}),
    ]
    barge = [
        line("textOutput", {"contentId": "u1", "content": "hi", "role": "USER"}),
        line("textOutput", {"contentId": "c3", "content": '{ "interrupted" : true }', "role": "ASSISTANT"}),
        line("toolUse", {"contentId": "c4", "toolUseId": "t1", "toolName": "lookup_order",
                         "content": '{"order": 1}'}),
        line("contentEnd", {"contentId": "c4", "stopReason": "TOOL_USE"}),
        line("completionEnd", {}),
    ]
    return {"reply": "\n".join(reply).encode(), "barge_in_tool": "\n".join(barge).encode()}


CONFIG = """\
server:
  sip_port: 5070
  host: 0.0.0.0
media:
  rtp_port_min: 20000
  rtp_port_max: 20100
  codecs: [PCMU, g722]
  dtmf_inband: auto
inbound_trunks:
  - name: twilio
    allowed_cidrs: [54.172.60.0/30, "2001:db8::/32"]
    auth: {username: u, password: p, algorithms: [SHA-256]}
routing:
  default_flow: demo
agents:
  - name: assistant
  - name: nova
    provider: nova_sonic
    nova_sonic: {region: us-east-1}
    tools: [lookup_order, end_call]
webhooks:
  url: https://example.com/hook
  secret: 0123456789abcdef-secret
api:
  allowed_hosts: [pbx.example.com, "[::1]:8080"]
  allowed_origins: [https://dashboard.example]
"""

SMALL_CONFIG = """\
server: &s {sip_port: 5070}
inbound_trunks:
  - name: a
    allowed_cidrs: [10.0.0.0/8]
    flow: demo
    routes: {"+15551230000": demo}
"""


def config() -> dict[str, bytes]:
    return {"full": CONFIG.encode(), "anchors": SMALL_CONFIG.encode(), "empty": b""}


# tests/unit/flows/support.yaml (every node type) in flow style, to fit the 1 KiB -max_len.
COMPACT_FLOW = """\
flow: s
start: w
languages: [en, fr]
voices: {en: amy}
vars: {topic: general}
nodes:
  w: {type: say, text: {en: Hi, fr: Salut}, next: c}
  c: {type: play, file: chime.wav, next: h}
  h: {type: branch, when: [{if: {hours: {timezone: Europe/Paris, days: mon-fri, open: "09:00",
     close: "17:30"}}, next: l}, {if: {caller: {prefix: "+331"}}, next: l}], else: b}
  l: {type: http, method: POST, url: "https://crm.example.com/x", headers: {X-Call: "{{ call_id }}"},
     json: {n: "{{ caller.number }}", t: [ivr]}, timeout: 2, into: crm, next: m, on_error: m}
  m: {type: menu, prompt: "Hi {{ crm.name }}. Press 1.", invalid_prompt: Sorry,
     options: {1: {label: S, next: t}, 2: {next: g, set: {topic: billing}}, "*": m}, default: o}
  g: {type: gather, input: both, prompt: "Yes or no?", choices: {"yes": "yes", "1": "yes"},
     hints: [account], into: acct, next: a, on_timeout: o, on_no_match: o}
  t: {type: transfer, target: "+15550001111", method: bridge, trunk: twilio, on_failure: o}
  o: {type: transfer, target: "{{ operator_uri }}", on_failure: b}
  a: {type: agent, agent: assistant, reason: "{{ topic }}", context: {acct: "{{ acct }}"}, next: b}
  b: {type: hangup}
"""


def flow() -> dict[str, bytes]:
    return {
        "every_node": COMPACT_FLOW.encode(),
        "tiny": b"flow: t\nstart: a\nnodes:\n  a: {type: say, text: hi, next: b}\n  b: {type: hangup}\n",
    }


WRITERS = {"sip_parser": sip_parser, "sip_uri": sip_uri, "sdp": sdp, "rtp": rtp, "rtcp": rtcp,
           "rfc4733": rfc4733, "eventstream": eventstream, "nova_events": nova_events,
           "config": config, "flow": flow}


def main() -> None:
    assert set(WRITERS) == set(TARGETS), set(WRITERS) ^ set(TARGETS)
    for name, writer in WRITERS.items():
        folder = CORPUS_DIR / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for seed, data in writer().items():
            (folder / seed).write_bytes(data)
        print(f"{name}: {len(list(folder.iterdir()))} seeds")


if __name__ == "__main__":
    main()
