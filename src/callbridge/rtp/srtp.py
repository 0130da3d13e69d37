"""SRTP keyed by SDES (RFC 3711, RFC 4568): a=crypto attributes and per-call crypto contexts.

The crypto itself is libsrtp's (through ``pylibsrtp``): AES-CM and HMAC-SHA1,
replay protection, SRTCP. This module only

* parses and writes ``a=crypto`` values (RFC 4568 §9.2 grammar),
* makes fresh master keys (one per call and direction, ``os.urandom``), and
* wraps the two libsrtp sessions a call needs (ours to send, theirs to
  receive) so that a packet that fails authentication or replay checks is
  dropped and counted, never raised to the caller.

SDES puts the keys in the SDP in clear, so they may only travel over TLS
signalling (RFC 4568 §8.3); the call layer enforces that (call/srtp_policy.py).
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pylibsrtp

__all__ = [
    "SUITES",
    "DEFAULT_SUITE",
    "CryptoAttribute",
    "SrtpCounters",
    "SrtpContext",
    "SrtpError",
    "new_crypto",
    "parse_crypto",
]

# RFC 4568 §6.2: both suites use a 128-bit AES master key and a 112-bit salt. They differ in the SRTP
# tag length (80 or 32 bits); SRTCP keeps the 80-bit tag in both (RFC 4568 §6.2.2).
MASTER_KEY_LEN = 16
MASTER_SALT_LEN = 14
KEY_SALT_LEN = MASTER_KEY_LEN + MASTER_SALT_LEN
SUITES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
DEFAULT_SUITE = "AES_CM_128_HMAC_SHA1_80"  # the one RFC 4568 §6.2.1 and every SDES peer support
# RFC 3711 §3.3.2: the replay list must hold at least 64 packets; libsrtp's default (0 means it) is 128.
REPLAY_WINDOW = 128
# Session parameters (RFC 4568 §6.3) that change nothing for us when given their default value.
_HARMLESS_PARAMS = re.compile(r"^(WSH=\d+|KDR=0)$")
_LIFETIME = re.compile(r"^(2\^)?\d{1,20}$")
_TAG = re.compile(r"^\d{1,9}$")
# One libsrtp call: protect/unprotect an RTP or RTCP packet.
Transform = Callable[[bytes], bytes]


class SrtpError(ValueError):
    """An ``a=crypto`` value we cannot use; the message says why."""


@dataclass(frozen=True)
class CryptoAttribute:
    """One ``a=crypto`` line: ``<tag> <suite> inline:<base64 key||salt>[|lifetime] [params]``."""

    tag: int
    suite: str
    key: bytes = field(repr=False)  # master key followed by master salt (30 bytes), never logged
    lifetime: str | None = None

    def __str__(self) -> str:
        """The attribute value (after ``a=crypto:``), RFC 4568 §9.2."""
        inline = binascii.b2a_base64(self.key, newline=False).decode("ascii")
        suffix = f"|{self.lifetime}" if self.lifetime else ""
        return f"{self.tag} {self.suite} inline:{inline}{suffix}"


def new_crypto(tag: int = 1, suite: str = DEFAULT_SUITE) -> CryptoAttribute:
    """A fresh random master key and salt for one direction of one call (RFC 4568 §6.1)."""
    if suite not in SUITES:
        raise SrtpError(f"unsupported crypto suite {suite!r}")
    return CryptoAttribute(tag, suite, os.urandom(KEY_SALT_LEN))


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse an ``a=crypto`` value; SrtpError names what makes it unusable."""
    parts = value.split()
    if len(parts) < 3:
        raise SrtpError("a=crypto needs '<tag> <crypto-suite> <key-params>' (RFC 4568 §9.1)")
    tag_text, suite, key_params, *session_params = parts
    if not _TAG.match(tag_text):
        raise SrtpError(f"tag must be 1 to 9 digits, not {tag_text[:20]!r}")
    if suite not in SUITES:
        raise SrtpError(f"unsupported crypto suite {suite[:40]!r} (we take {', '.join(SUITES)})")
    unknown = [p for p in session_params if not _HARMLESS_PARAMS.match(p)]
    if unknown:
        # RFC 4568 §6.3: a session parameter we do not honour makes the attribute unusable.
        raise SrtpError(f"unsupported session parameter {unknown[0][:40]!r}")
    if ";" in key_params:
        raise SrtpError("several master keys (MKI) are not supported")
    method, sep, key_info = key_params.partition(":")
    if method != "inline" or not sep:
        raise SrtpError("key method must be 'inline:' (RFC 4568 §6.1)")
    key_text, *extras = key_info.split("|")
    if len(extras) > 2:
        raise SrtpError("key-info has more than a lifetime and an MKI")
    lifetime = None
    for extra in extras:
        if ":" in extra:
            raise SrtpError("an MKI was given; master key identifiers are not supported")
        if not _LIFETIME.match(extra) or lifetime is not None:
            raise SrtpError(f"bad key lifetime {extra[:30]!r}")
        lifetime = extra
    return CryptoAttribute(int(tag_text), suite, _decode_key(key_text), lifetime)


def _decode_key(text: str) -> bytes:
    try:
        key = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SrtpError("inline key is not valid base64") from None
    if len(key) != KEY_SALT_LEN:
        # RFC 4568 §6.1: exactly the suite's master key and salt, concatenated.
        raise SrtpError(f"inline key is {len(key)} bytes; the suite needs {KEY_SALT_LEN} (16-byte key, 14-byte salt)")
    return key


@dataclass(slots=True)
class SrtpCounters:
    """Packets SRTP handled and dropped for one call."""

    protected: int = 0  # RTP and RTCP sent encrypted
    unprotected: int = 0  # RTP and RTCP received that authenticated
    auth_failures: int = 0  # wrong tag: a forgery, a stranger, or a peer with another key
    replays: int = 0  # a packet index seen before or too old (RFC 3711 §3.3.2)
    malformed: int = 0  # too short or too long to be SRTP
    send_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"protected": self.protected, "unprotected": self.unprotected, "auth_failures": self.auth_failures,
                "replays": self.replays, "malformed": self.malformed, "send_failures": self.send_failures}


class SrtpContext:
    """One call's SRTP: our key protects what we send, the peer's key checks what we receive.

    Each method returns the transformed packet, or None when it must be dropped
    (counted in ``counters``). libsrtp keeps one replay list per SSRC (RFC 3711
    §3.3.2) and makes a stream for a new SSRC only once a packet authenticates,
    so a stranger's packets cost a tag check and nothing else.
    """

    __slots__ = ("local", "remote", "profile", "counters", "_tx", "_rx")

    def __init__(self, local: CryptoAttribute, remote: CryptoAttribute, profile: str = "RTP/SAVP") -> None:
        if local.suite != remote.suite:
            raise SrtpError(f"both directions must use one suite ({local.suite} vs {remote.suite})")
        self.local, self.remote = local, remote
        # The SDP protocol this was negotiated under (RTP/SAVP, or RTP/AVP for best-effort SDES): re-offers keep it.
        self.profile = profile
        self.counters = SrtpCounters()
        tx = pylibsrtp.Policy(key=local.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=SUITES[local.suite])
        # RFC 4733 §2.5.1.4 repeats an event's final packet with the same sequence number.
        tx.allow_repeat_tx = True
        self._tx = pylibsrtp.Session(tx)
        self._rx = self._receiver(remote)

    @staticmethod
    def _receiver(remote: CryptoAttribute) -> pylibsrtp.Session:
        rx = pylibsrtp.Policy(key=remote.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                              srtp_profile=SUITES[remote.suite])
        rx.window_size = REPLAY_WINDOW
        return pylibsrtp.Session(rx)

    def rekey_remote(self, remote: CryptoAttribute) -> None:
        """The peer's new key from a re-offer or re-answer (RFC 4568 §7.1.4); ours stays."""
        if remote.key == self.remote.key and remote.suite == self.remote.suite:
            return
        if remote.suite != self.local.suite:
            raise SrtpError(f"a re-offer cannot change the suite ({self.local.suite} to {remote.suite})")
        self._rx, self.remote = self._receiver(remote), remote

    # -- sending ------------------------------------------------------------------------------------

    def protect(self, packet: bytes) -> bytes | None:
        return self._send(self._tx.protect, packet)

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        return self._send(self._tx.protect_rtcp, packet)

    def _send(self, transform: Transform, packet: bytes) -> bytes | None:
        try:
            data = transform(packet)
        except (pylibsrtp.Error, ValueError):
            self.counters.send_failures += 1
            return None
        self.counters.protected += 1
        return data

    # -- receiving ----------------------------------------------------------------------------------

    def unprotect(self, packet: bytes) -> bytes | None:
        return self._receive(self._rx.unprotect, packet)

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        return self._receive(self._rx.unprotect_rtcp, packet)

    def _receive(self, transform: Transform, packet: bytes) -> bytes | None:
        try:
            data = transform(packet)
        except pylibsrtp.Error as exc:
            self._count_failure(str(exc))
            return None
        except ValueError:  # longer than libsrtp's buffer: no RTP of ours is
            self.counters.malformed += 1
            return None
        self.counters.unprotected += 1
        return data

    def _count_failure(self, message: str) -> None:
        counters = self.counters
        if message.startswith("replay"):
            counters.replays += 1
        elif message.startswith("authentication"):
            counters.auth_failures += 1
        else:  # too short for a header and tag, a parse error
            counters.malformed += 1
