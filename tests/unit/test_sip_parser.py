"""Unit tests for the SIP message parser, serialiser and ``make_response``."""

from __future__ import annotations

import time

import pytest

from callbridge.sip.errors import SipParseError
from callbridge.sip.headers import COMPACT_FORMS, Headers, canonical_name
from callbridge.sip.message import (
    MAX_CSEQ,
    REASON_PHRASES,
    CSeq,
    Request,
    Response,
    make_response,
    parse_cseq,
)
from callbridge.sip.parser import MAX_CONTENT_LENGTH, PartialRequest, parse_message, split_head
from callbridge.sip.uri import SipUri, parse_name_addr


def wire(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


BASE = (
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
)


def request(*extra: str, method: str = "OPTIONS", start: str | None = None, body: bytes = b"") -> bytes:
    start = start or f"{method} sip:bob@biloxi.example.com SIP/2.0"
    return wire(start, *BASE, f"CSeq: 314159 {method}", *extra, body=body)


SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

TYPICAL_INVITE = wire(
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS",
    "Supported: timer, 100rel",
    "User-Agent: softphone/1.0",
    "Content-Type: application/sdp",
    f"Content-Length: {len(SDP)}",
    body=SDP,
)


def reject(data: bytes, **kwargs) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data, **kwargs)
    return info.value


# -- basics -----------------------------------------------------------------------


def test_typical_invite():
    msg = parse_message(TYPICAL_INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipUri) and msg.uri.user == "bob"
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.from_addr.tag == "1928301774" and msg.from_addr.display_name == "Alice"
    assert msg.to_addr.tag is None
    assert msg.top_via.branch == "z9hG4bK776asdhds" and "rport" in msg.top_via.params
    assert msg.body == SDP and msg.content_type == "application/sdp"
    assert msg.headers.get_tokens("Supported") == {"timer", "100rel"}
    assert msg.headers.get_list("Allow") == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"]


def test_response():
    data = wire(
        "SIP/2.0 180 Ringing",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1",
        "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710",
        "CSeq: 314159 INVITE",
        "Content-Length: 0",
    )
    msg = parse_message(data)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.is_provisional and not msg.is_final
    assert msg.to_addr.tag == "a6c85cf"
    assert msg.top_via.params["received"] == "192.0.2.1"


def test_leading_crlf_keepalives_are_ignored():
    assert isinstance(parse_message(b"\r\n\r\n" + request()), Request)


def test_bare_lf_line_ends_are_tolerated():
    data = request(body=b"").replace(b"\r\n", b"\n")
    msg = parse_message(data)
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"


def test_bare_lf_head_with_crlf_inside_body():
    body = b"line\r\n\r\nmore"
    data = request(f"Content-Length: {len(body)}").replace(b"\r\n", b"\n") + body
    assert parse_message(data).body == body


def test_split_head_takes_the_first_blank_line():
    assert split_head(b"A\r\nB\r\n\r\nbody\r\n\r\nmore") == (b"A\r\nB", b"body\r\n\r\nmore")
    with pytest.raises(SipParseError):
        split_head(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n")


def test_empty_and_headless_input():
    assert reject(b"").reason == "empty message"
    assert reject(b"\r\n\r\n").reason == "empty message"
    assert "empty line" in reject(b"OPTIONS sip:a@b SIP/2.0\r\n").reason


# -- header names -----------------------------------------------------------------


@pytest.mark.parametrize("short,full", sorted(COMPACT_FORMS.items()))
def test_compact_forms_expand(short, full):
    assert canonical_name(short) == full
    assert canonical_name(short.upper()) == full


def test_compact_forms_in_a_message():
    data = wire(
        "INVITE sip:bob@example.com SIP/2.0",
        "v: SIP/2.0/TCP client.example.com;branch=z9hG4bK74bf9",
        "f: <sip:alice@example.com>;tag=9fxced76sl",
        "t: <sip:bob@example.com>",
        "i: 3848276298220188511@client.example.com",
        "CSeq: 1 INVITE",
        "m: <sip:alice@client.example.com;transport=tcp>",
        "k: timer",
        "s: Lunch",
        "c: application/sdp",
        f"l: {len(SDP)}",
        body=SDP,
    )
    msg = parse_message(data)
    assert msg.call_id == "3848276298220188511@client.example.com"
    assert msg.from_addr.tag == "9fxced76sl"
    assert msg.contacts[0].uri.transport == "tcp"  # type: ignore[union-attr]
    assert msg.headers.get("Subject") == "Lunch"
    assert msg.headers.get("Supported") == "timer"
    assert msg.content_type == "application/sdp" and msg.body == SDP
    assert [name for name, _ in msg.headers][:4] == ["Via", "From", "To", "Call-ID"]


def test_header_names_are_case_insensitive():
    data = request().replace(b"Call-ID", b"cAlL-iD").replace(b"Via:", b"VIA :").replace(b"CSeq", b"cseq")
    msg = parse_message(data)
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.headers.get("call-id") == msg.headers.get("CALL-ID") == msg.call_id
    assert msg.top_via.host == "pc33.atlanta.example.com"
    assert msg.cseq.method == "OPTIONS"


def test_canonical_names():
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("x-my-HEADER") == "X-My-Header"
    assert canonical_name("cseq") == "CSeq"
    assert canonical_name("rseq") == "RSeq"


def test_header_line_errors_keep_the_request_answerable():
    err = reject(request("this is not a header", "Bad Name: value"))
    assert isinstance(err, PartialRequest) and err.status == 400
    assert "malformed header line" in err.reason
    assert err.respondable  # every header the 400 needs survived
    assert "Bad Name" not in err.partial.headers


def test_header_value_may_be_empty():
    msg = parse_message(request("Subject:", "X-Empty:    "))
    assert msg.headers.get("Subject") == "" and msg.headers.get("X-Empty") == ""


# -- folding ----------------------------------------------------------------------


def test_line_folding_with_spaces_and_tabs():
    msg = parse_message(
        request(
            "Subject: I know you're there,",
            "   pick up the phone",
            "\t and talk to me!",
            "Contact: <sip:alice@pc33.atlanta.example.com>;",
            "\texpires=60",
        )
    )
    assert msg.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert msg.contacts[0].params == {"expires": "60"}


def test_folded_required_headers():
    data = wire(
        "OPTIONS sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP",
        "  host.example.com",
        "  ;branch=z9hG4bKfold",
        "To:",
        " <sip:bob@example.com>",
        "From: <sip:alice@example.com>",
        "  ;tag=88",
        "Call-ID: fold@example.com",
        "CSeq: 1",
        "\tOPTIONS",
    )
    msg = parse_message(data)
    assert msg.top_via.host == "host.example.com" and msg.top_via.branch == "z9hG4bKfold"
    assert msg.from_addr.tag == "88"
    assert msg.cseq == CSeq(1, "OPTIONS")


def test_folding_into_the_start_line_is_an_error():
    data = b"OPTIONS sip:a@example.com SIP/2.0\r\n continued\r\n" + request()[request().index(b"\r\n") + 2 :]
    err = reject(data)
    assert isinstance(err, PartialRequest) and "malformed header line" in err.reason
    assert isinstance(err.partial.uri, SipUri)


# -- list headers -----------------------------------------------------------------


def test_via_lists_on_one_and_several_lines_are_equivalent():
    one = parse_message(
        wire(
            "OPTIONS sip:bob@example.com SIP/2.0",
            "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2",
            "Via: SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK3;received=192.0.2.1",
            *BASE[1:],
            "CSeq: 1 OPTIONS",
        )
    )
    assert [(v.transport, v.host, v.port, v.branch) for v in one.vias] == [
        ("UDP", "a.example.com", None, "z9hG4bK1"),
        ("TCP", "b.example.com", 5070, "z9hG4bK2"),
        ("TLS", "[2001:db8::1]", 5061, "z9hG4bK3"),
    ]
    assert one.top_via.host == "a.example.com"
    assert len(one.headers.get_list("Via")) == 3


def test_contact_list_with_quoted_commas():
    msg = parse_message(
        request(
            'Contact: "Doe, John" <sip:john@example.com>;q=0.7, "A \\"B\\", C" <sip:abc@example.com>,',
            "  <sip:plain@example.com;transport=udp>;expires=30",
            "Contact: sip:bare@example.com;q=0.1",
        )
    )
    contacts = msg.contacts
    assert [c.display_name for c in contacts] == ["Doe, John", 'A "B", C', None, None]
    assert [str(c.uri) for c in contacts] == [
        "sip:john@example.com",
        "sip:abc@example.com",
        "sip:plain@example.com;transport=udp",
        "sip:bare@example.com",
    ]
    assert contacts[0].params == {"q": "0.7"}
    assert contacts[2].params == {"expires": "30"}
    assert contacts[3].params == {"q": "0.1"}  # addr-spec: the param is the header's


def test_contact_star():
    msg = parse_message(request("Contact: *", "Expires: 0", method="REGISTER"))
    assert msg.contacts == [] and msg.headers.get("Contact") == "*"
    assert msg.expires == 0


def test_record_routes_in_order():
    msg = parse_message(
        request("Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
                "Record-Route: <sip:p3.example.com;lr>")
    )
    assert [r.uri.host for r in msg.record_routes] == ["p1.example.com", "p2.example.com", "p3.example.com"]  # type: ignore[union-attr]


def test_non_list_headers_are_not_split():
    msg = parse_message(request('Authorization: Digest username="a, b", realm="x"', "Subject: a, b"))
    assert msg.headers.get_list("Authorization") == ['Digest username="a, b", realm="x"']
    assert msg.headers.get_list("Subject") == ["a, b"]


def test_empty_list_elements_are_skipped():
    msg = parse_message(request("Supported: timer,, 100rel ,"))
    assert msg.headers.get_list("Supported") == ["timer", "100rel"]


# -- addresses ----------------------------------------------------------------------


def test_name_addr_vs_addr_spec_params():
    msg = parse_message(
        wire(
            "OPTIONS sip:bob@example.com SIP/2.0",
            BASE[0],
            "To: sip:bob@example.com;user=phone;tag=abc",
            "From: <sip:alice@example.com;user=phone>;tag=xyz",
            "Call-ID: x@y",
            "CSeq: 1 OPTIONS",
        )
    )
    to, frm = msg.to_addr, msg.from_addr
    assert to.params == {"user": "phone", "tag": "abc"} and to.uri.params == {}  # type: ignore[union-attr]
    assert frm.params == {"tag": "xyz"} and frm.uri.params == {"user": "phone"}  # type: ignore[union-attr]


def test_broken_to_is_a_400():
    err = reject(request().replace(b"To: Bob <sip:bob@biloxi.example.com>", b"To: Bob <sip:bob@biloxi.example.com"))
    assert isinstance(err, PartialRequest) and err.status == 400 and "URI" in err.reason


# -- required and single-valued headers --------------------------------------------


@pytest.mark.parametrize("name", ["Via", "To", "From", "Call-ID", "CSeq"])
def test_missing_required_header(name):
    data = b"\r\n".join(line for line in request().split(b"\r\n") if not line.startswith(name.encode() + b":"))
    err = reject(data)
    assert isinstance(err, PartialRequest) and err.status == 400
    assert name in err.reason


def test_missing_max_forwards_is_tolerated():
    data = request().replace(b"Max-Forwards: 70\r\n", b"")
    msg = parse_message(data)
    assert msg.max_forwards is None


@pytest.mark.parametrize("value", ["256", "-1", "ten", "1 2", "٣", ""])
def test_bad_max_forwards(value):
    err = reject(request().replace(b"Max-Forwards: 70", f"Max-Forwards: {value}".encode()))
    assert err.status == 400 and isinstance(err, PartialRequest)


@pytest.mark.parametrize("name", ["To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Type"])
def test_duplicated_single_valued_header(name):
    values = {
        "To": "<sip:x@example.com>",
        "From": "<sip:y@example.com>;tag=2",
        "Call-ID": "other",
        "CSeq": "314159 OPTIONS",
        "Max-Forwards": "69",
        "Content-Type": "text/plain",
    }
    extra = [f"{name}: {values[name]}"] * (2 if name == "Content-Type" else 1)
    err = reject(request(*extra))
    assert f"more than one {name}" in err.reason


@pytest.mark.parametrize("value", ["", "a b", "a\tb"])
def test_bad_call_id(value):
    err = reject(request().replace(b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com", f"Call-ID: {value}".encode()))
    assert err.status == 400


def test_call_id_with_non_word_characters_is_accepted():
    msg = parse_message(request().replace(b"a84b4c76e66710@", b"YWJj==@"))
    assert msg.call_id == "YWJj==@pc33.atlanta.example.com"


# -- CSeq ---------------------------------------------------------------------------


def test_cseq_forms():
    assert parse_cseq("0 INVITE") == CSeq(0, "INVITE")
    assert parse_cseq("  0042 \t  INVITE ") == CSeq(42, "INVITE")
    assert parse_cseq(f"{MAX_CSEQ} BYE") == CSeq(2**32 - 1, "BYE")
    for bad in ("", "1", "INVITE", "1 INVITE x", "-1 INVITE", f"{2**32} INVITE", "1\xa0INVITE", "١ INVITE",
                "1 IN<VITE", "9" * 5000 + " INVITE"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)


def test_cseq_method_must_match():
    err = reject(request().replace(b"CSeq: 314159 OPTIONS", b"CSeq: 314159 INVITE"))
    assert isinstance(err, PartialRequest) and "CSeq method" in err.reason
    assert err.respondable


# -- start lines ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "start,status",
    [
        ("OPTIONS sip:bob@biloxi.example.com SIP/3.0", 505),
        ("OPTIONS sip:bob@biloxi.example.com SIP/2.0x", 400),
        ("OPTIONS  sip:bob@biloxi.example.com SIP/2.0", 400),
        ("OPTIONS sip:bob@biloxi.example.com SIP/2.0 ", 400),
        ("OPTIONS <sip:bob@biloxi.example.com> SIP/2.0", 400),
        ("OPTIONS sip:bob@biloxi.example.com?Subject=x SIP/2.0", 400),
        ("OPTIONS sip:bob@bi loxi.example.com SIP/2.0", 400),
        ("OPTIONS sip: SIP/2.0", 400),
    ],
)
def test_broken_request_lines_are_partial_requests(start, status):
    err = reject(request(start=start))
    assert isinstance(err, PartialRequest)
    assert err.status == status
    assert err.partial.method == "OPTIONS"
    assert err.partial.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert err.respondable


@pytest.mark.parametrize(
    "start",
    ["", "HELLO", "OPTIONS sip:a@b", "OPT IONS", "<html> x SIP/2.0", "\tOPTIONS sip:a@b SIP/2.0", "GET / HTTP/1.1"],
)
def test_unrecognisable_start_lines_are_plain_errors(start):
    err = reject(request(start=start) if start else b"\r\n".join(request().split(b"\r\n")[1:]))
    assert not isinstance(err, PartialRequest)


def test_lowercase_sip_version_is_accepted():
    assert isinstance(parse_message(request(start="OPTIONS sip:bob@biloxi.example.com sip/2.0")), Request)


def test_extension_method_and_tel_uri():
    msg = parse_message(request(start="PUBLISH tel:+1-201-555-0123 SIP/2.0", method="PUBLISH"))
    assert msg.method == "PUBLISH" and str(msg.uri) == "tel:+1-201-555-0123"


@pytest.mark.parametrize("line", ["SIP/2.0 99 Too small", "SIP/2.0 700 Too big", "SIP/2.0 2OO OK", "SIP/2.0 ٢٠٠ OK",
                                  "SIP/3.0 200 OK", "SIP/2.0  200 OK", "SIP/2.0"])
def test_bad_status_lines_are_dropped(line):
    data = wire(line, *BASE, "CSeq: 1 INVITE")
    err = reject(data)
    assert not isinstance(err, PartialRequest)


def test_broken_response_is_never_partial():
    data = wire("SIP/2.0 200 OK", "To: <sip:a@b>", "Call-ID: x", "CSeq: 1 INVITE")
    err = reject(data)
    assert not isinstance(err, PartialRequest) and "missing" in err.reason


def test_response_reason_may_hold_anything_utf8():
    data = wire("SIP/2.0 486 Occupé — réessayez", *BASE, "CSeq: 1 INVITE")
    msg = parse_message(data)
    assert isinstance(msg, Response) and msg.reason == "Occupé — réessayez"


# -- encoding and control characters --------------------------------------------------


def test_invalid_utf8_in_a_request_is_answerable():
    err = reject(request("Subject: caf\xe9".encode("latin-1").decode("latin-1")).replace(b"caf\xc3\xa9", b"caf\xe9"))
    assert isinstance(err, PartialRequest) and "UTF-8" in err.reason
    assert err.respondable
    make_response(err.partial, 400).serialize()


def test_invalid_utf8_in_a_response_is_dropped():
    data = wire("SIP/2.0 200 OK", *BASE, "CSeq: 1 INVITE").replace(b"Alice", b"Al\xffce")
    assert not isinstance(reject(data), PartialRequest)


def test_bare_cr_is_rejected_and_never_echoed():
    data = request("X-Evil: a\rInjected: yes")
    err = reject(data)
    assert isinstance(err, PartialRequest)
    assert "X-Evil" not in err.partial.headers
    assert b"Injected" not in make_response(err.partial, 400).serialize()
    err = reject(request(start="OPTIONS sip:bob@biloxi.example.com SIP/2.0\r"))
    assert err.status == 400


def test_nul_inside_a_quoted_display_name_is_fine():
    msg = parse_message(request().replace(b"To: Bob", b'To: "B\\\x00b"'))
    assert msg.to_addr.display_name == "B\x00b"


# -- Content-Length and bodies on datagrams ---------------------------------------------


def test_body_without_content_length_on_udp_runs_to_the_end():
    msg = parse_message(request(body=b"hello"))
    assert msg.body == b"hello"


def test_extra_octets_after_the_body_are_dropped():
    msg = parse_message(request("Content-Length: 5", body=b"helloEXTRA"))
    assert msg.body == b"hello"


def test_content_length_larger_than_the_datagram_is_400():
    err = reject(request("Content-Length: 6", body=b"hello"))
    assert isinstance(err, PartialRequest) and err.status == 400 and err.respondable


@pytest.mark.parametrize("value", ["-1", "five", "1.0", "0x10", "１", "²", "5 5", ""])
def test_malformed_content_length(value):
    err = reject(request(f"Content-Length: {value}", body=b"hello"))
    assert err.status == 400


def test_content_length_with_leading_zeros_and_compact_form():
    assert parse_message(request("l: 0005", body=b"hello!")).body == b"hello"


def test_absurd_content_length_values_raise_parse_errors():
    err = reject(request("Content-Length: " + "9" * 10_000, body=b"x"))
    assert err.status == 400
    big = MAX_CONTENT_LENGTH + 1
    err = reject(request(f"Content-Length: {big}", body=b"x" * big))
    assert err.status == 413


def test_stream_messages_need_content_length():
    err = reject(request(body=b""), stream=True)
    assert "Content-Length" in err.reason
    assert isinstance(parse_message(request("Content-Length: 0"), stream=True), Request)


# -- accessors parsed on use --------------------------------------------------------------


def test_expires_is_checked_on_use_only():
    msg = parse_message(request("Expires: 1" + "0" * 100))
    with pytest.raises(SipParseError):
        msg.expires  # noqa: B018
    assert parse_message(request("Expires: 3600")).expires == 3600
    assert parse_message(request()).expires is None


def test_content_type_is_lowercased_without_params():
    msg = parse_message(request("Content-Type: Application/SDP ; charset=utf-8"))
    assert msg.content_type == "application/sdp"


# -- serialisation ---------------------------------------------------------------------


def _fields(msg: Request | Response) -> tuple:
    headers = [h for h in msg.headers if h[0] != "Content-Length"]
    return (msg.start_line(), headers, msg.body)


@pytest.mark.parametrize(
    "data",
    [
        TYPICAL_INVITE,
        request("Subject: folded", "  value", "v: SIP/2.0/UDP b.example.com;branch=z9hG4bK2"),
        request(body=b"no content length"),
        wire("SIP/2.0 100 ", *BASE, "CSeq: 1 INVITE"),
    ],
)
def test_parse_serialize_parse_round_trip(data):
    first = parse_message(data)
    wire_form = first.serialize()
    second = parse_message(wire_form)
    assert _fields(first) == _fields(second)
    assert second.serialize() == wire_form
    assert second.headers.get("Content-Length") == str(len(first.body))


def test_serialize_always_writes_one_content_length_last():
    msg = parse_message(request("Content-Length: 5", body=b"hello"))
    out = msg.serialize()
    assert out.count(b"Content-Length") == 1
    assert out.endswith(b"Content-Length: 5\r\n\r\nhello")


def test_serialize_refuses_header_injection():
    req = Request(method="OPTIONS", uri=SipUri(host="example.com"))
    req.headers.add("Subject", "hi\r\nVia: SIP/2.0/UDP evil")
    with pytest.raises(ValueError):
        req.serialize()


def test_headers_helpers():
    headers = Headers([("v", "a"), ("Subject", "s"), ("Via", "b")])
    assert headers.get_all("Via") == ["a", "b"]
    headers.set("via", "c")
    assert list(headers) == [("Via", "c"), ("Subject", "s")]
    headers.prepend("Via", "z")
    headers.remove("Subject")
    assert list(headers) == [("Via", "z"), ("Via", "c")]
    assert "VIA" in headers and "Subject" not in headers and 5 not in headers
    clone = headers.copy()
    clone.add("To", "t")
    assert len(headers) == 2 and len(clone) == 3


# -- make_response ----------------------------------------------------------------------


def test_make_response_copies_headers_and_adds_a_to_tag():
    req = parse_message(
        request(
            "v: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1",
            "Record-Route: <sip:proxy.example.com;lr>",
            method="INVITE",
        )
    )
    assert isinstance(req, Request)
    resp = make_response(req, 200, to_tag="as83kd", headers=[("Contact", "<sip:uas@example.com>")], body=b"x")
    assert resp.status == 200 and resp.reason == "OK"
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")  # all Vias, in order
    assert resp.headers.get("From") == req.headers.get("From")
    assert resp.headers.get("Call-ID") == req.call_id
    assert resp.headers.get("CSeq") == "314159 INVITE"
    assert resp.to_addr.tag == "as83kd"
    assert resp.headers.get_all("Record-Route") == ["<sip:proxy.example.com;lr>"]
    assert resp.headers.get("Contact") == "<sip:uas@example.com>"
    assert "Max-Forwards" not in resp.headers
    again = parse_message(resp.serialize())
    assert isinstance(again, Response) and again.body == b"x" and again.to_addr.tag == "as83kd"


def test_make_response_keeps_an_existing_to_tag():
    req = parse_message(request().replace(b"To: Bob <sip:bob@biloxi.example.com>",
                                          b"To: <sip:bob@biloxi.example.com> ; tag = abc"))
    resp = make_response(req, 200, to_tag="other")  # type: ignore[arg-type]
    assert resp.to_addr.tag == "abc"
    assert resp.headers.get("To") == req.headers.get("To")


def test_make_response_without_tag_and_record_route_rules():
    req = parse_message(request("Record-Route: <sip:p.example.com;lr>"))
    resp = make_response(req, 100)  # type: ignore[arg-type]
    assert resp.reason == "Trying" and resp.to_addr.tag is None
    assert "Record-Route" not in resp.headers  # 100 and non-dialog methods: never copied
    assert make_response(req, 299).reason == "Unknown"  # type: ignore[arg-type]
    assert make_response(req, 486, "Busy Right Now").reason == "Busy Right Now"  # type: ignore[arg-type]


def test_reason_phrases_cover_the_common_codes():
    for code in (100, 180, 183, 200, 400, 401, 403, 404, 405, 406, 407, 408, 415, 416, 420, 480, 481, 483, 486, 487,
                 488, 500, 501, 503, 505, 603):
        assert REASON_PHRASES[code]


def test_to_tag_helpers_on_name_addr():
    addr = parse_name_addr("Bob <sip:bob@example.com>")
    assert str(addr.with_tag("t1")) == '"Bob" <sip:bob@example.com>;tag=t1'


# -- performance --------------------------------------------------------------------------


def test_typical_invite_parses_well_under_100_microseconds():
    parse_message(TYPICAL_INVITE)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(200):
            parse_message(TYPICAL_INVITE)
        best = min(best, (time.perf_counter() - start) / 200)
    assert best < 100e-6, f"{best * 1e6:.1f} µs per INVITE"
