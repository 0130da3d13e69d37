"""The mark on a request one worker forwards to another: sans-IO.

A forwarded request is handled where it lands and never forwarded again, so a loop cannot form.
Only a peer may set the mark: it is an HMAC (RFC 2104, SHA-256) over the sender, the time, the
method and the path, keyed from the cluster's shared API token. A client without the token cannot
make one; a client's own copy of the header that does not verify is ignored (the request is routed
as any client's). The time bounds a replay to :data:`MAX_SKEW_S`.

    X-Callbridge-Peer: <worker id>;<unix seconds>;<hex HMAC>
"""

from __future__ import annotations

import hashlib
import hmac

from . import keys

HEADER = "x-callbridge-peer"
MAX_SKEW_S = 30.0
MAX_HEADER_LENGTH = 256
# The MAC key is derived, never the token itself: a leaked MAC says nothing about the token.
KEY_LABEL = b"callbridge-cluster-peer\x00"


class PeerMark:
    def __init__(self, token: str) -> None:
        self._key = hashlib.sha256(KEY_LABEL + token.encode()).digest()

    def _mac(self, worker_id: str, at: int, method: str, path: str) -> str:
        message = f"{worker_id}\n{at}\n{method.upper()}\n{path}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, worker_id: str, method: str, path: str, now: float) -> str:
        at = int(now)
        return f"{worker_id};{at};{self._mac(worker_id, at, method, path)}"

    def verify(self, value: str, method: str, path: str, now: float) -> str | None:
        """The sending worker's id when ``value`` is a valid mark for this request now, else None."""
        if len(value) > MAX_HEADER_LENGTH:
            return None
        parts = value.split(";")
        if len(parts) != 3:
            return None
        worker_id, at_text, mac = parts
        if not keys.WORKER_ID.match(worker_id) or not at_text.isdigit() or len(at_text) > 12:
            return None
        at = int(at_text)
        if abs(now - at) > MAX_SKEW_S:
            return None
        if not hmac.compare_digest(mac, self._mac(worker_id, at, method, path)):
            return None
        return worker_id
