"""Every trunk the service knows: the config file's, then those added over the API.

The config file owns its trunks; the API may add, replace and delete only its
own, which live in the durable store (``trunks`` table, kind ``inbound`` or
``outbound``) and are loaded again at start. Inbound changes are applied to the
call manager's live :class:`TrunkTable` at once, so new calls see them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from ..call.trunks import InboundTrunkPolicy, TrunkTable
from .config import BUILTIN_FLOWS, Config, InboundTrunk, OutboundTrunk
from .errors import DispatchError
from .secretbox import SecretBox, SecretError, is_sealed

log = logging.getLogger("callbridge.trunks")

Kind = Literal["inbound", "outbound"]
KINDS: tuple[Kind, ...] = ("inbound", "outbound")
MODELS: dict[str, type[InboundTrunk] | type[OutboundTrunk]] = {"inbound": InboundTrunk, "outbound": OutboundTrunk}
MASK = "***"
Trunk = InboundTrunk | OutboundTrunk


class TrunkStore(Protocol):
    """The part of :class:`~callbridge.app.store.AsyncCallStore` the directory uses."""

    async def save_trunk(self, kind: str, trunk_id: str, config: dict[str, Any]) -> None: ...

    async def list_trunks(self, kind: str | None = None) -> list[dict[str, Any]]: ...

    async def delete_trunk(self, kind: str, trunk_id: str) -> bool: ...


class TrunkConflict(Exception):
    """The name belongs to a trunk the API may not touch (the config's, or one of the other kind)."""


class StoreUnavailable(RuntimeError):
    """API trunks need the durable store, which is not open (yet)."""


class TrunkError(DispatchError):
    """A trunk body the API rejects, in the dispatch API's error shape."""

    summary = "invalid trunk"


def parse_trunk(kind: Kind, body: object, config: Config) -> Trunk:
    """Validate a trunk with the config's own model (same rules, same messages); raise TrunkError."""
    if not isinstance(body, dict):
        raise TrunkError("body", "must be a JSON object")
    try:
        trunk = MODELS[kind].model_validate(body)
    except ValidationError as exc:
        raise _first_error(exc) from None
    if isinstance(trunk, InboundTrunk):
        # What Config._flows_exist checks for the file's trunks.
        known = set(config.flows) | set(BUILTIN_FLOWS)
        references = ([("flow", trunk.flow)] if trunk.flow else []) + \
            [(f"routes.{number}", flow) for number, flow in trunk.routes.items()]
        for where, flow in references:
            if flow not in known:
                raise TrunkError(where, f"unknown flow {flow!r} (known: {', '.join(sorted(known))})")
    return trunk


def _first_error(exc: ValidationError) -> TrunkError:
    first = exc.errors()[0]
    # Model validators add a "function-after[...]" step to the location; it is no field.
    path = ".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return TrunkError(path, "unknown key")
    if not path:
        # Model-level checks name their field as "field: reason" (see config.config_from).
        field_path, sep, reason = message.partition(": ")
        if sep and " " not in field_path:
            return TrunkError(field_path, reason)
        return TrunkError("body", message)
    return TrunkError(path, message)


def inbound_policy(trunk: InboundTrunk) -> InboundTrunkPolicy:
    auth = trunk.auth
    return InboundTrunkPolicy(
        name=trunk.name, numbers=trunk.numbers,
        networks=[ipaddress.ip_network(c, strict=False) for c in trunk.allowed_cidrs],
        username=auth.username if auth else None, password=auth.password if auth else None,
        realm=auth.realm if auth else "callbridge",
        algorithms=tuple(auth.algorithms) if auth else ("MD5", "SHA-256"), flow=trunk.flow,
        transfer_targets=tuple(trunk.transfer_targets), srtp=trunk.srtp)


def trunk_settings(trunk: Trunk) -> dict[str, Any]:
    """The trunk as the config spells it (``register``, not ``registration``)."""
    return trunk.model_dump(mode="json", by_alias=True)


def masked(value: Any) -> Any:
    """A copy with every password replaced by ``***`` (nested ones too: auth, register)."""
    if isinstance(value, dict):
        return {k: MASK if k == "password" and v is not None else masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


class TrunkDirectory:
    """Config trunks plus API trunks, looked up by name; keeps ``table`` (inbound) in step."""

    def __init__(self, config: Config, table: TrunkTable | None = None, *, secrets: SecretBox | None = None) -> None:
        self.config = config
        self.table = table if table is not None else TrunkTable([])
        self.store: TrunkStore | None = None
        # Passwords are stored sealed; without a key given, one for this process only (tests).
        self.secrets = secrets or SecretBox(AESGCM.generate_key(bit_length=256))
        # Called with the merged inbound trunks after each change (the server rebuilds its router).
        self.on_inbound_change: Callable[[list[InboundTrunk]], None] | None = None
        self._api: dict[str, dict[str, Trunk]] = {kind: {} for kind in KINDS}
        # Reused while a trunk is unchanged: its digest verifier's secret keeps outstanding nonces valid.
        self._policies: dict[str, tuple[InboundTrunk, InboundTrunkPolicy]] = {}
        self._lock = asyncio.Lock()
        self._apply_inbound()

    # -- lookups -------------------------------------------------------------

    def _config_trunks(self, kind: Kind) -> list[Trunk]:
        return list(self.config.inbound_trunks if kind == "inbound" else self.config.outbound_trunks)

    def trunks(self, kind: Kind) -> list[Trunk]:
        """Config trunks first (in file order), then API trunks by name."""
        return self._config_trunks(kind) + [self._api[kind][name] for name in sorted(self._api[kind])]

    @property
    def inbound_trunks(self) -> list[InboundTrunk]:
        return self.trunks("inbound")  # type: ignore[return-value]

    @property
    def outbound_trunks(self) -> list[OutboundTrunk]:
        return self.trunks("outbound")  # type: ignore[return-value]

    def outbound(self, name: str | None) -> OutboundTrunk | None:
        return next((t for t in self.outbound_trunks if t.name == name), None)

    def source(self, kind: Kind, name: str) -> Literal["config", "api"] | None:
        if any(t.name == name for t in self._config_trunks(kind)):
            return "config"
        return "api" if name in self._api[kind] else None

    def describe(self, kind: Kind, trunk: Trunk) -> dict[str, Any]:
        return {**masked(trunk_settings(trunk)), "source": self.source(kind, trunk.name)}

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        return {kind: [self.describe(kind, t) for t in self.trunks(kind)] for kind in KINDS}

    def config_view(self) -> Config:
        """The config with the merged trunk lists, for code that reads trunks from a Config (router, registrations)."""
        return self.config.model_copy(update={"inbound_trunks": self.inbound_trunks,
                                              "outbound_trunks": self.outbound_trunks})

    # -- changes ---------------------------------------------------------------

    async def load(self, store: TrunkStore) -> None:
        """Take the API trunks from the store; a stored trunk that no longer validates or
        whose name the config now uses is skipped with a warning, never fatal."""
        self.store = store
        rows = await store.list_trunks()
        for row in rows:
            kind, name = row["kind"], row["id"]
            if kind not in MODELS:
                log.warning("stored trunk of unknown kind skipped", extra={"kind": kind, "trunk": name})
                continue
            try:
                settings = self.secrets.open_fields(row["config"], _secret_place(kind, name))
                trunk = parse_trunk(kind, settings, self.config)
                self._check_name(kind, trunk.name)
            except (TrunkError, TrunkConflict, SecretError) as exc:
                log.warning("stored API trunk skipped", extra={"kind": kind, "trunk": name, "error": str(exc)})
                continue
            self._api[kind][trunk.name] = trunk
            if _has_plain_secret(row["config"]):
                await store.save_trunk(kind, trunk.name, self._sealed(kind, trunk))  # stored before encryption
                log.info("stored trunk password encrypted", extra={"kind": kind, "trunk": name})
        self._apply_inbound()
        log.info("trunks loaded", extra={kind: len(self._api[kind]) for kind in KINDS})

    async def save(self, kind: Kind, trunk: Trunk) -> bool:
        """Store an API trunk, replacing one of the same name; True when it is new."""
        store = self._require_store()
        async with self._lock:
            self._check_name(kind, trunk.name)
            created = trunk.name not in self._api[kind]
            # Durable first: what the API answers must survive a restart.
            await store.save_trunk(kind, trunk.name, self._sealed(kind, trunk))
            self._api[kind][trunk.name] = trunk
            if kind == "inbound":
                self._apply_inbound()
        log.info("API trunk saved", extra={"kind": kind, "trunk": trunk.name, "new": created})
        if isinstance(trunk, OutboundTrunk) and trunk.registration is not None and trunk.registration.enabled:
            # The registration manager is built once, at start, from config_view().
            log.warning("API trunk registers from the next start", extra={"trunk": trunk.name})
        return created

    async def delete(self, kind: Kind, name: str) -> bool:
        """Remove an API trunk; False when there is none of that name. Config trunks raise TrunkConflict."""
        store = self._require_store()
        async with self._lock:
            if self.source(kind, name) == "config":
                raise TrunkConflict(f"trunk {name!r} is defined in the config file; edit the file to change it")
            if name not in self._api[kind]:
                return False
            await store.delete_trunk(kind, name)
            del self._api[kind][name]
            if kind == "inbound":
                self._apply_inbound()
        log.info("API trunk deleted", extra={"kind": kind, "trunk": name})
        return True

    def _sealed(self, kind: Kind, trunk: Trunk) -> dict[str, Any]:
        return self.secrets.seal_fields(trunk_settings(trunk), _secret_place(kind, trunk.name))

    def _require_store(self) -> TrunkStore:
        if self.store is None:
            raise StoreUnavailable("the trunk store is not open")
        return self.store

    def _check_name(self, kind: Kind, name: str) -> None:
        # The config keeps trunk names unique across both kinds (a call record names its trunk): so do we.
        for other in KINDS:
            if any(t.name == name for t in self._config_trunks(other)):
                raise TrunkConflict(f"trunk {name!r} is defined in the config file; edit the file to change it")
        other = "outbound" if kind == "inbound" else "inbound"
        if name in self._api[other]:
            raise TrunkConflict(f"an {other} trunk is already named {name!r}")

    def _apply_inbound(self) -> None:
        trunks = self.inbound_trunks
        policies: dict[str, tuple[InboundTrunk, InboundTrunkPolicy]] = {}
        for trunk in trunks:
            kept = self._policies.get(trunk.name)
            policies[trunk.name] = kept if kept is not None and kept[0] == trunk else (trunk, inbound_policy(trunk))
        self._policies = policies
        # One assignment: the manager (and the UA's auth hook) read table.trunks per request.
        self.table.trunks = [policies[t.name][1] for t in trunks]
        if self.on_inbound_change is not None:
            self.on_inbound_change(trunks)


def _secret_place(kind: str, name: str) -> str:
    """What a stored trunk's secrets are bound to: one row's ciphertext does not open in another."""
    return f"trunk/{kind}/{name}"


def _has_plain_secret(value: Any) -> bool:
    if isinstance(value, dict):
        return any((key == "password" and isinstance(item, str) and not is_sealed(item)) or _has_plain_secret(item)
                   for key, item in value.items())
    if isinstance(value, list):
        return any(_has_plain_secret(item) for item in value)
    return False
