"""Bedrock runtime clients shared between Nova Sonic sessions.

A client per session cost a native I/O thread, a TLS context built from the
whole trust store and a TLS handshake, and the transport was never closed, so
every renewal left a thread and a connection behind. Sessions now lease a
client from a pool kept per event loop and per configuration (region,
endpoint, credentials). Each client keeps one HTTP/2 connection, and that
connection carries at most SESSIONS_PER_CONNECTION bidirectional streams, far
below the SETTINGS_MAX_CONCURRENT_STREAMS servers announce (RFC 9113 §6.5.2);
past that a second client, with its own connection, is opened.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aws_sdk_bedrock_runtime.client import AsyncBedrockRuntimeClient
from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig, _AWSCRTEventLoop

from callbridge.agent.providers.tcp_nodelay import set_nodelay_to_port

log = logging.getLogger(__name__)

SESSIONS_PER_CONNECTION = 16

BuildClient = Callable[[AWSCRTHTTPClient], Awaitable[AsyncBedrockRuntimeClient]]


@dataclass(eq=False)
class ClientLease:
    key: Hashable  # the configuration it was built for
    client: AsyncBedrockRuntimeClient
    transport: AWSCRTHTTPClient
    port: int = 443  # the endpoint's
    sessions: int = 0
    connected: bool = False
    _connecting: asyncio.Lock = field(default_factory=asyncio.Lock)

    @asynccontextmanager
    async def opening(self) -> AsyncIterator[None]:
        """Around opening a stream until its response arrives. Until one has, they run one
        at a time: the transport dials a connection when it has none, and concurrent
        first opens would each dial their own."""
        if self.connected:
            yield
            return
        async with self._connecting:
            yield
            self.connected = True
            set_nodelay_to_port(self.port)  # the connection now exists: see tcp_nodelay


# One CRT event-loop group (a native thread) serves every transport; the SDK
# would otherwise start one per client. The type is private to smithy-http,
# but its public AWSCRTHTTPClient takes it as ``eventloop``.
_crt_event_loop: _AWSCRTEventLoop | None = None
# CRT connections hand results to the asyncio loop they were made on: pools
# never cross loops (tests run many).
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, list[ClientLease]]] = \
    weakref.WeakKeyDictionary()
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, asyncio.Lock]] = \
    weakref.WeakKeyDictionary()


def _shared_crt_event_loop() -> _AWSCRTEventLoop:
    global _crt_event_loop
    if _crt_event_loop is None:
        _crt_event_loop = _AWSCRTEventLoop()
    return _crt_event_loop


def _leases(key: Hashable) -> list[ClientLease]:
    return _pools.setdefault(asyncio.get_running_loop(), {}).setdefault(key, [])


async def lease_client(key: Hashable, build: BuildClient, *, port: int = 443) -> ClientLease:
    """A client for one more session under ``key``; give it back with :func:`return_client`."""
    loop = asyncio.get_running_loop()
    lock = _locks.setdefault(loop, {}).setdefault(key, asyncio.Lock())
    async with lock:  # two sessions opening at once must not both miss and both build
        leases = _leases(key)
        lease = next((lease for lease in leases if lease.sessions < SESSIONS_PER_CONNECTION), None)
        if lease is None:
            transport = AWSCRTHTTPClient(eventloop=_shared_crt_event_loop(),
                                         client_config=AWSCRTHTTPClientConfig(force_http_2=True))
            try:
                lease = ClientLease(key, await build(transport), transport, port)
            except BaseException:
                await transport.close()
                raise
            leases.append(lease)
        lease.sessions += 1
        return lease


async def return_client(lease: ClientLease) -> None:
    """The session is over. An idle client is kept for the next one; extra idle ones are closed."""
    lease.sessions -= 1
    leases = _leases(lease.key)
    if lease.sessions > 0 or lease not in leases:
        return
    if any(other is not lease and other.sessions < SESSIONS_PER_CONNECTION for other in leases):
        leases.remove(lease)
        try:
            await lease.transport.close()
        except Exception as exc:  # noqa: BLE001 - a connection already gone has nothing to close
            log.debug("closing an idle Bedrock connection: %r", exc)


def pooled_sessions() -> list[int]:
    """Sessions per pooled client on the running loop (for tests)."""
    return [lease.sessions for leases in _pools.get(asyncio.get_running_loop(), {}).values() for lease in leases]
