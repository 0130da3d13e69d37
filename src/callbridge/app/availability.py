"""Whether this worker takes new calls, and if not, why: the one answer INVITE, OPTIONS and /healthz give.

A proxy in front of several workers (Kamailio's dispatcher) probes each with OPTIONS and
sends INVITEs to those that answer 2xx. A worker that answers OPTIONS 200 but INVITE 503
flaps between up and down, so both ask this object (RFC 3261 §11.2: OPTIONS gets the answer
an INVITE would); so does ``GET /healthz`` for load balancers and the cluster registry.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from ..sip.ua.config import Unavailable


class NotAdmitting(enum.StrEnum):
    STARTING = "starting"  # SIP may listen already; media, prompts or models are not ready
    DRAINING = "draining"  # on the way out (app/drain.py): live calls finish, no new ones
    FULL = "full"  # server.max_calls calls are up


# Retry-After (RFC 3261 §20.33) per reason. Start-up takes seconds; a full worker frees a slot
# when a call ends, every few minutes at most; a draining one never comes back as it is.
RETRY_AFTER_S = {NotAdmitting.STARTING: 5, NotAdmitting.FULL: 10, NotAdmitting.DRAINING: 60}


class WorkerAvailability:
    """``ready`` and ``draining`` are set by the server; fullness is counted at each ask."""

    def __init__(self, max_calls: int | None, active_calls: Callable[[], int]) -> None:
        self.max_calls = max_calls
        self._active_calls = active_calls
        self.ready = False
        self.draining = False

    def reason(self) -> NotAdmitting | None:
        """Why no new call is taken now; None when one is. Draining wins: it is final."""
        if self.draining:
            return NotAdmitting.DRAINING
        if not self.ready:
            return NotAdmitting.STARTING
        if self.max_calls is not None and self._active_calls() >= self.max_calls:
            return NotAdmitting.FULL
        return None

    def __call__(self) -> Unavailable | None:
        """What the SIP core and the call layer ask for each new INVITE and OPTIONS."""
        reason = self.reason()
        return None if reason is None else Unavailable(reason.value, RETRY_AFTER_S[reason])
