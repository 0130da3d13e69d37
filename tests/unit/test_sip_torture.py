"""RFC 4475 §3 "SIP torture test messages", every one of them, against our parser.

The 49 messages are rebuilt byte for byte (CRLF line ends, the escaped NUL,
BEL and DEL of ``intmeth``, the UTF-8 reason phrase of ``unreason``, the DER
blob of ``mpart01``, the ``<repeat>`` runs of ``longreq``...). Where the RFC
text shows a message over several lines, the test data keeps the folding it
uses; where it joins lines with ``<allOneLine>``, the data joins them.

Three outcomes are checked:

* §3.1.1 valid messages parse, and the values a SIP element needs come out
  right (request line, unfolded header values, Vias, body framing...).
* Messages invalid at the syntax level raise :class:`SipParseError` with the
  status to answer. Requests raise :class:`PartialRequest`; when it is
  ``respondable`` a well-formed response is built with ``make_response``.
  Broken responses are dropped (and logged by the caller).
* Messages whose problem is semantic parse here; the status the transaction
  or application layer must answer is recorded in
  :data:`APPLICATION_LAYER_EXPECTED` for reuse by those layers' tests.

:data:`MESSAGES` maps the RFC's file names (``wsinv``, ``intmeth``...) to bytes.
"""

from __future__ import annotations

import pytest

from callbridge.sip.errors import SipParseError
from callbridge.sip.framing import StreamFramer
from callbridge.sip.message import Request, Response, make_response
from callbridge.sip.parser import PartialRequest, parse_message
from callbridge.sip.uri import AbsoluteUri, SipUri, parse_name_addr, parse_uri


def _wire(text: str, body: bytes | str = b"") -> bytes:
    """Header text written with "\\n" line ends → CRLF bytes, plus the body."""
    if isinstance(body, str):
        body = body.replace("\n", "\r\n").encode("utf-8")
    return text.replace("\n", "\r\n").encode("utf-8") + body


def _sdp(o_addr: str, c_addr: str, t: str = "0 0") -> str:
    """The small SDP offer most torture messages carry."""
    return (
        "v=0\n"
        f"o=mhandley 29739 7272939 IN IP4 {o_addr}\n"
        "s=-\n"
        f"c=IN IP4 {c_addr}\n"
        f"t={t}\n"
        "m=audio 49217 RTP/AVP 0 12\n"
        "m=video 3227 RTP/AVP 31\n"
        "a=rtpmap:31 LPC\n"
    )


# The DER-encoded PKCS#7 signature carried, unencoded, by mpart01. It holds
# NUL octets and a bare CR, which is the point of the test.
_MPART01_DER = bytes.fromhex(
    "30820152 06092a86 4886f70d 010702a0 82014330 82013f02 01013109 30070605"
    "2b0e0302 1a300b06 092a8648 86f70d01 07013182 01203082 011c0201 01307c30"
    "70310b30 09060355 04061302 55533113 30110603 55040813 0a43616c 69666f72"
    "6e696131 11300f06 03550407 13085361 6e204a6f 7365310e 300c0603 55040a13"
    "05736970 69743129 30270603 55040b13 20536970 69742054 65737420 43657274"
    "69666963 61746520 41757468 6f726974 79020801 95007102 33011330 0706052b"
    "0e03021a 300d0609 2a864886 f70d0101 01050004 81808ef4 66f948f0 522dd2e5"
    "978e9d95 aae9f2fe 15a06659 716292e8 da2aa8d8 350a68ce ffae3cbd 2bff1675"
    "ddd5648e 593dd647 28f26220 f7e94174 9e330d9a 15edabdb 93d10c42 102e7b72"
    "89d29cc0 c9ae2efb c7c0cff9 172f3b02 7e4fc027 e1546de4 b6aa3abb 3e66cccb"
    "5dd6c64b 8383149c b8e6ff18 2d944fe5 7b65bc99 d005"
)

# "= 2**3 * 5**2 но сто девяносто девять - простое": 200 is 2**3 * 5**2,
# but 199 is prime. Non-ASCII UTF-8 in a Reason-Phrase is legal.
_UNREASON_PHRASE = "= 2**3 * 5**2 но сто девяносто девять - простое"
# The From parameter of intmeth: "работающий" in Cyrillic.
_INTMETH_PARAM = "работающий"
# The extension header value of intmeth: a UTF-8 BOM and "大停電".
_INTMETH_EXT = "\ufeff大停電"

MESSAGES: dict[str, bytes] = {}

# ---------------------------------------------------------------------------
# §3.1.1 Valid messages
# ---------------------------------------------------------------------------

MESSAGES["wsinv"] = _wire(
    "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\n"
    "TO :\n"
    " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\n"
    'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\n'
    "  ;\n"
    "  tag = 98asjd8\n"
    "MaX-fOrWaRdS: 0068\n"
    "Call-ID: wsinv.ndaksdj@192.0.2.1\n"
    "Content-Length   : 150\n"
    "cseq: 0009\n"
    "  INVITE\n"
    "Via  : SIP  /   2.0\n"
    " /UDP\n"
    "    192.0.2.2;branch=390skdjuw\n"
    "s :\n"
    "NewFangledHeader:   newfangled value\n"
    " continued newfangled value\n"
    "UnknownHeaderWithUnusualValue: ;;,,;;,;\n"
    "Content-Type: application/sdp\n"
    "Route:\n"
    " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\n"
    "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\n"
    "  branch  =   z9hG4bK9ikj8  ,\n"
    " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\n"
    " z9hG4bK30239\n"
    'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\n'
    "      newvalue ;\n"
    "  secondparam ; q = 0.33\n"
    "\n",
    _sdp("192.0.2.3", "192.0.2.4"),
)

_INTMETH_METHOD = "!interesting-Method0123456789_*+`.%indeed'~"
MESSAGES["intmeth"] = _wire(
    f"{_INTMETH_METHOD} sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    ":&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\n"
    "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\n"
    'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*@example.com>\n'
    "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com> "
    f";fromParam''~+*_!.-%=\"{_INTMETH_PARAM}\";tag=_token~1'+`*%!-.\n"
    "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\n"
    f"CSeq: 139122385 {_INTMETH_METHOD}\n"
    "Max-Forwards: 255\n"
    f"extensionHeader-!.%*+_`'~:{_INTMETH_EXT}\n"
    "Content-Length: 0\n"
    "\n"
)

MESSAGES["esc01"] = _wire(
    "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\n"
    "To: sip:%75se%72@example.com\n"
    "From: <sip:I%20have%20spaces@example.net>;tag=938\n"
    "Max-Forwards: 87\n"
    "i: esc01.239409asdfakjkn23onasd0-3234\n"
    "CSeq: 234234 INVITE\n"
    "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw\n"
    "C: application/sdp\n"
    "Contact:\n"
    "  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>\n"
    "Content-Length: 150\n"
    "\n",
    _sdp("192.0.2.1", "192.0.2.1"),
)

MESSAGES["escnull"] = _wire(
    "REGISTER sip:example.com SIP/2.0\n"
    "To: sip:null-%00-null@example.com\n"
    "From: sip:null-%00-null@example.com;tag=839923423\n"
    "Max-Forwards: 70\n"
    "Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd\n"
    "CSeq: 14398234 REGISTER\n"
    "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw\n"
    "Contact: <sip:%00@host5.example.com>\n"
    "Contact: <sip:%00%00@host5.example.com>\n"
    "L:0\n"
    "\n"
)

MESSAGES["esc02"] = _wire(
    "RE%47IST%45R sip:registrar.example.com SIP/2.0\n"
    'To: "%Z%45" <sip:resource@example.com>\n'
    'From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23\n'
    "Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf\n"
    "Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234\n"
    "CSeq: 29344 RE%47IST%45R\n"
    "Max-Forwards: 70\n"
    "Contact: <sip:alias1@host1.example.com>\n"
    "C%6Fntact: <sip:alias2@host2.example.com>\n"
    "Contact: <sip:alias3@host3.example.com>\n"
    "l: 0\n"
    "\n"
)

MESSAGES["lwsdisp"] = _wire(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: caller<sip:caller@example.com>;tag=323\n"
    "Max-Forwards: 70\n"
    "Call-ID: lwsdisp.1234abcd@funky.example.com\n"
    "CSeq: 60 OPTIONS\n"
    "Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw\n"
    "l: 0\n"
    "\n"
)

# longreq spells its long values with <repeat count=N>...</repeat>.
_LONG_TO_DISPLAY = "I have a user name of " + "extreme" * 10 + " proportion"
_LONG_PARAM1 = "very" + "long" * 20 + "value"
_LONG_PARAM2_NAME = "longparam" + "name" * 25
_LONG_PARAM3_NAME = "very" + "long" * 25 + "ParameterNameWithNoValue"
_LONG_USER = "amazinglylongcallername" * 5
_LONG_TAG = "12" + "982" * 50 + "424"
_LONG_HPARAM_NAME = "unknownheaderparam" + "name" * 20
_LONG_HPARAM_VALUE = "unknowheaderparam" + "value" * 15
_LONG_VALUELESS = "unknownValueless" + "paramname" * 10
_LONG_CALL_ID = "longreq.one" + "really" * 20 + "longcallid"
_LONG_HEADER_NAME = "Unknown-" + "Long" * 20 + "-Name"
_LONG_HEADER_VALUE = (
    "unknown-" + "long" * 20 + "-value; unknown-" + "long" * 20
    + "-parameter-name = unknown-" + "long" * 20 + "-parameter-value"
)
_LONG_BRANCH = "very" + "long" * 50 + "branchvalue"
_LONGREQ_VIAS = (
    "Via: SIP/2.0/TCP sip33.example.com\n"
    "v: SIP/2.0/TCP sip32.example.com\n"
    "V: SIP/2.0/TCP sip31.example.com\n"
    "Via: SIP/2.0/TCP sip30.example.com\n"
    "ViA: SIP/2.0/TCP sip29.example.com\n"
    "VIa: SIP/2.0/TCP sip28.example.com\n"
    "VIA: SIP/2.0/TCP sip27.example.com\n"
    "via: SIP/2.0/TCP sip26.example.com\n"
    "viA: SIP/2.0/TCP sip25.example.com\n"
    "vIa: SIP/2.0/TCP sip24.example.com\n"
    "vIA: SIP/2.0/TCP sip23.example.com\n"
    "V :  SIP/2.0/TCP sip22.example.com\n"
    "v :  SIP/2.0/TCP sip21.example.com\n"
    "V  : SIP/2.0/TCP sip20.example.com\n"
    "v  : SIP/2.0/TCP sip19.example.com\n"
    "Via : SIP/2.0/TCP sip18.example.com\n"
    "Via  : SIP/2.0/TCP sip17.example.com\n"
    + "".join(f"Via: SIP/2.0/TCP sip{n}.example.com\n" for n in range(16, 0, -1))
)
MESSAGES["longreq"] = _wire(
    "INVITE sip:user@example.com SIP/2.0\n"
    f'To: "{_LONG_TO_DISPLAY}"<sip:user@example.com:6000;unknownparam1={_LONG_PARAM1};'
    f"{_LONG_PARAM2_NAME}=shortvalue;{_LONG_PARAM3_NAME}>\n"
    f"F: sip:{_LONG_USER}@example.net;tag={_LONG_TAG};{_LONG_HPARAM_NAME}={_LONG_HPARAM_VALUE};{_LONG_VALUELESS}\n"
    f"Call-ID: {_LONG_CALL_ID}\n"
    "CSeq: 3882340 INVITE\n"
    f"{_LONG_HEADER_NAME}: {_LONG_HEADER_VALUE}\n"
    + _LONGREQ_VIAS
    + f"Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch={_LONG_BRANCH}\n"
    "Max-Forwards: 70\n"
    f"Contact: <sip:{_LONG_USER}@host5.example.net>\n"
    "Content-Type: application/sdp\n"
    "l: 150\n"
    "\n",
    _sdp("192.0.2.1", "192.0.2.1"),
)

_DBLREQ_NOISE = _wire(
    "INVITE sip:joe@example.com SIP/2.0\n"
    "t: sip:joe@example.com\n"
    "From: sip:caller@example.net;tag=141334\n"
    "Max-Forwards: 8\n"
    "Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 150\n"
    "\n",
    "v=0\n"
    "o=mhandley 29739 7272939 IN IP4 192.0.2.15\n"
    "s=-\n"
    "c=IN IP4 192.0.2.15\n"
    "t=0 0\n"
    "m=audio 49217 RTP/AVP 0 12\n"
    "m =video 3227 RTP/AVP 31\n"
    "a=rtpmap:31 LPC\n",
)
MESSAGES["dblreq"] = (
    _wire(
        "REGISTER sip:example.com SIP/2.0\n"
        "To: sip:j.user@example.com\n"
        "From: sip:j.user@example.com;tag=43251j3j324\n"
        "Max-Forwards: 8\n"
        "I: dblreq.0ha0isndaksdj99sdfafnl3lk233412\n"
        "Contact: sip:j.user@host.example.com\n"
        "CSeq: 8 REGISTER\n"
        "Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492\n"
        "Content-Length: 0\n"
        "\n"
    )
    + _DBLREQ_NOISE
)

MESSAGES["semiuri"] = _wire(
    "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0\n"
    "To: sip:j_user@example.com\n"
    "From: sip:caller@example.org;tag=33242\n"
    "Max-Forwards: 3\n"
    "Call-ID: semiuri.0ha0isndaksdj\n"
    "CSeq: 8 OPTIONS\n"
    "Accept: application/sdp, application/pkcs7-mime,\n"
    "        multipart/mixed, multipart/signed,\n"
    "        message/sip, message/sipfrag\n"
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw\n"
    "l: 0\n"
    "\n"
)

MESSAGES["transports"] = _wire(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: <sip:caller@example.com>;tag=323\n"
    "Max-Forwards: 70\n"
    "Call-ID:  transports.kijh4akdnaqjkwendsasfdj\n"
    "Accept: application/sdp\n"
    "CSeq: 60 OPTIONS\n"
    "Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw\n"
    "Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf\n"
    "Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj\n"
    "Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en\n"
    "Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee\n"
    "l: 0\n"
    "\n"
)

_MPART01_BODY = (
    _wire(
        "--7a9cbec02ceef655\n"
        "Content-Type: text/plain\n"
        "Content-Transfer-Encoding: binary\n"
        "\n"
        "Hello\n"
        "--7a9cbec02ceef655\n"
        "Content-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: binary\n"
        "\n"
    )
    + _MPART01_DER
    + b"\r\n--7a9cbec02ceef655--\r\n"
)
MESSAGES["mpart01"] = _wire(
    "MESSAGE sip:kumiko@example.org SIP/2.0\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport\n"
    "Max-Forwards: 70\n"
    "Route: <sip:127.0.0.1:5080>\n"
    "Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+813gvYjcBUaZngQmXc9WNZ"
    "SDNGCzA+fWl9MEUHWIZo1CeJebdY/XlgKeTa0Olvq0rt70Q5jiSfbqMJmQFteeivUhkMWYUA=\n"
    "Contact: <sip:fluffy@127.0.0.1:5070>\n"
    "To: <sip:kumiko@example.org>\n"
    "From: <sip:fluffy@example.com>;tag=2fb0dcc9\n"
    "Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..\n"
    "CSeq: 1 MESSAGE\n"
    "Content-Transfer-Encoding: binary\n"
    "Content-Type: multipart/mixed;boundary=7a9cbec02ceef655\n"
    "Date: Sat, 15 Oct 2005 04:44:56 GMT\n"
    "User-Agent: SIPimp.org/0.2.5 (curses)\n"
    "Content-Length: 553\n"
    "\n",
    _MPART01_BODY,
)

MESSAGES["unreason"] = _wire(
    f"SIP/2.0 200 {_UNREASON_PHRASE}\n"
    "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\n"
    "Call-ID: unreason.1234ksdfak3j2erwedfsASdf\n"
    "CSeq: 35 INVITE\n"
    "From: sip:user@example.com;tag=11141343\n"
    "To: sip:user@example.edu;tag=2229\n"
    "Content-Length: 154\n"
    "Content-Type: application/sdp\n"
    "Contact: <sip:user@host198.example.com>\n"
    "\n",
    _sdp("192.0.2.198", "192.0.2.198"),
)

MESSAGES["noreason"] = _wire(
    "SIP/2.0 100\x20\n"  # the SP after the code is required; the phrase is empty
    "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\n"
    "Call-ID: noreason.asndj203insdf99223ndf\n"
    "CSeq: 35 INVITE\n"
    "From: <sip:user@example.com>;tag=39ansfi3\n"
    "To: <sip:user@example.edu>;tag=902jndnke3\n"
    "Content-Length: 0\n"
    "Contact: <sip:user@host105.example.com>\n"
    "\n"
)

# ---------------------------------------------------------------------------
# §3.1.2 Invalid messages
# ---------------------------------------------------------------------------

MESSAGES["badinv01"] = _wire(
    "INVITE sip:user@example.com SIP/2.0\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=134161461246\n"
    "Max-Forwards: 7\n"
    "Call-ID: badinv01.0ha0isndaksdjasdf3234nas\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.15;;,;,,\n"
    'Contact: "Joe" <sip:joe@example.org>;;;;\n'
    "Content-Length: 152\n"
    "Content-Type: application/sdp\n"
    "\n",
    _sdp("192.0.2.15", "192.0.2.15"),
)

MESSAGES["clerr"] = _wire(
    "INVITE sip:user@example.com SIP/2.0\n"
    "Max-Forwards: 80\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=93942939o2\n"
    "Contact: <sip:caller@hungry.example.net>\n"
    "Call-ID: clerr.0ha0isndaksdjweiafasdk3\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 9999\n"
    "\n",
    _sdp("192.0.2.155", "192.0.2.155"),
)

MESSAGES["ncl"] = _wire(
    "INVITE sip:user@example.com SIP/2.0\n"
    "Max-Forwards: 254\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=32394234\n"
    "Call-ID: ncl.0ha0isndaksdj2193423r542w35\n"
    "CSeq: 0 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw\n"
    "Contact: <sip:caller@example53.example.net>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: -999\n"
    "\n",
    _sdp("192.0.2.53", "192.0.2.53"),
)

MESSAGES["scalar02"] = _wire(
    "REGISTER sip:example.com SIP/2.0\n"
    "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3\n"
    "To: <sip:user@example.com>\n"
    "From: <sip:user@example.com>;tag=239232jh3\n"
    "CSeq: 36893488147419103232 REGISTER\n"
    "Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32\n"
    "Max-Forwards: 300\n"
    "Expires: 1" + "0" * 100 + "\n"
    "Contact: <sip:user@host129.example.com>\n"
    "  ;expires=280297596632815\n"
    "Content-Length: 0\n"
    "\n"
)

MESSAGES["scalarlg"] = _wire(
    "SIP/2.0 503 Service Unavailable\n"
    "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129\n"
    "To: <sip:user@example.com>\n"
    "From: <sip:other@example.net>;tag=2easdjfejw\n"
    "CSeq: 9292394834772304023312 OPTIONS\n"
    "Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r\n"
    "Retry-After: 949302838503028349304023988\n"
    'Warning: 1812 overture "In Progress"\n'
    "Content-Length: 0\n"
    "\n"
)

MESSAGES["quotbal"] = _wire(
    "INVITE sip:user@example.com SIP/2.0\n"
    'To: "Mr. J. User <sip:j.user@example.com>\n'
    "From: sip:caller@example.net;tag=93334\n"
    "Max-Forwards: 10\n"
    "Call-ID: quotbal.aksdj\n"
    "Contact: <sip:caller@host59.example.net>\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 152\n"
    "\n",
    _sdp("192.0.2.15", "192.0.2.15"),
)

MESSAGES["ltgtruri"] = _wire(
    "INVITE <sip:user@example.com> SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=39291\n"
    "Max-Forwards: 23\n"
    "Call-ID: ltgtruri.1@192.0.2.5\n"
    "CSeq: 1 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.5\n"
    "Contact: <sip:caller@host5.example.net>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 159\n"
    "\n",
    _sdp("192.0.2.5", "192.0.2.5", t="3149328700 0"),
)

MESSAGES["lwsruri"] = _wire(
    "INVITE sip:user@example.com; lr SIP/2.0\n"
    "To: sip:user@example.com;tag=3xfe-9921883-z9f\n"
    "From: sip:caller@example.net;tag=231413434\n"
    "Max-Forwards: 5\n"
    "Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423\n"
    "CSeq: 2130706432 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395\n"
    "Contact: <sip:caller@host1.example.net>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 159\n"
    "\n",
    _sdp("192.0.2.1", "192.0.2.1", t="3149328700 0"),
)

MESSAGES["lwsstart"] = _wire(
    "INVITE  sip:user@example.com  SIP/2.0\n"
    "Max-Forwards: 8\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=8814\n"
    "Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com\n"
    "CSeq: 1893884 INVITE\n"
    "Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923\n"
    "Contact: <sip:caller@host1.example.net>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 150\n"
    "\n",
    _sdp("192.0.2.1", "192.0.2.1"),
)

MESSAGES["trws"] = _wire(
    "OPTIONS sip:remote-target@example.com SIP/2.0\x20\x20\n"  # two SP before CRLF
    "Via: SIP/2.0/TCP host1.examle.com;branch=z9hG4bK299342093\n"  # sic: "examle"
    "To: <sip:remote-target@example.com>\n"
    "From: <sip:local-resource@example.com>;tag=329429089\n"
    "Call-ID: trws.oicu34958239neffasdhr2345r\n"
    "Accept: application/sdp\n"
    "CSeq: 238923 OPTIONS\n"
    "Max-Forwards: 70\n"
    "Content-Length: 0\n"
    "\n"
)

MESSAGES["escruri"] = _wire(
    "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=341518\n"
    "Max-Forwards: 7\n"
    "Contact: <sip:caller@host39923.example.net>\n"
    "Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5\n"
    "CSeq: 149209342 INVITE\n"
    "Via: SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 150\n"
    "\n",
    _sdp("192.0.2.1", "192.0.2.1"),
)

MESSAGES["baddate"] = _wire(
    "INVITE sip:user@example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=2234923\n"
    "Max-Forwards: 70\n"
    "Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234\n"
    "CSeq: 1392934 INVITE\n"
    "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\n"
    "Date: Fri, 01 Jan 2010 16:00:00 EST\n"
    "Contact: <sip:caller@host5.example.net>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 150\n"
    "\n",
    _sdp("192.0.2.5", "192.0.2.5"),
)

MESSAGES["regbadct"] = _wire(
    "REGISTER sip:example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:user@example.com;tag=998332\n"
    "Max-Forwards: 70\n"
    "Call-ID: regbadct.k345asrl3fdbv@10.0.0.1\n"
    "CSeq: 1 REGISTER\n"
    "Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw\n"
    "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\n"
    "l: 0\n"
    "\n"
)

MESSAGES["badaspec"] = _wire(
    "OPTIONS sip:user@example.org SIP/2.0\n"
    "Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234\n"
    "Max-Forwards: 70\n"
    'From: "Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423\n'
    'To: "Watson, Thomas" < sip:t.watson@example.org >\n'
    "Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3\n"
    "Accept: application/sdp\n"
    "CSeq: 3923239 OPTIONS\n"
    "l: 0\n"
    "\n"
)

MESSAGES["baddn"] = _wire(
    "OPTIONS sip:t.watson@example.org SIP/2.0\n"
    "Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw\n"
    "Max-Forwards:      70\n"
    "From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43\n"
    "To:      Watson, Thomas <sip:t.watson@example.org>\n"
    "Call-ID: baddn.31415@c.example.com\n"
    "Accept: application/sdp\n"
    "CSeq:    3923239 OPTIONS\n"
    "l: 0\n"
    "\n"
)

MESSAGES["badvers"] = _wire(
    "OPTIONS sip:t.watson@example.org SIP/7.0\n"
    "Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\n"
    "Max-Forwards:     70\n"
    "From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe\n"
    "To:      T. Watson <sip:t.watson@example.org>\n"
    "Call-ID: badvers.31417@c.example.com\n"
    "CSeq:    1 OPTIONS\n"
    "l: 0\n"
    "\n"
)

MESSAGES["mismatch01"] = _wire(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=34525\n"
    "Max-Forwards: 6\n"
    "Call-ID: mismatch01.dj0234sxdfl3\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\n"
    "l: 0\n"
    "\n"
)

MESSAGES["mismatch02"] = _wire(
    "NEWMETHOD sip:user@example.com SIP/2.0\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=34525\n"
    "Max-Forwards: 6\n"
    "Call-ID: mismatch02.dj0234sxdfl3\n"
    "CSeq: 8 INVITE\n"
    "Contact: <sip:caller@host.example.net>\n"
    "Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw\n"
    "Content-Type: application/sdp\n"
    "l: 138\n"
    "\n",
    "v=0\n"
    "o=mhandley 29739 7272939 IN IP4 192.0.2.1\n"
    "c=IN IP4 192.0.2.1\n"
    "m=audio 49217 RTP/AVP 0 12\n"
    "m=video 3227 RTP/AVP 31\n"
    "a=rtpmap:31 LPC\n",
)

MESSAGES["bigcode"] = _wire(
    "SIP/2.0 4294967301 better not break the receiver\n"
    "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\n"
    "Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i\n"
    "CSeq: 353494 INVITE\n"
    "From: <sip:user@example.com>;tag=39ansfi3\n"
    "To: <sip:user@example.edu>;tag=902jndnke3\n"
    "Content-Length: 0\n"
    "Contact: <sip:user@host105.example.com>\n"
    "\n"
)

# ---------------------------------------------------------------------------
# §3.2 Transaction-layer semantics
# ---------------------------------------------------------------------------

MESSAGES["badbranch"] = _wire(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.org;tag=33242\n"
    "Max-Forwards: 3\n"
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK\n"
    "Accept: application/sdp\n"
    "Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n\n"
    "CSeq: 8 OPTIONS\n"
    "l: 0\n"
    "\n"
)

# ---------------------------------------------------------------------------
# §3.3 Application-layer semantics
# ---------------------------------------------------------------------------

MESSAGES["insuf"] = _wire(
    "INVITE sip:user@example.com SIP/2.0\n"
    "CSeq: 193942 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\n"
    "Content-Type: application/sdp\n"
    "l: 152\n"
    "\n",
    _sdp("192.0.2.95", "192.0.2.95"),
)

MESSAGES["unkscm"] = _wire(
    "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=384\n"
    "Max-Forwards: 3\n"
    "Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34\n"
    "CSeq: 3923423 OPTIONS\n"
    "Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234\n"
    "Content-Length: 0\n"
    "\n"
)

MESSAGES["novelsc"] = _wire(
    "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=384\n"
    "Max-Forwards: 3\n"
    "Call-ID: novelsc.asdfasser0q239nwsdfasdkl34\n"
    "CSeq: 3923423 OPTIONS\n"
    "Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234\n"
    "Content-Length: 0\n"
    "\n"
)

MESSAGES["unksm2"] = _wire(
    "REGISTER sip:example.com SIP/2.0\n"
    "To: isbn:2983792873\n"
    "From: <http://www.example.com>;tag=3234233\n"
    "Call-ID: unksm2.daksdj@hyphenated-host.example.com\n"
    "CSeq: 234902 REGISTER\n"
    "Max-Forwards: 70\n"
    "Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw\n"
    "Contact: <name:John_Smith>\n"
    "l: 0\n"
    "\n"
)

MESSAGES["bext01"] = _wire(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:j_user@example.com\n"
    "From: sip:caller@example.net;tag=242etr\n"
    "Max-Forwards: 6\n"
    "Call-ID: bext01.0ha0isndaksdj\n"
    "Require: nothingSupportsThis, nothingSupportsThisEither\n"
    "Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis\n"
    "CSeq: 8 OPTIONS\n"
    "Via: SIP/2.0/TLS fold-and-staple.example.com;branch=z9hG4bKkdjuw\n"
    "Content-Length: 0\n"
    "\n"
)

MESSAGES["invut"] = _wire(
    "INVITE sip:user@example.com SIP/2.0\n"
    "Contact: <sip:caller@host5.example.net>\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=8392034\n"
    "Max-Forwards: 70\n"
    "Call-ID: invut.0ha0isndaksdjadsfij34n23d\n"
    "CSeq: 235448 INVITE\n"
    "Via: SIP/2.0/UDP somehost.example.com;branch=z9hG4bKkdjuw\n"
    "Content-Type: application/unknownformat\n"
    "Content-Length: 40\n"
    "\n",
    '<audio>\n <pcmu port="443"/>\n</audio>\n',
)

MESSAGES["regaut01"] = _wire(
    "REGISTER sip:example.com SIP/2.0\n"
    "To: sip:j.user@example.com\n"
    "From: sip:j.user@example.com;tag=87321hj23128\n"
    "Max-Forwards: 8\n"
    "Call-ID: regaut01.0ha0isndaksdj\n"
    "CSeq: 9338 REGISTER\n"
    "Via: SIP/2.0/TCP 192.0.2.253;branch=z9hG4bKkdjuw\n"
    "Authorization: NoOneKnowsThisScheme opaque-data=here\n"
    "Content-Length:0\n"
    "\n"
)

MESSAGES["multi01"] = _wire(
    "INVITE sip:user@company.com SIP/2.0\n"
    "Contact: <sip:caller@host25.example.net>\n"
    "Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw\n"
    "Max-Forwards: 70\n"
    "CSeq: 5 INVITE\n"
    "Call-ID: multi01.98asdh@192.0.2.1\n"
    "CSeq: 59 INVITE\n"
    "Call-ID: multi01.98asdh@192.0.2.2\n"
    "From: sip:caller@example.com;tag=3413415\n"
    "To: sip:user@example.com\n"
    "To: sip:other@example.net\n"
    "From: sip:caller@example.net;tag=2923420123\n"
    "Content-Type: application/sdp\n"
    "l: 154\n"
    "Contact: <sip:caller@host36.example.net>\n"
    "Max-Forwards: 5\n"
    "\n",
    _sdp("192.0.2.25", "192.0.2.25") + "\n",
)

MESSAGES["mcl01"] = _wire(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423\n"
    "To: sip:user@example.com\n"
    "From: sip:other@example.net;tag=3923942\n"
    "Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf\n"
    "CSeq: 15932 OPTIONS\n"
    "Content-Length: 13\n"
    "Max-Forwards: 60\n"
    "Content-Length: 5\n"
    "Content-Type: text/plain\n"
    "\n",
    "There's no way to know how many octets are supposed to be here.\n",
)

MESSAGES["bcast"] = _wire(
    "SIP/2.0 200 OK\n"
    "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\n"
    "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23\n"
    "Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf\n"
    "CSeq: 35 INVITE\n"
    "From: sip:user@example.com;tag=11141343\n"
    "To: sip:user@example.edu;tag=2229\n"
    "Content-Length: 154\n"
    "Content-Type: application/sdp\n"
    "Contact: <sip:user@host28.example.com>\n"
    "\n",
    _sdp("192.0.2.198", "192.0.2.198"),
)

MESSAGES["zeromf"] = _wire(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=3ghsd41\n"
    "Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas\n"
    "CSeq: 39234321 OPTIONS\n"
    "Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i\n"
    "Max-Forwards: 0\n"
    "Content-Length: 0\n"
    "\n"
)

MESSAGES["cparam01"] = _wire(
    "REGISTER sip:example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw\n"
    "Max-Forwards: 70\n"
    "From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe\n"
    "To: sip:watson@example.com\n"
    "Call-ID: cparam01.70710@saturn.example.com\n"
    "CSeq: 2 REGISTER\n"
    "Contact: sip:+19725552222@gw1.example.net;unknownparam\n"
    "l: 0\n"
    "\n"
)

MESSAGES["cparam02"] = _wire(
    "REGISTER sip:example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw\n"
    "Max-Forwards: 70\n"
    "From: sip:watson@example.com;tag=838293\n"
    "To: sip:watson@example.com\n"
    "Call-ID: cparam02.70710@saturn.example.com\n"
    "CSeq: 3 REGISTER\n"
    "Contact: <sip:+19725552222@gw1.example.net;unknownparam>\n"
    "l: 0\n"
    "\n"
)

MESSAGES["regescrt"] = _wire(
    "REGISTER sip:example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:user@example.com;tag=8\n"
    "Max-Forwards: 70\n"
    "Call-ID: regescrt.k345asrl3fdbv@192.0.2.1\n"
    "CSeq: 14398234 REGISTER\n"
    "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw\n"
    "M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>\n"
    "L:0\n"
    "\n"
)

MESSAGES["sdp01"] = _wire(
    "INVITE sip:user@example.com SIP/2.0\n"
    "To: sip:j_user@example.com\n"
    "Contact: <sip:caller@host15.example.net>\n"
    "From: sip:caller@example.net;tag=234\n"
    "Max-Forwards: 5\n"
    "Call-ID: sdp01.ndaksdj9342dasdd\n"
    "Accept: text/nobodyKnowsThis\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw\n"
    "Content-Length: 150\n"
    "Content-Type: application/sdp\n"
    "\n",
    _sdp("192.0.2.5", "192.0.2.5"),
)

# ---------------------------------------------------------------------------
# §3.4 Backward compatibility
# ---------------------------------------------------------------------------

MESSAGES["inv2543"] = _wire(
    "INVITE sip:UserB@example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP iftgw.example.com\n"
    "From: <sip:+13035551111@ift.client.example.net;user=phone>\n"
    "Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>\n"
    "To: sip:+16505552222@ss1.example.net;user=phone\n"
    "Call-ID: inv2543.1717@ift.client.example.com\n"
    "CSeq: 56 INVITE\n"
    "Content-Type: application/sdp\n"
    "\n",
    "v=0\n"
    "o=mhandley 29739 7272939 IN IP4 192.0.2.5\n"
    "s=-\n"
    "c=IN IP4 192.0.2.5\n"
    "t=0 0\n"
    "m=audio 49217 RTP/AVP 0\n",
)


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------

VALID = (
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq",
    "dblreq", "semiuri", "transports", "mpart01", "unreason", "noreason",
)

# Rejected by the parser: name -> (status, respondable). ``respondable`` says
# whether ``make_response(err.partial, status)`` reaches and matches the
# client; None marks responses, which are never answered but dropped and logged.
REJECTED: dict[str, tuple[int, bool | None]] = {
    # §3.1.2
    "badinv01": (400, False),   # top Via unusable: nowhere to send a 400 -> dropped, logged
    "clerr": (400, True),       # datagram shorter than Content-Length
    "ncl": (400, True),         # negative Content-Length
    "scalar02": (400, True),    # CSeq > 2**32-1 (also Max-Forwards 300)
    "scalarlg": (400, None),    # response with an overlarge CSeq -> dropped
    "quotbal": (400, True),     # unterminated quote in To (echoed verbatim in the 400)
    "ltgtruri": (400, True),    # Request-URI in <>
    "lwsruri": (400, True),     # LWS inside the Request-URI
    "lwsstart": (400, True),    # several SP between request-line elements
    "trws": (400, True),        # SP after SIP-Version
    "escruri": (400, True),     # headers in the Request-URI
    "badaspec": (400, True),    # spaces inside <addr-spec>
    "baddn": (400, True),       # unquoted display names with ","
    "badvers": (505, True),     # SIP/7.0
    "mismatch01": (400, True),  # CSeq method differs from request method
    "mismatch02": (400, True),  # same, unknown method (RFC allows 400; 501 preferred)
    "bigcode": (400, None),     # status 4294967301 -> response dropped
    # §3.3 application-layer cases that cannot even be framed or attributed
    "insuf": (400, False),      # no From/To/Call-ID: no well-formed 400 possible -> dropped
    "multi01": (400, True),     # duplicated single-valued headers
    "mcl01": (400, True),       # two Content-Length values
}

# Invalid per RFC 4475 §3.1.2, but the RFC lets elements be liberal: they
# parse here and only the code that reads the broken field objects.
PARSED_LENIENTLY = ("baddate", "regbadct")

# Messages that parse here but that the transaction layer (badbranch, bcast)
# or the application layer must answer specially. Value: the final response
# status the layer should send; None means "discard silently".
APPLICATION_LAYER_EXPECTED: dict[str, int | None] = {
    # §3.1.1: valid, but the methods are unknown to an endpoint -> 501 + Allow.
    "intmeth": 501,
    "esc02": 501,
    # §3.1.2 regbadct: Contact addr-spec with "?" needs <>; request.contacts
    # raises SipParseError, which the registrar turns into 400.
    "regbadct": 400,
    # §3.2.1 transaction layer: "z9hG4bK" with no id. Reject statelessly with
    # 400 (RFC 4475's preference), or match it RFC 2543-style and answer 200.
    "badbranch": 400,
    # §3.3 application layer.
    "unkscm": 416,     # unknown Request-URI scheme
    "novelsc": 416,    # known but unsupported scheme (soap.beep)
    "unksm2": 416,     # registrar: To is isbn:, Contact is name:
    "bext01": 420,     # Unsupported: nothingSupportsThis, nothingSupportsThisEither
    "invut": 415,      # application/unknownformat body; answer with Accept
    "regaut01": 401,   # unknown auth scheme: challenge with Digest (200 if no auth)
    "bcast": None,     # UAC: response with 2 Vias is discarded (RFC 3261 §8.1.3.3)
    "zeromf": 200,     # endpoint processes OPTIONS normally; a proxy would send 483
    "cparam01": 200,   # ;unknownparam is a contact-param, not a uri-param
    "cparam02": 200,   # ;unknownparam is a uri-param
    "regescrt": 200,   # binding keeps the escaped ?Route= URI header
    "sdp01": 406,      # Accept excludes application/sdp (400 also acceptable)
    # §3.4 inv2543: RFC 2543 INVITE (no branch, tag, Content-Length or
    # Max-Forwards) is processed like any INVITE.
    "inv2543": 200,
}

ALL_NAMES = (
    VALID + tuple(REJECTED) + PARSED_LENIENTLY
    + tuple(name for name in APPLICATION_LAYER_EXPECTED if name not in VALID + PARSED_LENIENTLY)
)


def parse(name: str) -> Request | Response:
    return parse_message(MESSAGES[name])


def test_every_rfc4475_section3_message_is_covered():
    # 13 valid + 19 invalid (§3.1.2) + 1 transaction (§3.2) + 15 application
    # (§3.3) + 1 backward compatibility (§3.4) = 49.
    assert len(MESSAGES) == 49
    assert sorted(ALL_NAMES) == sorted(MESSAGES)
    assert len(set(ALL_NAMES)) == 49


@pytest.mark.parametrize("name", sorted(set(MESSAGES) - {"clerr", "ncl", "mcl01", "dblreq"}))
def test_reconstructed_bodies_match_their_content_length(name):
    """A check on the reconstruction itself: declared lengths fit the bodies."""
    data = MESSAGES[name]
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() in (b"content-length", b"l"):
            assert int(value) == len(body), name


# ---------------------------------------------------------------------------
# §3.1.1 valid messages
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse(name):
    message = parse(name)
    assert isinstance(message, Request | Response)


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_round_trip(name):
    first = parse(name)
    second = parse_message(first.serialize())
    assert first.start_line() == second.start_line()
    assert [h for h in first.headers if h[0] != "Content-Length"] == [
        h for h in second.headers if h[0] != "Content-Length"
    ]
    assert first.body == second.body


def test_wsinv_unfolds_and_normalises_everything():
    msg = parse("wsinv")
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipUri)
    assert (msg.uri.user, msg.uri.host, msg.uri.params) == ("vivekg", "chair-dnrc.example.com", {"unknownparam": None})
    to = msg.to_addr
    assert to.display_name is None and to.tag == "1918181833n"
    assert str(to.uri) == "sip:vivekg@chair-dnrc.example.com"
    frm = msg.from_addr
    # The quoted-pairs \\ and \" decode to a backslash and a quote.
    assert frm.display_name == 'J Rosenberg \\"'
    assert frm.tag == "98asjd8" and str(frm.uri) == "sip:jdrosen@example.com"
    assert msg.max_forwards == 68  # "0068"
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")  # "0009\r\n  INVITE"
    assert msg.headers.get("Subject") == ""  # "s :" with an empty value
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    route = parse_name_addr(msg.headers.get("Route") or "")
    assert isinstance(route.uri, SipUri)
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    vias = msg.vias
    assert [(v.protocol, v.transport, v.host, v.branch) for v in vias] == [
        ("SIP/2.0", "UDP", "192.0.2.2", "390skdjuw"),
        ("SIP/2.0", "TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("SIP/2.0", "UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert not vias[0].has_magic_cookie and vias[1].has_magic_cookie
    (contact,) = msg.contacts  # "m:" compact form
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert msg.content_type == "application/sdp"
    assert len(msg.body) == 150 and msg.body.endswith(b"a=rtpmap:31 LPC\r\n")


def test_intmeth_wide_range_of_valid_characters():
    msg = parse("intmeth")
    assert isinstance(msg, Request)
    assert msg.method == _INTMETH_METHOD  # "%" is not an escape in a method
    uri = msg.uri
    assert isinstance(uri, SipUri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com" and uri.params == {} and uri.headers == {}
    assert msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    to = msg.to_addr
    assert to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"  # quoted-pairs of control chars
    assert isinstance(to.uri, SipUri) and to.uri.user == uri.user and to.uri.password is None
    frm = msg.from_addr
    assert frm.display_name == "token1~` token2'+_ token3*%!.-"
    assert frm.params["fromparam''~+*_!.-%"] == f'"{_INTMETH_PARAM}"'
    assert frm.tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert (msg.cseq.number, msg.cseq.method) == (139122385, _INTMETH_METHOD)
    assert msg.max_forwards == 255
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == _INTMETH_EXT
    assert msg.body == b""


def test_esc01_escapes_are_kept_and_decode_once():
    msg = parse("esc01")
    assert isinstance(msg, Request) and isinstance(msg.uri, SipUri)
    assert msg.uri.user == "sips%3Auser%40example.com"
    assert msg.uri.user_decoded == "sips:user@example.com"
    assert msg.uri.host == "example.net"
    to_uri = msg.to_addr.uri
    assert isinstance(to_uri, SipUri) and to_uri.user_decoded == "user"
    from_uri = msg.from_addr.uri
    assert isinstance(from_uri, SipUri) and from_uri.user_decoded == "I have spaces"
    assert msg.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # "i:" compact form
    assert msg.content_type == "application/sdp"  # "C:" compact form (upper case)
    (contact,) = msg.contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.user_decoded == "caller"
    # uri-parameters keep their escapes; unescaping is never recursive, so
    # "v%61lue%25%34%31" means "value%41", not "valueA".
    assert contact.uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    from urllib.parse import unquote

    assert unquote("v%61lue%25%34%31") == "value%41"
    assert len(msg.body) == 150


def test_escnull_keeps_distinct_users_with_nul():
    msg = parse("escnull")
    assert isinstance(msg, Request)
    to_uri = msg.to_addr.uri
    assert isinstance(to_uri, SipUri)
    assert to_uri.user == "null-%00-null" and to_uri.user_decoded == "null-\x00-null"
    users = [c.uri.user_decoded for c in msg.contacts if isinstance(c.uri, SipUri)]
    assert users == ["\x00", "\x00\x00"]  # two different bindings
    assert msg.headers.get("Content-Length") == "0"  # "L:0" compact, no SP


def test_esc02_percent_is_not_an_escape_outside_uris():
    msg = parse("esc02")
    assert isinstance(msg, Request)
    assert msg.method == "RE%47IST%45R" and msg.method != "REGISTER"
    assert msg.to_addr.display_name == "%Z%45"
    assert msg.top_via.branch == "z9hG4bK209%fzsnel234"
    assert [str(c.uri) for c in msg.contacts] == ["sip:alias1@host1.example.com", "sip:alias3@host3.example.com"]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_display_name_without_space_before_angle():
    msg = parse("lwsdisp")
    assert msg.from_addr.display_name == "caller"
    assert msg.from_addr.tag == "323"


def test_longreq_long_values_and_34_vias():
    msg = parse("longreq")
    assert isinstance(msg, Request)
    to = msg.to_addr
    assert to.display_name == _LONG_TO_DISPLAY
    assert isinstance(to.uri, SipUri) and to.uri.port == 6000
    assert to.uri.params == {
        "unknownparam1": _LONG_PARAM1,
        _LONG_PARAM2_NAME.lower(): "shortvalue",
        _LONG_PARAM3_NAME.lower(): None,
    }
    frm = msg.from_addr  # "F:" in addr-spec form: the params are the header's
    assert isinstance(frm.uri, SipUri) and frm.uri.user == _LONG_USER and frm.uri.params == {}
    assert frm.params == {"tag": _LONG_TAG, _LONG_HPARAM_NAME.lower(): _LONG_HPARAM_VALUE,
                          _LONG_VALUELESS.lower(): None}
    assert msg.call_id == _LONG_CALL_ID
    assert msg.headers.get(_LONG_HEADER_NAME) == _LONG_HEADER_VALUE
    vias = msg.vias
    assert len(vias) == 34
    assert [v.host for v in vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert all(v.transport == "TCP" and v.branch is None for v in vias[:33])
    assert vias[33].params == {"received": "192.0.2.5", "branch": _LONG_BRANCH}
    assert str(msg.contacts[0].uri) == f"sip:{_LONG_USER}@host5.example.net"
    assert len(msg.body) == 150


def test_dblreq_ignores_octets_after_the_body():
    msg = parse("dblreq")
    assert isinstance(msg, Request)
    assert msg.method == "REGISTER" and msg.body == b""
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # "I:" compact form
    (contact,) = msg.contacts
    assert str(contact.uri) == "sip:j.user@host.example.com"
    # Over a stream the same octets would be two messages (the noise's own
    # Content-Length of 150 is 3 octets short of its body, which stays buffered).
    framer = StreamFramer()
    framed = framer.feed(MESSAGES["dblreq"])
    assert len(framed) == 2 and framed[1].startswith(b"INVITE sip:joe@example.com SIP/2.0\r\n")
    assert framed[1] + b"C\r\n" == _DBLREQ_NOISE and framer.buffered == 3


def test_semiuri_user_part_with_semicolon():
    msg = parse("semiuri")
    assert isinstance(msg, Request) and isinstance(msg.uri, SipUri)
    assert msg.uri.user == "user;par=u%40example.net"
    assert msg.uri.user_decoded == "user;par=u@example.net"
    assert msg.uri.host == "example.com" and msg.uri.params == {}
    assert msg.headers.get_list("Accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed",
        "multipart/signed", "message/sip", "message/sipfrag",
    ]


def test_transports_all_kinds_of_via_transport():
    msg = parse("transports")
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert msg.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01_binary_body_with_nuls():
    msg = parse("mpart01")
    assert isinstance(msg, Request)
    assert msg.method == "MESSAGE"
    assert len(msg.body) == 553 and msg.body == _MPART01_BODY
    assert b"\x00" in msg.body
    assert msg.content_type == "multipart/mixed"
    assert msg.top_via.port == 5070 and msg.top_via.params["rport"] is None
    assert msg.headers.get("Date") == "Sat, 15 Oct 2005 04:44:56 GMT"
    # A stream delivers the body intact even with NULs and a bare CR inside.
    (framed,) = StreamFramer().feed(MESSAGES["mpart01"])
    assert parse_message(framed, stream=True).body == _MPART01_BODY


def test_unreason_utf8_reason_phrase():
    msg = parse("unreason")
    assert isinstance(msg, Response)
    assert msg.status == 200 and msg.reason == _UNREASON_PHRASE
    assert msg.to_addr.tag == "2229"
    assert len(msg.body) == 154


def test_noreason_empty_reason_phrase():
    msg = parse("noreason")
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (100, "")
    # Liberal: the same without the required SP also parses.
    lenient = parse_message(MESSAGES["noreason"].replace(b"100 \r\n", b"100\r\n", 1))
    assert isinstance(lenient, Response) and lenient.reason == ""


# ---------------------------------------------------------------------------
# Rejected at the syntax level (§3.1.2, plus insuf / multi01 / mcl01)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_messages_raise_with_the_right_status(name):
    status, respondable = REJECTED[name]
    with pytest.raises(SipParseError) as info:
        parse(name)
    err = info.value
    assert err.status == status
    if respondable is None:
        # A broken response: never answered, the caller drops and logs it.
        assert not isinstance(err, PartialRequest)
        return
    assert isinstance(err, PartialRequest)
    assert err.respondable is respondable
    if not respondable:
        return
    request = err.partial
    response = make_response(request, err.status)
    assert response.status == status
    # The response is routed by the top Via and matched by branch + CSeq.
    assert response.headers.get_all("Via")[:1] == request.headers.get_all("Via")[:1]
    assert response.headers.get("CSeq") == request.headers.get("CSeq")
    assert response.headers.get("Call-ID") == request.headers.get("Call-ID")
    wire = response.serialize()
    assert wire.startswith(f"SIP/2.0 {status} ".encode())
    if name not in ("quotbal", "badaspec", "baddn", "scalar02"):
        # ... and, when the echoed fields are themselves valid, it parses.
        again = parse_message(wire)
        assert isinstance(again, Response) and again.status == status


def test_badinv01_fails_on_the_empty_via_params():
    with pytest.raises(PartialRequest, match="parameter"):
        parse("badinv01")


def test_clerr_over_a_stream_waits_for_more_data():
    framer = StreamFramer()
    assert framer.feed(MESSAGES["clerr"]) == []
    assert framer.buffered == len(MESSAGES["clerr"])


def test_ncl_over_a_stream_is_a_framing_error():
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed(MESSAGES["ncl"])


def test_scalar02_reports_the_cseq():
    with pytest.raises(PartialRequest, match="CSeq") as info:
        parse("scalar02")
    assert info.value.partial.method == "REGISTER"


def test_badvers_is_505_with_headers_kept():
    with pytest.raises(PartialRequest) as info:
        parse("badvers")
    assert info.value.status == 505
    response = make_response(info.value.partial, 505)
    assert response.reason == "Version Not Supported"
    assert response.headers.get("Via") == "SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw"


def test_mismatch_reason_names_the_cseq():
    for name in ("mismatch01", "mismatch02"):
        with pytest.raises(PartialRequest, match="CSeq method"):
            parse(name)


def test_multi01_response_copies_one_of_each_singular_header():
    with pytest.raises(PartialRequest) as info:
        parse("multi01")
    response = make_response(info.value.partial, 400)
    assert response.headers.get_all("CSeq") == ["5 INVITE"]
    assert response.headers.get_all("Call-ID") == ["multi01.98asdh@192.0.2.1"]
    assert len(response.headers.get_all("To")) == 1 and len(response.headers.get_all("From")) == 1


def test_mcl01_over_a_stream_is_a_framing_error():
    with pytest.raises(SipParseError, match="more than one Content-Length"):
        StreamFramer().feed(MESSAGES["mcl01"])


def test_insuf_cannot_be_answered():
    with pytest.raises(PartialRequest, match="missing") as info:
        parse("insuf")
    assert not info.value.respondable


# ---------------------------------------------------------------------------
# Invalid per the RFC but parsed leniently: the field is checked on use.
# ---------------------------------------------------------------------------


def test_baddate_parses_and_keeps_the_raw_date():
    msg = parse("baddate")
    assert msg.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    assert len(msg.body) == 150


def test_regbadct_parses_but_contacts_raise():
    msg = parse("regbadct")
    with pytest.raises(SipParseError, match="<>"):
        msg.contacts  # noqa: B018 - the registrar answers 400 here


# ---------------------------------------------------------------------------
# Parsed here, answered by the transaction / application layer.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(APPLICATION_LAYER_EXPECTED))
def test_application_layer_cases_parse(name):
    message = parse(name)
    # Everything the lower layers touch is usable.
    message.cseq, message.call_id, message.top_via  # noqa: B018
    message.from_addr, message.to_addr  # noqa: B018


def test_badbranch_has_no_usable_magic_cookie():
    via = parse("badbranch").top_via
    assert via.branch == "z9hG4bK" and not via.has_magic_cookie


def test_unkscm_and_novelsc_keep_opaque_uris():
    unk = parse("unkscm")
    assert isinstance(unk, Request)
    assert unk.uri == AbsoluteUri("nobodyknowsthisscheme", "totallyopaquecontent")
    novel = parse("novelsc")
    assert isinstance(novel, Request)
    assert novel.uri == AbsoluteUri("soap.beep", "//192.0.2.103:3002")


def test_unksm2_non_sip_addresses():
    msg = parse("unksm2")
    assert msg.to_addr.uri == AbsoluteUri("isbn", "2983792873")
    assert msg.from_addr.uri == AbsoluteUri("http", "//www.example.com")
    assert msg.from_addr.tag == "3234233"
    assert msg.contacts[0].uri == AbsoluteUri("name", "John_Smith")


def test_bext01_exposes_the_option_tags():
    msg = parse("bext01")
    assert msg.headers.get_list("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert msg.headers.get_tokens("Proxy-Require") == {"noproxiessupportthis", "nordoanyproxiessupportthis"}


def test_invut_unknown_body_type():
    msg = parse("invut")
    assert msg.content_type == "application/unknownformat"
    assert msg.body == b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'


def test_regaut01_authorization_kept_verbatim():
    msg = parse("regaut01")
    assert msg.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert msg.headers.get("Content-Length") == "0"


def test_bcast_has_two_vias():
    msg = parse("bcast")
    assert isinstance(msg, Response)
    assert [v.host for v in msg.vias] == ["192.0.2.198", "255.255.255.255"]


def test_zeromf_max_forwards_zero():
    assert parse("zeromf").max_forwards == 0


def test_cparam01_param_belongs_to_the_contact():
    (contact,) = parse("cparam01").contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.user == "+19725552222" and contact.uri.params == {}
    assert contact.params == {"unknownparam": None}


def test_cparam02_param_belongs_to_the_uri():
    (contact,) = parse("cparam02").contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.params == {"unknownparam": None} and contact.params == {}


def test_regescrt_escaped_uri_header():
    (contact,) = parse("regescrt").contacts  # "M:" compact form
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.headers == {"Route": "%3Csip:sip.example.com%3E"}
    assert str(contact.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_sdp01_accept_excludes_sdp():
    msg = parse("sdp01")
    assert msg.headers.get_list("Accept") == ["text/nobodyKnowsThis"]
    assert msg.content_type == "application/sdp"


def test_inv2543_rfc2543_request_is_accepted():
    msg = parse("inv2543")
    assert isinstance(msg, Request)
    assert msg.max_forwards is None and "Content-Length" not in msg.headers
    assert msg.top_via.branch is None and msg.top_via.port is None
    assert msg.from_addr.tag is None
    # addr-spec form: ";user=phone" is a To *header* parameter here.
    to = msg.to_addr
    assert isinstance(to.uri, SipUri) and to.uri.params == {} and to.params == {"user": "phone"}
    from_uri = msg.from_addr.uri
    assert isinstance(from_uri, SipUri) and from_uri.params == {"user": "phone"}
    assert msg.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")  # the datagram ends the body
    assert isinstance(msg.record_routes[0].uri, SipUri)
    # On a stream the missing Content-Length cannot be tolerated.
    with pytest.raises(SipParseError):
        parse_message(MESSAGES["inv2543"], stream=True)


def test_parse_uri_handles_every_request_uri_of_the_set():
    for name, data in MESSAGES.items():
        line = data.split(b"\r\n", 1)[0].decode()
        parts = line.split(" ")
        if line.startswith("SIP/") or len(parts) != 3 or name in ("ltgtruri",):
            continue
        parse_uri(parts[1])
