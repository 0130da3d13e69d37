"""The one error type the SIP parser raises, carrying the status to answer with."""

from __future__ import annotations


class SipParseError(ValueError):
    """A message (or part of one) that does not follow RFC 3261 §25.

    ``status`` is what a server should answer when the broken part is a request
    it could still identify (RFC 3261 §16.3 / §21.4.1: 400, or 505 for an
    unsupported SIP version). ``reason`` is a short human-readable phrase that
    goes into the response's reason phrase and the log.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
