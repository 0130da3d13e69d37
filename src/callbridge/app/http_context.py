"""What the HTTP API may reach of the running service: :class:`ApiContext`.

The server builds one when it starts its HTTP app (``Server.api_context``), so
the handlers see these parts and nothing else of the ``Server``; a test can
build one from the parts it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..call.call import Call
from ..media.pacer import MediaPacer
from ..rtp.ports import PortAllocator
from ..sip.guard import AuthGuard
from ..sip.ua.config import Availability
from .config import Config
from .dispatch import OutboundRunner
from .events import EventBus
from .metrics import CallMetrics
from .registrations import RegistrationManager
from .trunk_directory import TrunkDirectory

if TYPE_CHECKING:
    from .cluster.node import ClusterNode


class LiveCalls(Protocol):
    """The calls in memory and what the API does to them (the CallManager)."""

    @property
    def calls(self) -> Mapping[str, Call]: ...

    @property
    def active_calls(self) -> list[Call]: ...

    @property
    def task_count(self) -> int: ...

    async def dial(self, target: str) -> Call: ...

    def hold(self, call: Call) -> None: ...

    def unhold(self, call: Call) -> None: ...

    def transfer(self, call: Call, target: str) -> None: ...

    def hangup(self, call: Call) -> None: ...


class CallRecords(Protocol):
    """The finished calls' records (the AsyncCallStore's reads)."""

    async def get_call(self, call_id: str) -> dict[str, Any] | None: ...

    async def find_by_sip_call_id(self, sip_call_id: str) -> dict[str, Any] | None: ...

    async def list_call_records(self, *, limit: int = ..., offset: int = ..., status: str | None = ...,
                                worker: str | None = ...) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ApiContext:
    config: Config  # dispatch validation, Host/Origin policy, API limits
    api_token: str
    ready: Callable[[], bool]  # SIP listens and media is ready: /healthz says ok
    calls: LiveCalls
    store: CallRecords | None  # None: no durable store (live calls only)
    bus: EventBus  # /api/events
    journal_backlog: Callable[[], int]  # events not yet written: /healthz
    metrics: CallMetrics
    pacer: MediaPacer  # /api/media
    ports: PortAllocator
    dispatcher: OutboundRunner  # POST /api/dispatch
    trunk_directory: TrunkDirectory
    registrations: Callable[[], RegistrationManager | None]  # None until the server has started them
    auth_guard: Callable[[], AuthGuard | None]
    now: Callable[[], float]  # the clock the auth guard is fed
    # Why new calls are refused now (starting, draining, full): /healthz answers as SIP does.
    availability: Availability | None = None
    drain: Callable[[], None] | None = None  # POST /api/drain: no new calls, exit when the last one ends
    # In a cluster: the API answers for every worker's calls (app/cluster/forwarding.py); None alone.
    cluster: ClusterNode | None = None
    # The console's read models (app/console/sources.py): flows, agents; None in tests that need none.
    console: Any = None
    # Browser calls (call/webrtc/): offers in, answers out; None when the WebRTC leg is not available.
    webrtc: Any = None
