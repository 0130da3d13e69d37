"""Secrets at rest: trunk passwords the API stores are encrypted with AES-256-GCM.

The key comes from ``CALLBRIDGE_SECRET_KEY`` (32 bytes, base64), or from a key
file (``security.secret_key_file``); with neither, the first start writes a
random key to ``<data_dir>/secret.key`` (mode 0600) and says so. A database
dump, a backup or a shared PostgreSQL then holds no usable password; keep the
key elsewhere (the environment, a secrets manager) so that one stolen disk
does not hold both.

Stored form: ``enc:v1:`` + base64(12-byte nonce + ciphertext + 16-byte tag).
The associated data binds a value to where it is stored (for example
``trunk/outbound/carrier/password``), so a ciphertext copied into another row
does not decrypt there.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("callbridge.secrets")

KEY_ENV = "CALLBRIDGE_SECRET_KEY"
KEY_FILE_NAME = "secret.key"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce (NIST SP 800-38D §5.2.1.1)
PREFIX = "enc:v1:"
SECRET_FIELDS = frozenset({"password"})


class SecretError(ValueError):
    """A key or a stored secret that cannot be used: wrong key, tampered value, bad key file."""


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"{where}: not base64") from None
    if len(key) != KEY_BYTES:
        raise SecretError(f"{where}: the key must be {KEY_BYTES} bytes, not {len(key)}")
    return key


def load_key(data_dir: Path, key_file: Path | None = None) -> bytes:
    """The environment's key, else the key file's; creates ``<data_dir>/secret.key`` when neither exists."""
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return _decode_key(from_env, KEY_ENV)
    path = key_file or data_dir / KEY_FILE_NAME
    try:
        return _decode_key(path.read_text(), str(path))
    except FileNotFoundError:
        if key_file is not None:
            raise SecretError(f"{path}: key file not found") from None
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(base64.b64encode(key).decode() + "\n")
    log.warning("generated a key for secrets at rest; set %s or security.secret_key_file to keep it off "
                "the data disk", KEY_ENV, extra={"path": str(path)})
    return key


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretError(f"the key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, where: str) -> str:
        nonce = os.urandom(NONCE_BYTES)  # random 96-bit nonces: safe far beyond the number of stored secrets
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), where.encode("utf-8"))
        return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, stored: str, where: str) -> str:
        if not is_sealed(stored):
            return stored  # written before encryption existed: plain text, sealed again on the next save
        try:
            raw = base64.b64decode(stored[len(PREFIX):], validate=True)
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], where.encode("utf-8"))
            return plain.decode("utf-8")
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            raise SecretError(f"{where}: cannot decrypt (wrong key, or the value was altered)") from None

    def seal_fields(self, value: Any, where: str) -> Any:
        """A copy of ``value`` with every secret field sealed (nested dicts and lists too)."""
        return _map_fields(value, where, lambda text, at: text if is_sealed(text) else self.seal(text, at))

    def open_fields(self, value: Any, where: str) -> Any:
        return _map_fields(value, where, self.open)


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def _map_fields(value: Any, where: str, change: Callable[[str, str], str]) -> Any:
    if isinstance(value, dict):
        return {key: change(item, f"{where}/{key}") if key in SECRET_FIELDS and isinstance(item, str)
                else _map_fields(item, f"{where}/{key}", change) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_fields(item, f"{where}/{index}", change) for index, item in enumerate(value)]
    return value
