"""Verify AWS Signature Version 4 on a request and on an event stream's chunk-signature chain.

Follows the AWS IAM user guide, "Create a signed AWS API request" (canonical request,
string to sign, signing key, signature) and the event-stream variant used by Bedrock's
bidirectional stream (``x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-EVENTS``), where
each client message is wrapped in an envelope carrying ``:date`` and ``:chunk-signature``
and every signature chains on the previous one. Pure functions; no I/O, no clock.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from callbridge.standins import eventstream

ALGORITHM = "AWS4-HMAC-SHA256"
EVENT_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_EVENTS_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# AWS rejects requests whose x-amz-date is more than 5 minutes off the server clock.
MAX_CLOCK_SKEW = datetime.timedelta(minutes=5)

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


class SignatureError(Exception):
    """The signature is missing, malformed or wrong. ``error_type`` is the AWS error name."""

    def __init__(self, message: str, error_type: str = "InvalidSignatureException") -> None:
        super().__init__(message)
        self.error_type = error_type


def _hmac(key: bytes, message: str | bytes) -> bytes:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return hmac.new(key, data, hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request")."""
    k_date = _hmac(("AWS4" + secret).encode("utf-8"), date)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


@dataclass(frozen=True, slots=True)
class Credential:
    access_key: str
    date: str  # YYYYMMDD
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    credential: Credential
    timestamp: str  # x-amz-date
    signature: str  # hex: the seed of the chunk-signature chain
    secret: str  # chunks are signed with a key of their own date (a stream may cross midnight)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, plus collapsing empty segments as SigV4 does for non-S3 services."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    result = "/" + "/".join(out)
    if path.endswith("/") and result != "/":
        result += "/"
    return result


def canonical_path(raw_path: str) -> str:
    # Non-S3 services encode the already-encoded path once more ("%3A" -> "%253A").
    return quote(_remove_dot_segments(raw_path), safe="/")


def canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="~"), quote(v, safe="~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(method: str, path: str, headers: Mapping[str, str], signed: list[str]) -> str:
    raw_path, _, query = path.partition("?")
    lines = [f"{name}:{' '.join(headers[name].split())}\n" for name in signed]
    payload_hash = headers.get("x-amz-content-sha256", hashlib.sha256(b"").hexdigest())
    return (
        f"{method.upper()}\n{canonical_path(raw_path)}\n{canonical_query(query)}\n"
        f"{''.join(lines)}\n{';'.join(signed)}\n{payload_hash}"
    )


def verify_request(
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    secrets: Mapping[str, str],
    service: str,
    now: datetime.datetime,
) -> VerifiedRequest:
    """Check the Authorization header of a request; ``headers`` has lower-case names.

    ``secrets`` maps access key ids to secret keys. Raises :class:`SignatureError`."""
    authorization = headers.get("authorization")
    if authorization is None:
        raise SignatureError("missing Authorization header", "MissingAuthenticationTokenException")
    match = _AUTHORIZATION.match(authorization.strip())
    if match is None:
        raise SignatureError("malformed Authorization header", "IncompleteSignatureException")
    parts = match["credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SignatureError("malformed credential scope", "IncompleteSignatureException")
    credential = Credential(*parts[:4])
    if credential.service != service:
        raise SignatureError(f"credential should be scoped to service {service!r}")
    secret = secrets.get(credential.access_key)
    if secret is None:
        raise SignatureError("the security token included in the request is invalid",
                             "UnrecognizedClientException")
    timestamp = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.datetime.strptime(timestamp, TIMESTAMP_FORMAT).replace(tzinfo=datetime.UTC)
    except ValueError:
        raise SignatureError("missing or malformed x-amz-date", "IncompleteSignatureException") from None
    if timestamp[:8] != credential.date:
        raise SignatureError("x-amz-date does not match the credential scope date")
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        raise SignatureError("signature expired: x-amz-date is too far from the server time")
    signed = match["signed"].split(";")
    if "host" not in signed or signed != sorted(signed):
        raise SignatureError("SignedHeaders must be sorted and include host")
    missing = [name for name in signed if name not in headers]
    if missing:
        raise SignatureError(f"signed header(s) not present: {', '.join(missing)}")
    string_to_sign = (
        f"{ALGORITHM}\n{timestamp}\n{credential.scope}\n"
        + hashlib.sha256(canonical_request(method, path, headers, signed).encode("utf-8")).hexdigest()
    )
    key = signing_key(secret, credential.date, credential.region, credential.service)
    expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match["signature"]):
        raise SignatureError("the request signature we calculated does not match the signature you provided")
    return VerifiedRequest(credential, timestamp, match["signature"], secret)


class ChunkChain:
    """Verifies each signed envelope of a ``STREAMING-AWS4-HMAC-SHA256-EVENTS`` body in order.

    string-to-sign = "AWS4-HMAC-SHA256-PAYLOAD" \\n timestamp \\n scope \\n prior signature (hex)
    \\n sha256(encoded ``:date`` header) \\n sha256(inner message bytes); the first prior
    signature is the request's. An envelope with an empty payload ends the stream."""

    def __init__(self, request: VerifiedRequest) -> None:
        self._request = request
        self._prior = request.signature
        self.ended = False

    def verify(self, envelope: eventstream.Message) -> bytes:
        """Return the inner message bytes (empty at end of stream); raise SignatureError."""
        if self.ended:
            raise SignatureError("message after the final (empty) signed envelope")
        date = envelope.headers.get(":date")
        signature = envelope.headers.get(":chunk-signature")
        if not isinstance(date, eventstream.HeaderValue) or date.type is not eventstream.HeaderType.TIMESTAMP:
            raise SignatureError("envelope without a :date timestamp header")
        if (not isinstance(signature, eventstream.HeaderValue)
                or signature.type is not eventstream.HeaderType.BYTE_ARRAY):
            raise SignatureError("envelope without a :chunk-signature byte-array header")
        assert isinstance(date.value, datetime.datetime) and isinstance(signature.value, bytes)
        timestamp = date.value.astimezone(datetime.UTC).strftime(TIMESTAMP_FORMAT)
        encoded_date = eventstream.encode_header(":date", date)
        credential = self._request.credential
        scope = Credential(credential.access_key, timestamp[:8], credential.region, credential.service).scope
        key = signing_key(self._request.secret, timestamp[:8], credential.region, credential.service)
        string_to_sign = (
            f"{EVENT_ALGORITHM}\n{timestamp}\n{scope}\n{self._prior}\n"
            f"{hashlib.sha256(encoded_date).hexdigest()}\n{hashlib.sha256(envelope.payload).hexdigest()}"
        )
        expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature.value):
            raise SignatureError("chunk signature does not match")
        self._prior = expected.hex()
        if not envelope.payload:
            self.ended = True
        return envelope.payload
