"""Outbound calls started by the API: ``POST /api/dispatch`` (LiveKit's naming).

A request names an agent and, in ``metadata``, whom to call and through which
trunk. :func:`parse_dispatch` validates it into a :class:`DispatchRequest`
(or a :class:`DispatchError` naming the field); :class:`OutboundRunner` places
the call, rings it out, sends the dial-string DTMF after answer, then hands the
call to the agent, and enforces the maximum duration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from ..call import events as ev
from ..call.call import Call, CallStatus
from ..call.manager import CallManager
from ..ivr.callio import CallFlowIO
from ..ivr.handoff import HandoffContext
from ..media.dtmf.rfc4733 import DEFAULT_DURATION_MS, DEFAULT_GAP_MS, plan_dial_string
from ..sip.address import Address
from ..sip.errors import SipParseError
from ..sip.uri import SipUri, parse_uri
from .config import Config, OutboundTrunk
from .trunk_route import next_hop, trunk_credentials
from .errors import DispatchError as DispatchError  # re-exported: callers and tests import it from here

if TYPE_CHECKING:
    from .trunk_directory import TrunkDirectory

log = logging.getLogger("callbridge.dispatch")

# ITU-T E.164: a + and at most 15 digits, no leading zero.
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
DIAL_STRING = re.compile(r"^[0-9*#A-Da-dwW]+$")
# RFC 3261 §25.1 token characters, for header names.
HEADER_NAME = re.compile(r"^[A-Za-z0-9!%'*+\-.^_`|~]+$")
DEFAULT_RINGING_TIMEOUT_S = 30.0
MAX_RINGING_TIMEOUT_S = 300.0
MAX_CALL_DURATION_S = 24 * 3600.0
# Keys of metadata with a meaning of their own; the rest is context for the agent.
METADATA_KEYS = {"sip_call_to", "sip_trunk_id", "participant_identity", "sip_number", "dtmf", "ringing_timeout",
                 "max_call_duration", "headers", "wait_until_answered", "language", "reason"}
DEFAULT_LANGUAGE = "en"


@dataclass(frozen=True)
class DispatchRequest:
    agent_name: str
    room_name: str | None
    participant_identity: str
    trunk: OutboundTrunk
    call_to: str  # E.164 number or SIP URI, as given
    caller_id: str | None
    dtmf: str = ""
    ringing_timeout: float = DEFAULT_RINGING_TIMEOUT_S
    max_call_duration: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    wait_until_answered: bool = False
    language: str = DEFAULT_LANGUAGE
    reason: str = ""
    context: dict[str, Any] = field(default_factory=dict)  # every other metadata key

    def target_uri(self) -> str:
        """The Request-URI: a number at the trunk's host, or the SIP URI as given."""
        if self.call_to.startswith(("sip:", "sips:")):
            return self.call_to
        return f"sip:{self.call_to}@{self.trunk.host}:{self.trunk.port}"

    def destination(self) -> Address:
        # The trunk (or its outbound proxy) is the next hop for both numbers and SIP URIs.
        return next_hop(self.trunk).destination

    def sip_headers(self) -> list[tuple[str, str]]:
        merged = {**self.trunk.headers, **self.headers}
        return next_hop(self.trunk).route + list(merged.items())

    def describe(self) -> dict[str, Any]:
        return {"agent_name": self.agent_name, "room_name": self.room_name,
                "participant_identity": self.participant_identity, "sip_trunk_id": self.trunk.name,
                "sip_call_to": self.call_to, "sip_number": self.caller_id, "dtmf": self.dtmf or None,
                "ringing_timeout": self.ringing_timeout, "max_call_duration": self.max_call_duration,
                "headers": self.headers, "context": self.context}


def parse_dispatch(body: object, config: Config, trunks: TrunkDirectory | None = None) -> DispatchRequest:
    """Validate a dispatch request body; raise DispatchError naming the first bad field.

    ``trunks`` (config and API trunks) answers ``sip_trunk_id``; without it, the config's trunks do."""
    if not isinstance(body, dict):
        raise DispatchError("body", "must be a JSON object")
    agent_name = _string(body, "agent_name", "agent_name")
    if agent_name not in config.agent_names:
        known = ", ".join(sorted(config.agent_names))
        raise DispatchError("agent_name", f"unknown agent {agent_name!r} (known: {known})")
    room_name = body.get("room_name")
    if room_name is not None and not isinstance(room_name, str):
        raise DispatchError("room_name", "must be a string")
    metadata = body.get("metadata")
    if isinstance(metadata, str):
        # LiveKit sends metadata as a JSON string; accept both.
        try:
            metadata = json.loads(metadata)
        except ValueError:
            raise DispatchError("metadata", "is a string but not JSON") from None
    if not isinstance(metadata, dict):
        raise DispatchError("metadata", "required: an object with sip_call_to, sip_trunk_id, participant_identity")
    trunk_id = _string(metadata, "sip_trunk_id", "metadata.sip_trunk_id")
    lookup = trunks.outbound if trunks is not None else {t.name: t for t in config.outbound_trunks}.get
    trunk = lookup(trunk_id)
    if trunk is None:
        raise DispatchError("metadata.sip_trunk_id", f"unknown trunk {trunk_id!r}")
    call_to = _string(metadata, "sip_call_to", "metadata.sip_call_to")
    _check_target(call_to)
    identity = _string(metadata, "participant_identity", "metadata.participant_identity")
    caller_id = _optional_string(metadata, "sip_number")
    if caller_id is not None and trunk.numbers and caller_id not in trunk.numbers:
        raise DispatchError("metadata.sip_number", f"{caller_id!r} is not one of trunk {trunk.name!r}'s numbers")
    caller_id = caller_id or trunk.caller_id or (trunk.numbers[0] if trunk.numbers else None)
    dtmf = _optional_string(metadata, "dtmf") or ""
    if dtmf and not DIAL_STRING.match(dtmf):
        raise DispatchError("metadata.dtmf", "digits 0-9, *, #, A-D and w (a 0.5 s pause) only")
    ringing = _number(metadata, "ringing_timeout", DEFAULT_RINGING_TIMEOUT_S, MAX_RINGING_TIMEOUT_S)
    duration = _number(metadata, "max_call_duration", None, MAX_CALL_DURATION_S)
    wait = metadata.get("wait_until_answered", False)
    if not isinstance(wait, bool):
        raise DispatchError("metadata.wait_until_answered", "must be true or false")
    language = _optional_string(metadata, "language") or DEFAULT_LANGUAGE
    reason = _optional_string(metadata, "reason") or ""
    return DispatchRequest(agent_name=agent_name, room_name=room_name, participant_identity=identity, trunk=trunk,
                           call_to=call_to, caller_id=caller_id, dtmf=dtmf, ringing_timeout=ringing,
                           max_call_duration=duration, headers=_headers(metadata.get("headers")),
                           wait_until_answered=wait, language=language, reason=reason,
                           context={k: v for k, v in metadata.items() if k not in METADATA_KEYS})


def _string(data: dict, key: str, where: str) -> str:
    value = data.get(key)
    if value is None:
        raise DispatchError(where, "required")
    if not isinstance(value, str) or not value.strip():
        raise DispatchError(where, "must be a non-empty string")
    return value.strip()


def _optional_string(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise DispatchError(f"metadata.{key}", "must be a string")
    return value or None


@overload
def _number(data: dict, key: str, default: float, maximum: float) -> float: ...


@overload
def _number(data: dict, key: str, default: None, maximum: float) -> float | None: ...


def _number(data: dict, key: str, default: float | None, maximum: float) -> float | None:
    value = data.get(key)
    if value is None:
        return default
    # bool is an int in Python; true is not a number of seconds.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DispatchError(f"metadata.{key}", "must be a number of seconds")
    if not 0 < value <= maximum:
        raise DispatchError(f"metadata.{key}", f"must be more than 0 and at most {maximum:g} seconds")
    return float(value)


def _check_target(value: str) -> None:
    where = "metadata.sip_call_to"
    if value.startswith(("sip:", "sips:")):
        try:
            uri = parse_uri(value)
        except (SipParseError, ValueError) as exc:
            raise DispatchError(where, f"not a valid SIP URI: {exc}") from None
        if not isinstance(uri, SipUri) or not uri.host:
            raise DispatchError(where, "not a valid SIP URI")
        return
    if not E164.match(value):
        raise DispatchError(where, f"{value!r} is neither an E.164 number (+15550100000) nor a sip: URI")


def _headers(value: object) -> dict[str, str]:
    where = "metadata.headers"
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DispatchError(where, "must be an object of X- header names to values")
    headers: dict[str, str] = {}
    for name, text in value.items():
        if not HEADER_NAME.match(name) or not name.lower().startswith("x-"):
            raise DispatchError(f"{where}.{name}", "only X- headers with token characters may be added")
        if not isinstance(text, str) or "\r" in text or "\n" in text:
            raise DispatchError(f"{where}.{name}", "must be a single-line string")
        headers[name] = text
    return headers


def dial_string_seconds(dtmf: str) -> float:
    """How long sending ``dtmf`` takes on the wire (digits, gaps and ``w`` pauses)."""
    plan = plan_dial_string(dtmf)
    if not plan:
        return 0.0
    return plan[-1][0] + (DEFAULT_DURATION_MS + DEFAULT_GAP_MS) / 1000


def handoff_context(request: DispatchRequest, call: Call) -> HandoffContext:
    """What the agent is told: the metadata's extra keys become its known details."""
    variables = {key: value if isinstance(value, str) else json.dumps(value) for key, value in request.context.items()}
    return HandoffContext(agent=request.agent_name, caller_number=call.called, caller_name=request.participant_identity,
                          called_number=request.caller_id, language=request.language, reason=request.reason,
                          variables=variables, sip_headers=dict(request.headers),
                          context={"direction": "outbound", "room_name": request.room_name or ""})


class OutboundRunner:
    """Places dispatched calls and drives each one: ring, answer, DTMF, agent, time limit."""

    def __init__(self, manager: CallManager, *, start_agent: Any, prompts: Any, transcriber: Any, dial: Any) -> None:
        self.manager = manager
        self.start_agent = start_agent
        self.prompts = prompts
        self.transcriber = transcriber
        self.dial = dial

    async def place(self, request: DispatchRequest) -> Call:
        def attach(call: Call) -> None:
            call.dispatch = request.describe()
            call.route = f"agent:{request.agent_name}"
            # Set before the first event: the manager then leaves the answered call to us.
            call.app_task = self.manager.spawn(self._drive(call, request), f"dispatch-{call.id}")

        return await self.manager.dial(request.target_uri(), from_user=request.caller_id,
                                       headers=request.sip_headers(), credentials=trunk_credentials(request.trunk),
                                       destination=request.destination(), trunk=request.trunk.name, prepare=attach)

    async def _drive(self, call: Call, request: DispatchRequest) -> None:
        await asyncio.sleep(0)  # let dial() finish registering the call
        if not await call.answered(request.ringing_timeout):
            if call.status is not CallStatus.HANGUP:
                call.publish(ev.RingingTimedOut(seconds=request.ringing_timeout))
                self.manager.hangup(call, "no_answer")  # CANCEL (RFC 3261 §9.1)
            return
        limit = None
        if request.max_call_duration is not None:
            limit = asyncio.get_running_loop().call_later(request.max_call_duration, self._time_up, call)
        io = CallFlowIO(call, self.manager, prompts=self.prompts, start_agent=self.start_agent,
                        transcriber=self.transcriber, dial=self.dial)
        try:
            await self._send_dtmf(call, request.dtmf)
            if call.status is CallStatus.ACTIVE:
                await io.handoff(request.agent_name, handoff_context(request, call))
        except Exception:  # noqa: BLE001 - an agent failure ends the call cleanly, not in dead air
            log.exception("dispatched call %s failed", call.id)
            if call.status is not CallStatus.HANGUP:
                self.manager.hangup(call, "error")
        finally:
            io.close()
            if limit is not None:
                limit.cancel()
        if call.status is not CallStatus.HANGUP:
            self.manager.hangup(call, "agent_hangup")

    async def _send_dtmf(self, call: Call, dtmf: str) -> None:
        stream = call.leg.stream
        if not dtmf or stream is None:
            return
        stream.send_dtmf(dtmf)
        call.publish(ev.DtmfSent(digits=dtmf, method="rfc4733" if stream.telephone_event_pt else "inband"))
        # The agent speaks only after the IVR on the far end got every key.
        await asyncio.sleep(dial_string_seconds(dtmf))

    def _time_up(self, call: Call) -> None:
        if call.status is not CallStatus.HANGUP:
            call.publish(ev.MaxDurationReached())
            self.manager.hangup(call, "timeout")

