"""SIPp scenarios for the IVR tests, generated: a caller that presses keys on a schedule.

Every scenario offers PCMU with telephone-event on payload type 96 (the only
type SIPp's play_dtmf sends), waits ``lead_ms`` after the ACK, then walks
``steps``: a string is a key pressed with play_dtmf (RFC 4733), an int is a
pause in milliseconds. It ends one of two ways:

- ``"bye"``: the caller hangs up;
- ``"refer"``: the caller expects a REFER whose Refer-To holds ``refer_to``
  (checked: a mismatch fails SIPp), answers 202, reports the transfer done with
  a NOTIFY (message/sipfrag 200, subscription terminated; RFC 3515 §2.4.5), and
  then expects the server's BYE, the way a carrier completes a blind transfer.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Test Caller" <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
{headers}      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 96
      a=rtpmap:0 PCMU/8000
      a=rtpmap:96 telephone-event/8000
      a=fmtp:96 0-16
      a=ptime:20
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Test Caller" <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"""

_KEY = """  <nop>
    <action>
      <exec play_dtmf="{digit}"/>
    </action>
  </nop>
"""

_BYE = """  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Test Caller" <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""

_REFER = """  <recv request="REFER" timeout="{timeout_ms}">
    <action>
      <ereg regexp="Refer-To: *&lt;?{refer_to}" search_in="msg" check_it="true" assign_to="refer_to"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 202 Accepted
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:sipp@[local_ip]:[local_port]>
      X-Refer-To-Seen: [$refer_to]
      Content-Length: 0
    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      NOTIFY sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Test Caller" <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 NOTIFY
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Event: refer
      Subscription-State: terminated;reason=noresource
      Max-Forwards: 70
      Content-Type: message/sipfrag;version=2.0
      Content-Length: [len]

      SIP/2.0 200 OK
    ]]>
  </send>
  <recv response="200"/>
  <recv request="BYE" timeout="{timeout_ms}"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
</scenario>
"""


def ivr_caller(path: Path, steps: list[str | int], *, end: str = "bye", lead_ms: int = 1500, tail_ms: int = 2000,
               headers: dict[str, str] | None = None, refer_to: str = "", timeout_ms: int = 30000) -> Path:
    header_lines = "".join(f"      {name}: {value}\n" for name, value in (headers or {}).items())
    parts = [_HEAD.format(name=escape(path.stem), headers=header_lines), f'  <pause milliseconds="{lead_ms}"/>\n']
    for step in steps:
        if isinstance(step, int):
            parts.append(f'  <pause milliseconds="{step}"/>\n')
        else:
            parts.append(_KEY.format(digit=escape(step)))
    if end == "bye":
        parts += [f'  <pause milliseconds="{tail_ms}"/>\n', _BYE]
    elif end == "refer":
        # Dots in the URI are regex metacharacters; escape them for the ereg.
        parts.append(_REFER.format(refer_to=escape(refer_to.replace(".", r"\."), {'"': "&quot;"}),
                                   timeout_ms=timeout_ms))
    else:
        raise ValueError(f"unknown ending {end!r}")
    path.write_text("".join(parts))
    return path
