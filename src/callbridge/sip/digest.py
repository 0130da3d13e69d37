"""HTTP Digest authentication for SIP, client and server side.

RFC 3261 §22 carries RFC 2617/7616 Digest in (Proxy-)WWW-Authenticate and
(Proxy-)Authorization; RFC 8760 adds SHA-256 for SIP. Everything here is pure:
no sockets, no clocks (``now`` is passed in), randomness only for nonce salt.

One module at ~520 lines because the parser, the client side and the verifier
share one header grammar and one hash, and each part alone would be a fragment.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal


class DigestError(ValueError):
    """A Digest header value that cannot be parsed or answered."""


SCHEME = "Digest"
MD5, MD5_SESS = "MD5", "MD5-sess"
SHA256, SHA256_SESS = "SHA-256", "SHA-256-sess"
# Strongest first; the hash names are hashlib's.
ALGORITHMS: dict[str, str] = {SHA256: "sha256", SHA256_SESS: "sha256", MD5: "md5", MD5_SESS: "md5"}
_CANONICAL = {name.upper(): name for name in ALGORITHMS}
QOP_AUTH = "auth"  # the only qop we offer and answer (we do not hash bodies for auth-int)
NC_DIGITS = 8  # RFC 7616 §3.4: nc is exactly 8 hex digits
DEFAULT_NONCE_LIFETIME = 300.0
NONCE_FUTURE_TOLERANCE = 5.0  # seconds a nonce's stamp may lead ``now``
TIMESTAMP_BYTES, SALT_BYTES, MAC_BYTES = 8, 8, 16
MS_PER_SECOND = 1000
MAX_TRACKED_NONCES = 4096

# RFC 3261 §25.1: token characters (alphanumerics plus these marks).
_TOKEN_MARKS = frozenset("-.!%*_+`'~")
_WHITESPACE = " \t\r\n"


def _is_token_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch in _TOKEN_MARKS)


def canonical_algorithm(name: str | None) -> str:
    """Map any spelling to our canonical name; RFC 7616 §3.3: absent means MD5."""
    if name is None:
        return MD5
    return _CANONICAL.get(name.upper(), name)


@dataclass(frozen=True)
class Challenge:
    """One Digest challenge from (Proxy-)WWW-Authenticate (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: str = MD5
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None

    @property
    def supported(self) -> bool:
        # A -sess HA1 needs a cnonce, which only exists with a qop (RFC 7616 §3.4.2).
        usable_qop = not self.qop or QOP_AUTH in self.qop
        sess_ok = not self.algorithm.endswith("-sess") or QOP_AUTH in self.qop
        return self.algorithm in ALGORITHMS and usable_qop and sess_ok


@dataclass(frozen=True)
class Credentials:
    """Digest credentials from (Proxy-)Authorization (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = MD5
    cnonce: str | None = None
    qop: str | None = None
    nc: str | None = None  # kept as sent: the hash covers the exact text
    opaque: str | None = None


# ---------------------------------------------------------------- parsing


class _Scanner:
    """Cursor over a header value; RFC 3261 §25.1 LWS, tokens, quoted strings."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and _is_token_char(self.text[self.pos]):
            self.pos += 1
        if start == self.pos:
            raise DigestError(f"expected a token at offset {start} in {self.text!r}")
        return self.text[start:self.pos]

    def bare_value(self) -> str:
        # Lenient: some UAs leave uri=sip:... or base64 nonces unquoted.
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _WHITESPACE + ",":
            self.pos += 1
        if start == self.pos:
            raise DigestError(f"missing parameter value at offset {start}")
        return self.text[start:self.pos]

    def quoted(self) -> str:
        # RFC 3261 §25.1: quoted-pair "\" CHAR stands for CHAR.
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == '"':
                return "".join(out)
            if ch == "\\":
                if self.pos >= len(self.text):
                    break
                ch = self.text[self.pos]
                self.pos += 1
            out.append(ch)
        raise DigestError("unterminated quoted string")


def parse_auth_header(value: str) -> list[tuple[str, dict[str, str]]]:
    """Split a header value into (scheme, {lower-case name: value}) challenges.

    RFC 7235 §4.1 allows several challenges in one value; a token not followed
    by '=' after a comma starts the next one.
    """
    scanner = _Scanner(value)
    scanner.skip_ws()
    if not scanner.peek():
        raise DigestError("empty authentication header")
    result: list[tuple[str, dict[str, str]]] = [(scanner.token(), {})]
    need_comma = False
    last_key: str | None = None
    while True:
        scanner.skip_ws()
        ch = scanner.peek()
        if not ch:
            return result
        if ch == ",":  # RFC 7230 §7: empty list elements are allowed
            scanner.pos += 1
            need_comma = False
            continue
        if need_comma:
            raise DigestError(f"expected ',' at offset {scanner.pos} in {value!r}")
        name = scanner.token()
        scanner.skip_ws()
        params = result[-1][1]
        if scanner.peek() != "=":
            if last_key == "qop" and scanner.peek() in ("", ","):
                # Lenient: an unquoted qop=auth,auth-int list continues here.
                params[last_key] += "," + name
                need_comma = True
            else:
                result.append((name, {}))
                last_key = None
            continue
        scanner.pos += 1
        scanner.skip_ws()
        param = scanner.quoted() if scanner.peek() == '"' else scanner.bare_value()
        last_key = name.lower()
        if last_key in params:  # RFC 7616 §3.3: each parameter at most once
            raise DigestError(f"duplicate parameter {name!r}")
        params[last_key] = param
        need_comma = True


def _digest_params(value: str) -> list[dict[str, str]]:
    return [params for scheme, params in parse_auth_header(value) if scheme.lower() == "digest"]


def _require(params: dict[str, str], *names: str) -> list[str]:
    missing = [n for n in names if n not in params]
    if missing:
        raise DigestError(f"missing Digest parameter(s): {', '.join(missing)}")
    return [params[n] for n in names]


def _challenge_from(params: dict[str, str]) -> Challenge:
    realm, nonce = _require(params, "realm", "nonce")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(realm=realm, nonce=nonce, algorithm=canonical_algorithm(params.get("algorithm")),
                     qop=qop, opaque=params.get("opaque"),
                     stale=params.get("stale", "").lower() == "true",  # RFC 7616 §3.3
                     domain=params.get("domain"))


def parse_challenges(value: str) -> list[Challenge]:
    """All Digest challenges in one (Proxy-)WWW-Authenticate value."""
    return [_challenge_from(p) for p in _digest_params(value)]


def parse_challenge(value: str) -> Challenge:
    """The first Digest challenge in a header value."""
    challenges = parse_challenges(value)
    if not challenges:
        raise DigestError(f"no Digest challenge in {value!r}")
    return challenges[0]


def parse_credentials(value: str) -> Credentials:
    """Parse an (Proxy-)Authorization value holding Digest credentials."""
    found = _digest_params(value)
    if len(found) != 1:
        raise DigestError("expected exactly one set of Digest credentials")
    params = found[0]
    username, realm, nonce, uri, response = _require(
        params, "username", "realm", "nonce", "uri", "response")
    qop = params.get("qop")
    return Credentials(username=username, realm=realm, nonce=nonce, uri=uri, response=response,
                       algorithm=canonical_algorithm(params.get("algorithm")),
                       cnonce=params.get("cnonce"), qop=qop.lower() if qop else None,
                       nc=params.get("nc"), opaque=params.get("opaque"))


# ---------------------------------------------------------------- formatting


def _quote(text: str) -> str:
    if any(ch in text for ch in "\r\n"):
        raise DigestError("header parameter values cannot contain CR or LF")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_challenge(challenge: Challenge) -> str:
    # RFC 7616 §3.3: algorithm and stale are tokens, the rest quoted strings.
    parts = [f"realm={_quote(challenge.realm)}", f"nonce={_quote(challenge.nonce)}"]
    if challenge.domain is not None:
        parts.append(f"domain={_quote(challenge.domain)}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if challenge.stale:
        parts.append("stale=true")
    parts.append(f"algorithm={challenge.algorithm}")
    if challenge.qop:
        parts.append(f"qop={_quote(','.join(challenge.qop))}")
    return f"{SCHEME} " + ", ".join(parts)


def format_credentials(creds: Credentials) -> str:
    # RFC 7616 §3.4: algorithm, qop and nc are tokens; the rest quoted strings.
    parts = [f"username={_quote(creds.username)}", f"realm={_quote(creds.realm)}",
             f"nonce={_quote(creds.nonce)}", f"uri={_quote(creds.uri)}",
             f"response={_quote(creds.response)}", f"algorithm={creds.algorithm}"]
    if creds.cnonce is not None:
        parts.append(f"cnonce={_quote(creds.cnonce)}")
    if creds.qop is not None:
        parts.append(f"qop={creds.qop}")
    if creds.nc is not None:
        parts.append(f"nc={creds.nc}")
    if creds.opaque is not None:
        parts.append(f"opaque={_quote(creds.opaque)}")
    return f"{SCHEME} " + ", ".join(parts)


# ---------------------------------------------------------------- hashing


def _hash(algorithm: str, data: str) -> str:
    if algorithm not in ALGORITHMS:
        raise DigestError(f"unsupported Digest algorithm {algorithm!r}")
    # RFC 7616 §4: SIP text is UTF-8.
    return hashlib.new(ALGORITHMS[algorithm], data.encode("utf-8")).hexdigest()


def compute_response(*, algorithm: str, username: str, realm: str, password: str,
                     nonce: str, method: str, uri: str, qop: str | None = None,
                     nc: str | None = None, cnonce: str | None = None) -> str:
    """The ``response`` value for qop=auth or the RFC 2069 no-qop form."""
    algorithm = canonical_algorithm(algorithm)
    ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    if algorithm.endswith("-sess"):
        if cnonce is None:
            raise DigestError(f"{algorithm} needs a cnonce")
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")  # RFC 7616 §3.4.2
    ha2 = _hash(algorithm, f"{method}:{uri}")  # RFC 7616 §3.4.3, qop=auth
    if qop is None:
        # RFC 2069 §2.1.2 compatibility: no nc/cnonce in the hash.
        return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")
    if qop != QOP_AUTH:
        raise DigestError(f"qop={qop} is not supported (only auth)")
    if nc is None or cnonce is None:
        raise DigestError("qop=auth needs nc and cnonce")
    return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")  # RFC 7616 §3.4.1


# ---------------------------------------------------------------- client side


def choose_challenge(values: Iterable[str | Challenge], *, realm: str | None = None,
                     prefer: Literal["strongest", "first"] = "strongest") -> Challenge:
    """Pick the challenge to answer from all (Proxy-)WWW-Authenticate values.

    "strongest" takes SHA-256 over MD5; "first" takes the first one we can
    answer, honouring the server's order (RFC 8760 has servers list their
    preferred algorithm first).
    """
    usable: list[Challenge] = []
    for value in values:
        candidates = [value] if isinstance(value, Challenge) else parse_challenges(value)
        usable += [c for c in candidates if c.supported and realm in (None, c.realm)]
    if not usable:
        raise DigestError("no Digest challenge with a supported algorithm and qop")
    if prefer == "first":
        return usable[0]
    rank = list(ALGORITHMS)
    return min(usable, key=lambda c: rank.index(c.algorithm))


def build_authorization(challenge: Challenge | str, *, method: str, uri: str, username: str,
                        password: str, cnonce: str, nc: int = 1) -> str:
    """An (Proxy-)Authorization value answering ``challenge``.

    ``uri`` must be the Request-URI of the request being sent (RFC 3261 §22.4).
    """
    if isinstance(challenge, str):
        challenge = choose_challenge([challenge], prefer="first")
    if challenge.algorithm not in ALGORITHMS:
        raise DigestError(f"unsupported Digest algorithm {challenge.algorithm!r}")
    if challenge.qop and QOP_AUTH not in challenge.qop:
        raise DigestError(f"only qop=auth is supported, offered {challenge.qop}")
    qop = QOP_AUTH if challenge.qop else None
    nc_text = f"{nc:0{NC_DIGITS}x}" if qop else None
    response = compute_response(algorithm=challenge.algorithm, username=username,
                                realm=challenge.realm, password=password, nonce=challenge.nonce,
                                method=method, uri=uri, qop=qop, nc=nc_text,
                                cnonce=cnonce if qop else None)
    return format_credentials(Credentials(
        username=username, realm=challenge.realm, nonce=challenge.nonce, uri=uri,
        response=response, algorithm=challenge.algorithm, cnonce=cnonce if qop else None,
        qop=qop, nc=nc_text, opaque=challenge.opaque))


# ---------------------------------------------------------------- server side


class VerifyStatus(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right password, old nonce: re-challenge with stale=true
    BAD_CREDENTIALS = "bad_credentials"  # wrong password or unknown user
    MALFORMED = "malformed"  # unparseable or unsupported: answer 400 or challenge anew
    WRONG_REALM = "wrong_realm"  # meant for someone else: fresh challenge


@dataclass(frozen=True)
class VerifyResult:
    status: VerifyStatus
    username: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is VerifyStatus.OK


class DigestVerifier:
    """Issues stateless nonces and checks credentials against them.

    A nonce is base64url(timestamp_ms | salt | HMAC(secret, timestamp | salt |
    realm)), so any instance sharing ``secret`` can verify it without storage.
    ``now`` must come from a wall clock if nonces should survive a restart.
    """

    def __init__(self, realm: str, secret: bytes, *,
                 nonce_lifetime: float = DEFAULT_NONCE_LIFETIME,
                 algorithms: Sequence[str] = (SHA256, MD5), require_qop: bool = False,
                 track_nc: bool = True, max_tracked_nonces: int = MAX_TRACKED_NONCES,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        self.realm = realm
        self.algorithms = tuple(canonical_algorithm(a) for a in algorithms)
        unknown = [a for a in self.algorithms if a not in ALGORITHMS]
        if unknown or not self.algorithms:
            raise ValueError(f"unsupported algorithms {unknown or 'none given'}")
        self.nonce_lifetime = nonce_lifetime
        self.require_qop = require_qop
        self.track_nc = track_nc
        self._secret = secret
        self._random_bytes = random_bytes
        self._max_tracked = max_tracked_nonces
        self._last_nc: OrderedDict[str, int] = OrderedDict()

    # -- nonces

    def _mac(self, stamp_and_salt: bytes) -> bytes:
        data = stamp_and_salt + self.realm.encode("utf-8")
        return hmac.new(self._secret, data, hashlib.sha256).digest()[:MAC_BYTES]

    def make_nonce(self, now: float) -> str:
        if now < 0:
            raise ValueError("now must be a non-negative wall-clock time")
        stamp = int(now * MS_PER_SECOND).to_bytes(TIMESTAMP_BYTES, "big")
        head = stamp + self._random_bytes(SALT_BYTES)
        return base64.urlsafe_b64encode(head + self._mac(head)).rstrip(b"=").decode("ascii")

    def nonce_issued_at(self, nonce: str) -> float | None:
        """The ``now`` at which we issued ``nonce``, or None if it is not ours."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != TIMESTAMP_BYTES + SALT_BYTES + MAC_BYTES:
            return None
        head, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(head)):
            return None
        return int.from_bytes(head[:TIMESTAMP_BYTES], "big") / MS_PER_SECOND

    def _nonce_fresh(self, nonce: str, now: float) -> bool:
        issued = self.nonce_issued_at(nonce)
        if issued is None:
            return False
        return -NONCE_FUTURE_TOLERANCE <= now - issued <= self.nonce_lifetime

    # -- challenges

    def challenge(self, now: float, *, stale: bool = False, algorithm: str | None = None) -> str:
        """One WWW-Authenticate value; only qop=auth is offered (SIPp picks
        auth-int when both are listed, and we do not verify bodies)."""
        algo = canonical_algorithm(algorithm) if algorithm else self.algorithms[0]
        if algo not in self.algorithms:
            raise ValueError(f"algorithm {algo!r} is not enabled")
        return format_challenge(Challenge(realm=self.realm, nonce=self.make_nonce(now),
                                          algorithm=algo, qop=(QOP_AUTH,), stale=stale))

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """One value per enabled algorithm, preferred first (RFC 8760)."""
        return [self.challenge(now, stale=stale, algorithm=a) for a in self.algorithms]

    # -- verification

    def verify(self, header_value: str | Credentials, *, method: str,
               password_lookup: Callable[[str], str | None], now: float) -> VerifyResult:
        """Check credentials (a header value, or ones already parsed); the hash uses the
        credentials' own ``uri`` (SIPp sends ``sip:host:port`` there, not the Request-URI)."""
        if isinstance(header_value, Credentials):
            creds = header_value
        else:
            try:
                creds = parse_credentials(header_value)
            except DigestError as exc:
                return VerifyResult(VerifyStatus.MALFORMED, reason=str(exc))
        problem = self._shape_problem(creds)
        if problem is not None:
            return problem
        password = password_lookup(creds.username)
        if password is None:
            return VerifyResult(VerifyStatus.BAD_CREDENTIALS, creds.username, "unknown user")
        expected = compute_response(
            algorithm=creds.algorithm, username=creds.username, realm=creds.realm,
            password=password, nonce=creds.nonce, method=method, uri=creds.uri,
            qop=creds.qop, nc=creds.nc, cnonce=creds.cnonce)
        if not hmac.compare_digest(expected.encode(), creds.response.lower().encode("utf-8")):
            return VerifyResult(VerifyStatus.BAD_CREDENTIALS, creds.username, "wrong response")
        # Only now, with the password proven, is "stale" safe to say (RFC 7616 §3.3).
        if not self._nonce_fresh(creds.nonce, now):
            return VerifyResult(VerifyStatus.STALE, creds.username, "nonce expired or unknown")
        if not self._accept_nc(creds):
            return VerifyResult(VerifyStatus.STALE, creds.username, "nonce count replayed")
        return VerifyResult(VerifyStatus.OK, creds.username)

    def _shape_problem(self, creds: Credentials) -> VerifyResult | None:
        def malformed(reason: str) -> VerifyResult:
            return VerifyResult(VerifyStatus.MALFORMED, creds.username, reason)

        if creds.realm != self.realm:
            return VerifyResult(VerifyStatus.WRONG_REALM, creds.username,
                                f"realm {creds.realm!r} is not ours")
        if creds.algorithm not in self.algorithms:
            return malformed(f"algorithm {creds.algorithm!r} not enabled")
        if not creds.uri:
            return malformed("empty uri")
        if creds.qop is None:
            if self.require_qop or creds.algorithm.endswith("-sess"):
                return malformed("qop is required")
            return None
        if creds.qop != QOP_AUTH:
            return malformed(f"qop={creds.qop} is not supported")
        if not creds.cnonce or creds.nc is None or not _is_hex_nc(creds.nc):
            return malformed("qop=auth needs cnonce and an 8-hex-digit nc")
        return None

    def _accept_nc(self, creds: Credentials) -> bool:
        # RFC 7616 §3.4: nc must grow per nonce; a repeat is a replay.
        if not self.track_nc or creds.nc is None:
            return True
        count = int(creds.nc, 16)
        last = self._last_nc.get(creds.nonce)
        if last is not None and count <= last:
            return False
        self._last_nc[creds.nonce] = count
        self._last_nc.move_to_end(creds.nonce)
        while len(self._last_nc) > self._max_tracked:
            self._last_nc.popitem(last=False)  # forget the oldest nonce
        return True


def _is_hex_nc(text: str) -> bool:
    return len(text) == NC_DIGITS and all(ch in "0123456789abcdefABCDEF" for ch in text)
