"""Outbound trunk registrations: one sans-IO Registration per trunk with ``register:``, driven by the SIP endpoint.

Wiring is one call after the endpoint listens (the Contact needs the bound
port): ``manager = start_registrations(config, endpoint)``; on shutdown
``await manager.close()`` unregisters (RFC 3261 §10.2.2). The HTTP status
lives at ``GET /api/trunks/registrations`` (:func:`registration_routes`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..sip.address import Address
from ..sip.registration import (
    Binding,
    Registered,
    Registration,
    RegistrationEvent,
    RegistrationFailed,
    RegistrationState,
    RegistrationStatus,
    Unregistered,
)
from ..sip.uri import SipUri, parse_uri
from ..sip.useragent import UserAgent
from .config import Config, OutboundTrunk

log = logging.getLogger("callbridge.registrations")

# How long shutdown waits for the registrars to confirm the expires=0 REGISTERs.
UNREGISTER_TIMEOUT_SECONDS = 2.0
DEFAULT_SIP_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


class UserAgentDriver(Protocol):
    """What the manager needs of the asyncio SIP driver (:class:`~callbridge.sip.endpoint.SipEndpoint`).

    The UA core reports registration changes through ``next_event()``; the driver pumps
    them and hands them to ``on_registration_event``.
    """

    ua: UserAgent
    on_registration_event: Callable[[RegistrationEvent], None]

    def now(self) -> float: ...

    def flush(self) -> None: ...


def binding_for(trunk: OutboundTrunk, ua: UserAgent) -> Binding:
    """The binding a trunk's ``register:`` section describes, with our Contact as the UA advertises it."""
    register = trunk.registration
    assert register is not None
    username = register.username or trunk.username
    password = register.password or trunk.password
    transport = trunk.transport
    scheme = "sips" if transport == "tls" else "sip"
    port = None if trunk.port == DEFAULT_SIP_PORTS[transport] else trunk.port
    params: dict[str, str | None] = {"transport": "tcp"} if transport == "tcp" else {}
    # RFC 3261 §10.2: the Request-URI names the registrar's domain, without a user part.
    registrar = SipUri(host=trunk.host, port=port, scheme=scheme, params=params)
    aor = parse_uri(register.aor) if register.aor else SipUri(host=trunk.host, user=username, scheme=scheme)
    assert isinstance(aor, SipUri)  # the config validated it
    contact_user = register.contact_user or username or aor.user
    contact = ua.local_contact(transport, user=contact_user).uri
    assert isinstance(contact, SipUri)
    return Binding(name=trunk.name, registrar=registrar, aor=aor, contact=contact, expires=register.expires,
                   username=username, password=password, destination=Address(trunk.host, trunk.port, transport))


class RegistrationManager:
    """Owns the registrations of every outbound trunk with ``register: {enabled: true}``."""

    def __init__(self, driver: UserAgentDriver, bindings: list[Binding]) -> None:
        self.driver = driver
        self.registrations = [Registration(binding) for binding in bindings]
        self._all_unregistered = asyncio.Event()
        driver.on_registration_event = self._on_event

    def start(self) -> None:
        now = self.driver.now()
        for registration in self.registrations:
            self.driver.ua.register(registration, now)
        self.driver.flush()

    async def close(self, timeout: float = UNREGISTER_TIMEOUT_SECONDS) -> None:
        """Unregister every binding and wait (bounded) for the registrars to answer."""
        now = self.driver.now()
        for registration in self.registrations:
            self.driver.ua.unregister(registration, now)
        self.driver.flush()
        if self._settled():
            return
        try:
            await asyncio.wait_for(self._all_unregistered.wait(), timeout)
        except TimeoutError:
            log.warning("registrars did not confirm unregistration", extra={"seconds": timeout})

    def _settled(self) -> bool:
        return all(r.state is RegistrationState.UNREGISTERED for r in self.registrations)

    def _on_event(self, event: RegistrationEvent) -> None:
        if isinstance(event, Registered):
            log.info("trunk registered", extra={"trunk": event.name, "expires": event.expires})
        elif isinstance(event, RegistrationFailed):
            retry_in = None if event.retry_at is None else round(event.retry_at - self.driver.now(), 1)
            log.warning("trunk registration failed", extra={"trunk": event.name, "status": event.status,
                                                            "reason": event.reason, "retry_in": retry_in})
        elif isinstance(event, Unregistered):
            log.info("trunk unregistered", extra={"trunk": event.name})
            if self._settled():
                self._all_unregistered.set()

    def snapshot(self) -> list[dict[str, Any]]:
        """Every registration's status, times as Unix seconds."""
        now = self.driver.now()
        wall_offset = time.time() - now
        return [_status_record(r.status(now), now, wall_offset) for r in self.registrations]


def _status_record(status: RegistrationStatus, now: float, wall_offset: float) -> dict[str, Any]:
    def wall(at: float | None) -> float | None:
        return None if at is None else round(at + wall_offset, 3)

    return {
        "trunk": status.name,
        "aor": status.aor,
        "registrar": status.registrar,
        "state": status.state.value,
        "expires_at": wall(status.expires_at),
        "expires_in": None if status.expires_at is None else round(status.expires_at - now, 1),
        "last_status": status.last_status,
        "last_error": status.last_error,
        "attempts": status.attempts,
        "consecutive_failures": status.consecutive_failures,
        "next_attempt_at": wall(status.next_attempt_at),
    }


def start_registrations(config: Config, user_agent_driver: UserAgentDriver) -> RegistrationManager:
    """Register every outbound trunk that asks for it; call once the SIP endpoint listens."""
    ua = user_agent_driver.ua
    bindings = [binding_for(trunk, ua) for trunk in config.outbound_trunks
                if trunk.registration is not None and trunk.registration.enabled]
    manager = RegistrationManager(user_agent_driver, bindings)
    manager.start()
    return manager


def registration_routes(get_manager: Callable[[], RegistrationManager | None]) -> list[Route]:
    """``GET /api/trunks/registrations``: each trunk's registration state (an empty list before start)."""

    async def list_registrations(request: Request) -> JSONResponse:
        manager = get_manager()
        return JSONResponse({"registrations": manager.snapshot() if manager is not None else []})

    return [Route("/api/trunks/registrations", list_registrations, methods=["GET"])]


__all__ = ["RegistrationManager", "binding_for", "registration_routes", "start_registrations"]
