"""SIP/SIPS URIs, name-addr / addr-spec values and Via hops (RFC 3261 §19.1, §20, §25)."""

from __future__ import annotations

import pytest

from callbridge.sip.errors import SipParseError
from callbridge.sip.parser import PartialRequest, parse_message
from callbridge.sip.uri import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    Via,
    parse_name_addr,
    parse_name_addr_list,
    parse_uri,
    parse_via,
    parse_via_list,
)

# -- SIP and SIPS URIs --------------------------------------------------------------


FULL_URI = "sip:alice:secretword@atlanta.example.com:5070;transport=TCP;lr?subject=project%20x&priority=urgent"


def test_full_sip_uri():
    uri = parse_uri(FULL_URI)
    assert isinstance(uri, SipUri)
    assert uri.scheme == "sip"
    assert (uri.user, uri.password, uri.host, uri.port) == ("alice", "secretword", "atlanta.example.com", 5070)
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.transport == "tcp"
    assert uri.headers == {"subject": "project%20x", "priority": "urgent"}
    assert str(uri) == FULL_URI


@pytest.mark.parametrize(
    "text",
    [
        "sip:atlanta.example.com",
        "sips:alice@atlanta.example.com",
        "sip:+1-212-555-1212:1234@gateway.example.com;user=phone",
        "sips:1212@gateway.example.com",
        "sip:alice@192.0.2.4",
        "sip:alice@192.0.2.4:65535",
        "sip:atlanta.example.com;method=REGISTER?to=alice%40atlanta.example.com",
        "sip:alice;day=tuesday@atlanta.example.com",
        "sip:[2001:db8::10]",
        "sip:user@[2001:db8::10]:5070;transport=udp",
        "sip:user@[::ffff:192.0.2.1]",
        "sip:%61lice@example.com",
        "sip:*21#@pbx.example.com",
        "sip:user:@example.com",
        "sip:example.com.",
    ],
)
def test_uri_round_trips(text):
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert parse_uri(str(uri)) == uri
    assert str(uri) == text


def test_scheme_and_host_are_case_insensitive():
    uri = parse_uri("SIPS:Alice@Atlanta.EXAMPLE.com;Transport=TLS")
    assert isinstance(uri, SipUri)
    assert uri.scheme == "sips" and uri.host == "atlanta.example.com"
    assert uri.user == "Alice"  # the user part is case-sensitive
    assert uri.params == {"transport": "TLS"}


def test_host_port_defaults():
    assert parse_uri("sip:a@example.com").host_port() == ("example.com", 5060)  # type: ignore[union-attr]
    assert parse_uri("sips:a@example.com").host_port() == ("example.com", 5061)  # type: ignore[union-attr]
    assert parse_uri("sip:[2001:db8::1]:5080").host_port() == ("2001:db8::1", 5080)  # type: ignore[union-attr]


def test_user_decoding_and_password():
    uri = parse_uri("sip:I%20have%20spaces:p%40ss@example.net")
    assert isinstance(uri, SipUri)
    assert uri.user == "I%20have%20spaces" and uri.user_decoded == "I have spaces"
    assert uri.password == "p%40ss"
    assert parse_uri("sip:example.net").user_decoded is None  # type: ignore[union-attr]


def test_with_params_and_without_headers():
    uri = parse_uri("sip:a@example.com;transport=udp?Subject=x")
    assert isinstance(uri, SipUri)
    changed = uri.with_params(transport="tcp", lr=None)
    assert str(changed) == "sip:a@example.com;transport=tcp;lr?Subject=x"
    assert str(changed.without_headers()) == "sip:a@example.com;transport=tcp;lr"
    assert str(uri) == "sip:a@example.com;transport=udp?Subject=x"  # unchanged


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "sip:@example.com",
        "sip:a@",
        "sip:a@exa mple.com",
        "sip:a@example.com:",
        "sip:a@example.com:65536",
        "sip:a@example.com:5o60",
        "sip:a@example.com:٥٠٦٠",
        "sip:a@example.com:" + "9" * 5000,
        "sip:a@[2001:db8::1",
        "sip:a@[2001:db8::1]x",
        "sip:a@[not:an:ipv6::address:at:all:x]",
        "sip:a@[1:2:3:4:5:6:7:8:9]",
        "sip:2001:db8::10",
        "sip:a@256.1.1.1",
        "sip:a@-bad-.example.com",
        "sip:a@exa_mple.com",
        "sip:a b@example.com",
        "sip:a\"b@example.com",
        "sip:a%zzb@example.com",
        "sip:a@example.com;=x",
        "sip:a@example.com;lr;lr",
        "sip:a@example.com?x",
        "sip:a@example.com?=x",
        "sip:a@example.com?x=1&x=2",
        "sip:al\u00efce@example.com",
        "<sip:a@example.com>",
        "example.com",
        "1sip:a@example.com",
        "tel:",
        "sip:a@example.com\x00",
    ],
)
def test_bad_uris(text):
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_other_schemes_are_opaque():
    assert parse_uri("tel:+1-201-555-0123;phone-context=example.com") == \
        AbsoluteUri("tel", "+1-201-555-0123;phone-context=example.com")
    assert parse_uri("URN:service:sos") == AbsoluteUri("urn", "service:sos")
    assert str(parse_uri("mailto:alice@example.com")) == "mailto:alice@example.com"


# -- name-addr / addr-spec -------------------------------------------------------------


def test_name_addr_forms():
    quoted = parse_name_addr('"Alice \\"Al\\" Smith" <sip:alice@example.com;transport=tcp>'
                             ';tag=88sja8x;+sip.instance="<urn:uuid:1>"')
    assert quoted.display_name == 'Alice "Al" Smith'
    assert quoted.uri.params == {"transport": "tcp"}  # type: ignore[union-attr]
    assert quoted.params == {"tag": "88sja8x", "+sip.instance": '"<urn:uuid:1>"'}
    assert quoted.tag == "88sja8x"

    tokens = parse_name_addr("Alice  Smith <sip:alice@example.com>")
    assert tokens.display_name == "Alice Smith"

    bare = parse_name_addr("<sip:alice@example.com>")
    assert bare.display_name is None and bare.params == {}

    spec = parse_name_addr("sip:alice@example.com;transport=tcp;tag=1")
    assert spec.display_name is None
    assert spec.uri.params == {}  # type: ignore[union-attr]
    assert spec.params == {"transport": "tcp", "tag": "1"}

    empty_quoted = parse_name_addr('"" <sip:alice@example.com>')
    assert empty_quoted.display_name == ""


def test_name_addr_str_round_trip():
    for text in (
        '"Alice" <sip:alice@example.com>;tag=1',
        "<sip:alice@example.com;lr>",
        '"A \\"B\\"" <sips:b@example.com>;expires=60;q=0.5',
    ):
        addr = parse_name_addr(text)
        assert str(addr) == text
        assert parse_name_addr(str(addr)) == addr


def test_with_tag_does_not_mutate():
    addr = parse_name_addr("<sip:bob@example.com>")
    tagged = addr.with_tag("xyz")
    assert tagged.tag == "xyz" and addr.tag is None
    assert isinstance(tagged, NameAddr)


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"unterminated <sip:a@example.com>',
        '"quoted" sip:a@example.com',
        "<sip:a@example.com",
        "Bad, Name <sip:a@example.com>",
        "Bad@Name <sip:a@example.com>",
        "< sip:a@example.com >",
        "sip:a@example.com?Route=x",
        "<sip:a@example.com> junk",
        "<sip:a@example.com>;tag=1;tag=2",
        "<sip:a@example.com>;tag=",
        "<sip:a@example.com>;tag=a b",
        '<sip:a@example.com>;tag="unterminated',
        "<sip:a@example.com> <sip:b@example.com>",
    ],
)
def test_bad_name_addrs(text):
    with pytest.raises(SipParseError):
        parse_name_addr(text)


def test_name_addr_list_with_commas_in_quotes_and_uris():
    values = parse_name_addr_list('"Doe, J" <sip:j@example.com;x=1>, <sip:k@example.com?a=b>')
    assert [v.display_name for v in values] == ["Doe, J", None]
    assert values[1].uri.headers == {"a": "b"}  # type: ignore[union-attr]


# -- Via ---------------------------------------------------------------------------------


def test_via_forms():
    via = parse_via("SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport;received=192.0.2.1")
    assert via == Via("UDP", "pc33.atlanta.example.com", 5066,
                      {"branch": "z9hG4bK776asdhds", "rport": None, "received": "192.0.2.1"})
    assert via.protocol == "SIP/2.0" and via.has_magic_cookie
    assert str(via) == "SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport;received=192.0.2.1"
    spaced = parse_via("  sip / 2.0 / tcp   Host.Example.COM : 5060 ;  branch = z9hG4bKx  ")
    assert (spaced.transport, spaced.host, spaced.port, spaced.branch) == ("TCP", "host.example.com", 5060, "z9hG4bKx")
    assert str(spaced) == "SIP/2.0/TCP host.example.com:5060;branch=z9hG4bKx"
    v6 = parse_via("SIP/2.0/TLS [2001:db8::9:1]:5061;branch=z9hG4bKas3")
    assert (v6.host, v6.port) == ("[2001:db8::9:1]", 5061)
    other = parse_via("SIP/7.0/WS c.example.com")
    assert other.protocol == "SIP/7.0" and other.branch is None and not other.has_magic_cookie


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/2.0/UDP ho st",
        "SIP/2.0/UDP host:",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host;branch=a;branch=b",
        "SIP/2.0/UDP [2001:db8::1",
        "SIP/2.0/UDP exa_mple.com",
        "SIP/2.0/U<DP host",
        "SIP//UDP host",
    ],
)
def test_bad_vias(text):
    with pytest.raises(SipParseError):
        parse_via(text)


def test_via_list():
    vias = parse_via_list("SIP/2.0/UDP a.example.com, SIP/2.0/TCP b.example.com;branch=z9hG4bK2")
    assert [v.host for v in vias] == ["a.example.com", "b.example.com"]
    with pytest.raises(SipParseError):
        parse_via_list("SIP/2.0/UDP a.example.com,")


def test_magic_cookie_needs_an_identifier():
    assert not parse_via("SIP/2.0/UDP h;branch=z9hG4bK").has_magic_cookie
    assert not parse_via("SIP/2.0/UDP h;branch=1234").has_magic_cookie
    assert parse_via("SIP/2.0/UDP h;branch=z9hG4bK1").has_magic_cookie


# -- RFC 5118 IPv6 cases (reconstructed in our own form) ---------------------------------

_V6_TAIL = (
    "To: sip:user@example.com\r\n"
    "From: sip:user@example.com;tag=81x2\r\n"
    "Call-ID: SSG9559905523997077@hlau_4100\r\n"
    "Max-Forwards: 70\r\n"
    'Contact: "Caller" <sip:caller@[2001:db8::1]>\r\n'
    "CSeq: 98176 REGISTER\r\n"
    "Content-Length: 0\r\n\r\n"
)


def _register(ruri: str, via_host: str = "[2001:db8::9:1]", via_params: str = ";branch=z9hG4bKas3-111") -> bytes:
    return f"REGISTER {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via_host}{via_params}\r\n{_V6_TAIL}".encode()


def test_rfc5118_valid_ipv6_reference():
    msg = parse_message(_register("sip:[2001:db8::10]"))
    assert msg.uri.host == "[2001:db8::10]"  # type: ignore[union-attr]
    assert msg.top_via.host == "[2001:db8::9:1]"
    assert msg.contacts[0].uri.host_port() == ("2001:db8::1", 5060)  # type: ignore[union-attr]


def test_rfc5118_unbracketed_ipv6_is_400():
    with pytest.raises(PartialRequest) as info:
        parse_message(_register("sip:2001:db8::10"))
    assert info.value.status == 400 and info.value.respondable


def test_rfc5118_port_inside_and_outside_the_brackets():
    # "[2001:db8::10:5070]" is a valid address; no port can be inferred.
    ambiguous = parse_message(_register("sip:[2001:db8::10:5070]"))
    assert ambiguous.uri.port is None  # type: ignore[union-attr]
    clear = parse_message(_register("sip:[2001:db8::10]:5070"))
    assert clear.uri.port == 5070  # type: ignore[union-attr]


def test_rfc5118_received_with_and_without_brackets():
    bracketed = parse_message(_register("sip:[2001:db8::10]",
                                        via_params=";received=[2001:db8::9:255];branch=z9hG4bKas3"))
    assert bracketed.top_via.params["received"] == "[2001:db8::9:255]"
    bare = parse_message(_register("sip:[2001:db8::10]", via_params=";received=2001:db8::9:255;branch=z9hG4bKas3"))
    assert bare.top_via.params["received"] == "2001:db8::9:255"


def test_rfc5118_ipv4_mapped_and_multiple_vias():
    data = _register("sip:[::ffff:192.0.2.10]", via_host="[::ffff:192.0.2.2]")
    data = data.replace(b"Via:", b"Via: SIP/2.0/UDP [2001:db8::2]:6050;branch=z9hG4bKx\r\nVia:", 1)
    msg = parse_message(data)
    assert [v.host for v in msg.vias] == ["[2001:db8::2]", "[::ffff:192.0.2.2]"]


@pytest.mark.parametrize("text", ['"" <sip:e@m>', '""<sip:e@m>;tag=1'])
def test_empty_quoted_display_name_round_trips(text):
    # Found by fuzzing (tests/fuzz, target sip_uri): "" parsed as an empty name but was
    # serialised without it, so it did not parse back to the same value.
    address = parse_name_addr(text)
    assert address.display_name == ""
    assert str(address).startswith('"" <')
    assert parse_name_addr(str(address)) == address
