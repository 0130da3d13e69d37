"""An online digest password guesser: what an attacker's script does, bounded in count and time.

It asks for one challenge, then sends INVITEs with digest responses for wrong
passwords as fast as it can, one fresh transaction each, and counts the
answers it gets back (what the far side received, not what the server logged).
Deliberately independent of callbridge's own digest code.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import select
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

SDP = ("v=0\r\no=guess 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
# Guesses in flight at once, and how long one may go unanswered before it counts as lost.
WINDOW = 32
LOST_AFTER = 0.5


@dataclass
class GuessRun:
    sent: int = 0
    answers: Counter = field(default_factory=Counter)  # final status -> count, for guessed requests
    answer_times: list[float] = field(default_factory=list)  # seconds since the first guess
    elapsed: float = 0.0
    challenge: str | None = None

    @property
    def answered(self) -> int:
        return sum(self.answers.values())

    @property
    def answers_per_second(self) -> float:
        return self.answered / self.elapsed if self.elapsed else 0.0


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def invite(target: tuple[str, int], local: tuple[str, int], number: str, *, authorization: str | None = None,
           call_id: str | None = None) -> bytes:
    host, port = target
    body = SDP.format(host=local[0])
    lines = [
        f"INVITE sip:{number}@{host}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{secrets.token_hex(8)};rport",
        f"From: <sip:guess@{local[0]}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{number}@{host}>",
        f"Call-ID: {call_id or secrets.token_hex(12)}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:guess@{local[0]}:{local[1]}>",
        "Max-Forwards: 70",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    lines += ["Content-Type: application/sdp", f"Content-Length: {len(body)}", "", body]
    return "\r\n".join(lines).encode()


def _param(challenge: str, name: str) -> str | None:
    match = re.search(rf'{name}="?([^",]+)"?', challenge)
    return match.group(1) if match else None


def authorization(challenge: str, *, username: str, password: str, uri: str, nc: int) -> str:
    """An MD5, qop=auth answer to ``challenge`` (RFC 7616 §3.4.1)."""
    realm, nonce = _param(challenge, "realm"), _param(challenge, "nonce")
    cnonce, nc_text = secrets.token_hex(4), f"{nc:08x}"
    ha1, ha2 = _md5(f"{username}:{realm}:{password}"), _md5(f"INVITE:{uri}")
    response = _md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, cnonce="{cnonce}", qop=auth, nc={nc_text}')


def _status(data: bytes) -> int | None:
    match = re.match(rb"SIP/2\.0 (\d{3}) ", data)
    return int(match.group(1)) if match else None


def _call_id(data: bytes) -> str | None:
    match = re.search(rb"\r\n(?:Call-ID|i):\s*(\S+)", data, re.IGNORECASE)
    return match.group(1).decode() if match else None


def first_challenge(data: bytes) -> str | None:
    """The MD5 challenge of a 401 (the first WWW-Authenticate naming MD5)."""
    for match in re.finditer(rb"\r\nWWW-Authenticate:\s*([^\r\n]+)", data, re.IGNORECASE):
        value = match.group(1).decode()
        if "MD5" in value.upper() and "SHA" not in value.upper():
            return value
    return None


def guess_passwords(target: tuple[str, int], *, number: str, username: str, bind_host: str = "127.0.0.1",
                    seconds: float = 3.0, max_guesses: int = 20000, password: str | None = None) -> GuessRun:
    """Send wrong-password INVITEs for ``seconds`` (at most ``max_guesses``); ``password`` goes last."""
    run = GuessRun()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind_host, 0))
        local = sock.getsockname()
        sock.sendto(invite(target, local, number), target)
        deadline = time.monotonic() + 5.0
        while run.challenge is None and time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], 0.2)
            if ready:
                data = sock.recv(65535)
                if _status(data) == 401:
                    run.challenge = first_challenge(data)
        if run.challenge is None:
            return run
        uri = f"sip:{number}@{target[0]}:{target[1]}"
        ours: dict[str, float] = {}  # unanswered guesses by Call-ID: when sent
        started = time.monotonic()
        stop_at = started + seconds

        def drain(timeout: float) -> None:
            while True:
                ready, _, _ = select.select([sock], [], [], timeout)
                if not ready:
                    return
                data = sock.recv(65535)
                status = _status(data)
                if status is not None and status >= 200 and _call_id(data) in ours:
                    del ours[_call_id(data)]
                    run.answers[status] += 1
                    run.answer_times.append(time.monotonic() - started)
                timeout = 0

        while run.sent < max_guesses and (now := time.monotonic()) < stop_at:
            # As fast as the server answers: a window of guesses in flight, a lost one given up after a while.
            for stale in [c for c, sent_at in ours.items() if now - sent_at > LOST_AFTER]:
                del ours[stale]
            if len(ours) >= WINDOW:
                drain(0.01)
                continue
            guess = f"wrong-{run.sent}" if password is None or run.sent < max_guesses - 1 else password
            call_id = secrets.token_hex(12)
            ours[call_id] = now
            auth = authorization(run.challenge, username=username, password=guess, uri=uri, nc=run.sent + 1)
            sock.sendto(invite(target, local, number, authorization=auth, call_id=call_id), target)
            run.sent += 1
            drain(0)
        drain(0.5)  # answers still in flight
        run.elapsed = time.monotonic() - started
    return run
