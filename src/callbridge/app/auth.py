"""The API's bearer token (RFC 6750): where it comes from, and how a request's token is checked.

There is always a token. ``api.token`` in the config wins; without it the first
start generates one, stores it in ``<data_dir>/api_token`` (mode 0600) and prints
it once; later starts read the same file. Loopback is no exception: any web page
the user opens can reach 127.0.0.1, so "only this machine" is not "only this user".
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger("callbridge.auth")

TOKEN_FILE = "api_token"
# 32 random bytes: the same strength as the webhook secret.
GENERATED_TOKEN_BYTES = 32
MIN_TOKEN_CHARS = 16  # as api.token in the config
TOKEN_FILE_MODE = 0o600


def generate_token() -> str:
    return secrets.token_urlsafe(GENERATED_TOKEN_BYTES)


@dataclass(frozen=True)
class ApiToken:
    value: str
    path: Path | None  # None when it came from the config
    created: bool = False


def load_or_create_token(data_dir: Path) -> ApiToken:
    """The stored token, or a new one written with mode 0600 (and announced) when there is none yet.

    Raises OSError (the CLI's "cannot start") when the file is unreadable or holds no usable token.
    """
    path = data_dir.resolve() / TOKEN_FILE
    token = generate_token()
    try:
        # O_EXCL: two servers starting on one data dir cannot both write; the loser reads the winner's token.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, TOKEN_FILE_MODE)
    except FileExistsError:
        return ApiToken(_read_token(path), path)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    os.chmod(path, TOKEN_FILE_MODE)  # whatever the umask did
    # Shown once, on stdout for the person starting the server; the logs name the file, never the secret.
    print(f"callbridge: generated an API token, stored in {path} (mode 0600); "
          f"send it as 'Authorization: Bearer {token}'", flush=True)
    log.warning("generated an API token (mode 0600 file)", extra={"token_file": str(path)})
    return ApiToken(token, path, created=True)


def _read_token(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Someone loosened it (or copied it in): the token is a password, keep it the owner's.
        os.chmod(path, TOKEN_FILE_MODE)
        log.warning("API token file was readable by others; now mode 0600",
                    extra={"token_file": str(path), "old_mode": oct(mode)})
    token = path.read_text(encoding="utf-8", errors="replace").strip()
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise OSError(f"{path} holds no usable API token (at least {MIN_TOKEN_CHARS} characters, no spaces); "
                      "delete it to generate a new one, or set api.token")
    log.info("API token read from the data dir", extra={"token_file": str(path)})
    return token


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            # RFC 6750 §2.1: the scheme is case-insensitive.
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def token_matches(offered: str | None, expected: str) -> bool:
    # Constant-time comparison: response timing must not leak the token.
    return offered is not None and hmac.compare_digest(offered.encode("utf-8", "replace"), expected.encode())


async def send_unauthorised(send: Callable, offered: str | None) -> None:
    # RFC 6750 §3: a request without credentials gets the bare challenge; a wrong token names the error.
    challenge = 'Bearer realm="callbridge"' + (', error="invalid_token"' if offered is not None else "")
    body = json.dumps({"error": "missing or invalid bearer token"}).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", challenge.encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["ApiToken", "bearer_token", "generate_token", "load_or_create_token", "send_unauthorised",
           "token_matches", "TOKEN_FILE"]
