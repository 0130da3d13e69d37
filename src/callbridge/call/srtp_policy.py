"""Which calls use SRTP, and the SDES offer/answer for them (RFC 4568 §7).

Per trunk (and a server-wide default for calls matching no trunk), ``srtp`` is

* ``required``: only encrypted media. An offer without a usable ``a=crypto``
  gets 488; our offers are ``RTP/SAVP`` with ``a=crypto`` only, and an answer
  without a key ends the call.
* ``optional``: encrypted when the peer can. We accept ``RTP/SAVP`` with
  ``a=crypto``, ``RTP/AVP`` with ``a=crypto`` (best-effort SDES, what baresip's
  ``mediaenc=srtp`` and several gateways send) and plain ``RTP/AVP``. Our offers
  are ``RTP/AVP`` with ``a=crypto``: a peer that knows SDES answers with a key,
  one that does not ignores the unknown attribute and the call stays plain.
* ``off``: plain RTP only; an ``RTP/SAVP``-only offer gets 488.
* ``auto`` (the default): ``optional`` when the signalling is TLS, else ``off``.

SDES keys are in the SDP in clear, so they are offered and accepted only over
TLS signalling (RFC 4568 §8.3). ``required`` over UDP/TCP refuses the call,
``optional`` falls back to plain RTP; both say why in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..rtp.srtp import DEFAULT_SUITE, SUITES, CryptoAttribute, SrtpContext, SrtpError, new_crypto, parse_crypto
from ..sip.sdp import AVP, SAVP, Answer, MediaDescription, SessionDescription, crypto_values

log = logging.getLogger("callbridge.srtp")

REQUIRED, OPTIONAL, OFF, AUTO = "required", "optional", "off", "auto"
MODES = (REQUIRED, OPTIONAL, OFF, AUTO)
SECURE_TRANSPORT = "tls"
# Our offers list both suites, the 80-bit tag first (RFC 4568 §6.2.1: every SDES peer has it).
OFFER_SUITES = (DEFAULT_SUITE, "AES_CM_128_HMAC_SHA1_32")
# "Keys refused over UDP/TCP" is logged at most this often: a misconfigured peer calls all day.
REFUSAL_LOG_INTERVAL_S = 60.0
_refusal_logged_at = -REFUSAL_LOG_INTERVAL_S
_refusals_unlogged = 0


class SrtpRefused(ValueError):
    """The call cannot go ahead under the trunk's SRTP setting; ``str()`` says why."""


def effective_mode(configured: str | None, transport: str, *, where: str) -> str:
    """The mode for one call given its signalling transport: ``required``, ``optional``, ``off``,
    or raise SrtpRefused for ``required`` over a transport that would expose the keys."""
    mode = configured or AUTO
    if mode not in MODES:
        raise ValueError(f"srtp must be one of {MODES}, not {mode!r}")
    secure = transport.lower() == SECURE_TRANSPORT
    if mode == AUTO:
        return OPTIONAL if secure else OFF
    if mode == OFF or secure:
        return mode
    reason = (f"{where}: srtp {mode} but the signalling is {transport.upper()}: SDES keys travel in clear "
              "in the SDP and may only be sent over TLS (RFC 4568 §8.3)")
    if mode == REQUIRED:
        raise SrtpRefused(reason)
    log_refusal(reason + "; media stays plain RTP")
    return OFF


def log_refusal(message: str) -> None:
    global _refusal_logged_at, _refusals_unlogged
    now = time.monotonic()
    if now - _refusal_logged_at < REFUSAL_LOG_INTERVAL_S:
        _refusals_unlogged += 1
        return
    log.warning("%s (%d more since the last warning)", message, _refusals_unlogged)
    _refusal_logged_at, _refusals_unlogged = now, 0


def note_offer_transport(offer: SessionDescription, transport: str, *, where: str) -> None:
    """Say in the log why keys offered over UDP/TCP are ignored: they were exposed on the way here."""
    if transport.lower() != SECURE_TRANSPORT and any(crypto_values(m) for m in offer.media):
        log_refusal(f"{where}: a=crypto offered over {transport.upper()} ignored: SDES keys may only be "
                    "accepted over TLS signalling (RFC 4568 §8.3); answering plain RTP/AVP or 488")


# -- answering an offer ------------------------------------------------------------------------------

def usable_crypto(media: MediaDescription, suite: str | None = None) -> CryptoAttribute | None:
    """The first ``a=crypto`` of the stream we can use (RFC 4568 §7.1.2: in the offerer's order)."""
    for value in crypto_values(media):
        try:
            crypto = parse_crypto(value)
        except SrtpError as exc:
            log.debug("a=crypto skipped: %s", exc)
            continue
        if suite is None or crypto.suite == suite:
            return crypto
    return None


def answer_terms(mode: str) -> tuple[tuple[str, ...], Callable[[MediaDescription], bool] | None]:
    """(protos, extra test on a stream) for ``negotiate_answer`` under ``mode``."""
    if mode == REQUIRED:
        return (SAVP, AVP), lambda media: usable_crypto(media) is not None
    if mode == OPTIONAL:
        return (SAVP, AVP), lambda media: media.proto.upper() == AVP or usable_crypto(media) is not None
    return (AVP,), None


def secure_answer(offer: SessionDescription, answer: Answer, mode: str) -> SrtpContext | None:
    """Key the accepted stream: our fresh key goes into the answer under the offer's tag."""
    if mode == OFF:
        return None
    remote = usable_crypto(offer.media[answer.media_index])
    if remote is None:
        return None  # optional, and a plain RTP/AVP offer
    local = new_crypto(remote.tag, remote.suite)
    media = answer.sdp.media[answer.media_index]
    media.add_attribute("crypto", str(local))
    return SrtpContext(local, remote, media.proto)


def reanswer_terms(context: SrtpContext | None) -> tuple[tuple[str, ...], Callable[[MediaDescription], bool] | None]:
    """(protos, extra test) for a re-offer on a call: an encrypted call accepts only its own suite."""
    if context is None:
        return (AVP,), None
    suite = context.local.suite
    return (SAVP, AVP), lambda media: usable_crypto(media, suite) is not None


def secure_reanswer(context: SrtpContext | None, offer: SessionDescription, answer: Answer) -> None:
    """A re-offer on a call: an encrypted call stays encrypted with the same suite and our key, and takes
    the peer's key if it changed (RFC 4568 §7.1.4). Raises SrtpRefused for a re-offer that drops SRTP."""
    if context is None:
        return
    remote = usable_crypto(offer.media[answer.media_index], context.local.suite)
    if remote is None:
        raise SrtpRefused("a re-offer without a=crypto on an encrypted call")
    context.rekey_remote(remote)
    local = CryptoAttribute(remote.tag, context.local.suite, context.local.key)
    answer.sdp.media[answer.media_index].add_attribute("crypto", str(local))


# -- offering ---------------------------------------------------------------------------------------

def offer_terms(mode: str) -> tuple[str, list[CryptoAttribute]]:
    """(proto, our keys, one per suite) for a new offer under ``mode``."""
    if mode == OFF:
        return AVP, []
    keys = [new_crypto(tag, suite) for tag, suite in enumerate(OFFER_SUITES, start=1) if suite in SUITES]
    return (SAVP if mode == REQUIRED else AVP), keys


def secure_offer_answered(offered: list[CryptoAttribute], mode: str, answer: Answer) -> SrtpContext | None:
    """The peer's answer to our offer: its a=crypto names one of our tags (RFC 4568 §7.1.3).
    None for a plain answer to an optional offer; SrtpRefused if SRTP was required."""
    if not offered:
        return None
    theirs = answer.sdp.media[answer.media_index]
    by_tag = {c.tag: c for c in offered}
    for value in crypto_values(theirs):
        try:
            remote = parse_crypto(value)
        except SrtpError as exc:
            log.debug("a=crypto in answer skipped: %s", exc)
            continue
        local = by_tag.get(remote.tag)
        if local is not None and local.suite == remote.suite:
            return SrtpContext(local, remote, theirs.proto)
    if mode == REQUIRED or theirs.proto.upper() == SAVP:
        raise SrtpRefused("the answer has no a=crypto matching our offer")
    return None


def reoffer_crypto(context: SrtpContext | None) -> tuple[str, list[str]]:
    """(proto, a=crypto values) for our re-offer on a call (hold/unhold): the keys stay the same."""
    if context is None:
        return AVP, []
    return context.profile, [str(context.local)]


def reanswered(context: SrtpContext | None, answer: Answer) -> None:
    """The answer to our re-offer: take the peer's key if it changed (RFC 4568 §7.1.4)."""
    if context is None:
        return
    remote = usable_crypto(answer.sdp.media[answer.media_index], context.local.suite)
    if remote is None:
        log.warning("re-INVITE answer has no usable a=crypto; keeping the current SRTP keys")
        return
    context.rekey_remote(remote)
