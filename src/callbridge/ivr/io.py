"""What the flow interpreter needs from a call.

The runner (:mod:`callbridge.ivr.runner`) only talks to this protocol, so it
can be driven by a real call or by a scripted fake in tests.

Rules an implementation must follow:

- ``say`` and ``play`` return as soon as the caller presses a key, and that
  key stays buffered (type-ahead), so the next ``read_digit`` gets it.
- ``read_digit(0)`` returns a key that is already buffered, else ``None``
  at once.
- When the caller hangs up, methods may raise; the runner lets it propagate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .handoff import HandoffContext


@dataclass(frozen=True)
class CallInfo:
    call_id: str
    caller: str | None  # caller number / SIP user
    caller_name: str | None
    called: str | None  # DID / SIP user dialled
    trunk: str | None
    # As received, e.g. {"X-Lang": "es", "X-Reason": "billing", "X-Twilio-CallSid": "CA..."}
    sip_headers: dict[str, str] = field(default_factory=dict)


class FlowIO(Protocol):
    info: CallInfo

    async def say(self, text: str, *, language: str, voice: str | None) -> None:
        """Speak ``text``; returns when played, or at once on a key press (kept buffered)."""
        ...

    async def play(self, path: Path) -> None:
        """Play an audio file; same interruption rule as :meth:`say`."""
        ...

    async def read_digit(self, timeout: float) -> str | None:
        """The next buffered or arriving key, ``None`` on timeout."""
        ...

    def clear_digits(self) -> None: ...

    async def listen(self, *, timeout: float, language: str, hints: list[str]) -> str | None:
        """One utterance's transcript, ``None`` if nothing was said."""
        ...

    async def transfer(self, target: str, *, method: str, trunk: str | None) -> bool:
        """True if the transfer was accepted."""
        ...

    async def handoff(self, agent: str, context: "HandoffContext") -> None:
        """Returns when the agent conversation ends."""
        ...

    async def hangup(self, reason: str) -> None: ...

    def record(self, kind: str, **fields) -> None:
        """One IVR-path entry for the call record."""
        ...
