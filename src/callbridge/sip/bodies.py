"""Small SIP message bodies: DTMF in INFO, and message/sipfrag for REFER NOTIFYs."""

from __future__ import annotations

from dataclasses import dataclass

VALID_DTMF = set("0123456789*#ABCD")
# RFC 4733 §3.2 event codes 10 and 11 map to * and #; some devices send codes.
_EVENT_CODES = {str(i): str(i) for i in range(10)} | {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}
DEFAULT_INFO_DURATION_MS = 160


@dataclass(slots=True, frozen=True)
class InfoDtmf:
    digit: str
    duration_ms: int


def parse_dtmf_info(content_type: str | None, body: bytes) -> InfoDtmf | None:
    """Read a DTMF digit from an INFO body.

    ``application/dtmf-relay`` (the de-facto Cisco format: ``Signal=5`` and
    ``Duration=160`` lines) and ``application/dtmf`` (just the digit, or an
    event code) are both common on trunks.
    """
    if content_type not in ("application/dtmf-relay", "application/dtmf"):
        return None
    text = body.decode("utf-8", "replace").strip()
    if content_type == "application/dtmf":
        digit = _EVENT_CODES.get(text, text.upper())
        return InfoDtmf(digit, DEFAULT_INFO_DURATION_MS) if digit in VALID_DTMF else None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    signal = fields.get("signal", "")
    digit = _EVENT_CODES.get(signal, signal.upper())
    if digit not in VALID_DTMF:
        return None
    duration = fields.get("duration", "")
    return InfoDtmf(digit, int(duration) if duration.isdigit() else DEFAULT_INFO_DURATION_MS)


def sipfrag(status: int, reason: str) -> bytes:
    """RFC 3515 §2.4.5: the NOTIFY body is a status line as message/sipfrag."""
    return f"SIP/2.0 {status} {reason}\r\n".encode()


def parse_sipfrag_status(body: bytes) -> int | None:
    first = body.decode("utf-8", "replace").strip().splitlines()
    if not first:
        return None
    parts = first[0].split(" ", 2)
    if len(parts) >= 2 and parts[0].upper() == "SIP/2.0" and parts[1].isdigit():
        return int(parts[1])
    return None
