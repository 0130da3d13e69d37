"""Trunk passwords at rest: sealed with AES-GCM, bound to their place, and refused with the wrong key."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from callbridge.app.config import Config
from callbridge.app.secretbox import KEY_ENV, SecretBox, SecretError, is_sealed, load_key
from callbridge.app.trunk_directory import TrunkDirectory, parse_trunk

KEY = bytes(range(32))


def test_round_trip_and_binding() -> None:
    box = SecretBox(KEY)
    sealed = box.seal("s3cret", "trunk/outbound/a/password")
    assert is_sealed(sealed) and "s3cret" not in sealed
    assert box.open(sealed, "trunk/outbound/a/password") == "s3cret"
    assert box.seal("s3cret", "x") != box.seal("s3cret", "x")  # a fresh nonce each time
    with pytest.raises(SecretError):
        box.open(sealed, "trunk/outbound/b/password")  # copied into another row
    with pytest.raises(SecretError):
        SecretBox(bytes(32)).open(sealed, "trunk/outbound/a/password")  # another key
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretError):
        box.open(tampered, "trunk/outbound/a/password")
    with pytest.raises(SecretError):
        box.open("enc:v1:!!not base64!!", "x")


def test_fields_nested_and_plain_values_pass_through() -> None:
    box = SecretBox(KEY)
    # Passwords that cannot turn up in base64 ciphertext by chance (it has no '-').
    secrets = ["first-secret", "second-secret", "third-secret"]
    value = {"name": "t", "password": secrets[0], "register": {"password": secrets[1], "expires": 60},
             "list": [{"password": secrets[2]}]}
    sealed = box.seal_fields(value, "trunk/outbound/t")
    assert not [secret for secret in secrets if secret in repr(sealed)]
    assert sealed["name"] == "t" and sealed["register"]["expires"] == 60
    assert box.open_fields(sealed, "trunk/outbound/t") == value
    assert box.open("legacy-plain", "x") == "legacy-plain"  # rows written before encryption


def test_key_from_env_file_or_generated(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    generated = load_key(tmp_path)
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key(tmp_path) == generated  # reused on the next start
    monkeypatch.setenv(KEY_ENV, base64.b64encode(KEY).decode())
    assert load_key(tmp_path) == KEY
    monkeypatch.setenv(KEY_ENV, base64.b64encode(b"short").decode())
    with pytest.raises(SecretError, match="32 bytes"):
        load_key(tmp_path)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(SecretError, match="not found"):
        load_key(tmp_path, tmp_path / "missing.key")


class MemoryStore:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict] = {}

    async def save_trunk(self, kind, trunk_id, config) -> None:
        self.rows[(kind, trunk_id)] = config

    async def list_trunks(self, kind=None):
        return [{"kind": k, "id": i, "config": c} for (k, i), c in self.rows.items()]

    async def delete_trunk(self, kind, trunk_id) -> bool:
        return self.rows.pop((kind, trunk_id), None) is not None


async def test_directory_stores_sealed_and_loads_with_the_same_key_only() -> None:
    config = Config()
    store = MemoryStore()
    directory = TrunkDirectory(config, secrets=SecretBox(KEY))
    directory.store = store
    trunk = parse_trunk("outbound", {"name": "carrier", "host": "127.0.0.1", "username": "u",
                                     "password": "pa55-word-XYZ"}, config)
    await directory.save("outbound", trunk)
    assert "pa55-word-XYZ" not in repr(store.rows)
    again = TrunkDirectory(config, secrets=SecretBox(KEY))
    await again.load(store)
    assert again.outbound("carrier").password == "pa55-word-XYZ"
    wrong = TrunkDirectory(config, secrets=SecretBox(bytes(32)))
    await wrong.load(store)  # skipped with a warning, never a crash
    assert wrong.outbound("carrier") is None


async def test_plain_rows_from_before_are_encrypted_on_load() -> None:
    config = Config()
    store = MemoryStore()
    store.rows[("outbound", "old")] = {"name": "old", "host": "127.0.0.1", "username": "u", "password": "plain-pw"}
    directory = TrunkDirectory(config, secrets=SecretBox(KEY))
    await directory.load(store)
    assert directory.outbound("old").password == "plain-pw"
    assert "plain-pw" not in repr(store.rows) and is_sealed(store.rows[("outbound", "old")]["password"])
