"""When an agent's provider session is renewed, replaced or given up on, sans-IO.

:class:`SessionLifecycle` never opens a connection or reads a clock. Its driver
(:class:`~callbridge.agent.session.AgentSession`) tells it what happened, with
``now``: a session opened or failed to open, the current one failed, the
caller spoke, the agent spoke or finished a turn, a tool started or finished,
the conversation grew. It answers with actions (:meth:`actions`) and the time
it next wants :meth:`handle_timer` called (:meth:`next_deadline`).

* **Renewal.** From ``renew_fraction`` of the provider's limit the next session
  is opened (:class:`Open` with ``Purpose.NEXT``) at a turn boundary and
  handed over at the next one (:class:`Handover`, ``SCHEDULED``). A primed
  session whose history the conversation has since outgrown is discarded and
  primed again. No boundary before ``force_margin_s`` of the limit is left:
  the caller is held (:class:`HoldCaller`) and the handover is ``FORCED``.
* **Recovery.** The current session failed: the caller is held, a replacement
  opens with the bounded backoff of ``retry_delays_s``, a filler is asked for
  after ``filler_after_s`` of dead air, and the handover is ``RECOVERED`` (or
  ``EXPIRED`` when the provider's own limit ended it).
* **Giving up.** Bad credentials, a non-recoverable refusal, or every retry
  failed: :class:`GiveUp`, and the desk's fallback takes over.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Union

from .realtime import ErrorCode

CALLER_QUIET_S = 0.3  # caller silence that makes a turn boundary
UNANSWERED_WAIT_S = 3.0  # a caller noise the provider never answered stops blocking a renewal after this
PREPARE_RETRY_S = 0.5  # the next session failed to open: the current one still serves; try again after this
FORCE_MARGIN_CAP = 0.1  # the forced-handover margin is at most this share of the limit


@dataclass(frozen=True)
class SessionPolicy:
    renew_fraction: float = 0.75  # Nova: renew from 6 of its 8 minutes
    force_margin_s: float = 30.0  # hand over regardless when this little is left (capped at 10% of the limit)
    retry_delays_s: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # reconnect backoff, bounded
    open_timeout_s: float = 5.0  # one attempt at opening a session
    filler_after_s: float = 1.0  # dead air before the filler plays while reconnecting
    filler_text: str = "One moment, please."
    apology_text: str = "I'm sorry, I'm having trouble right now. Let me get someone to help you."


class Purpose(enum.Enum):
    FIRST = "first"  # the call's first session: it greets
    NEXT = "next"  # primed in the background while the current one serves
    REPLACEMENT = "replacement"  # no session serves: the caller is held until it opens


class Renewal(enum.StrEnum):
    """Why the caller moved to another provider session (the transcript's ``reason``)."""

    SCHEDULED = "scheduled"
    FORCED = "forced"
    EXPIRED = "expired"
    RECOVERED = "recovered"


class Phase(enum.Enum):
    STARTING = "starting"  # the first session is opening; the caller's audio is held
    SERVING = "serving"  # one session takes the caller's audio
    REPLACING = "replacing"  # none does: the caller is held while a replacement opens
    FAILED = "failed"  # given up; the fallback runs


# -- actions ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Open:
    """Open a provider session (primed with the conversation so far, unless FIRST)."""

    purpose: Purpose
    attempt: int  # 0 for the first try


@dataclass(frozen=True, slots=True)
class HoldCaller:
    """Stop feeding the current session and hold the caller's audio from now; retire the session.

    ``failed``: it broke, so take back the audio it never sent, and find the caller turn it left
    unanswered (``cut_short``: it was mid-answer, so its last agent turn was never finished)."""

    failed: bool
    cut_short: bool = False


@dataclass(frozen=True, slots=True)
class Handover:
    """Make the session opened for ``source`` the one the caller talks to; replay held audio.

    ``reason`` None: the first session. ``started_at``: when the handover began (to time it)."""

    source: Purpose
    reason: Renewal | None
    started_at: float
    prepare_ms: float


@dataclass(frozen=True, slots=True)
class Discard:
    """Close the primed next session: the conversation moved on, or a failure made it moot."""


@dataclass(frozen=True, slots=True)
class PlayFiller:
    """Dead air while a replacement opens: say the short filler."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The provider stays down. ``retries_exhausted``: opening failed (note why) rather than a refusal."""

    retries_exhausted: bool


Action = Union[Open, HoldCaller, Handover, Discard, PlayFiller, GiveUp]


class _Next(enum.Enum):
    NONE = "none"
    OPENING = "opening"
    READY = "ready"


class SessionLifecycle:
    def __init__(self, policy: SessionPolicy) -> None:
        self.policy = policy
        self.phase = Phase.STARTING
        self._actions: list[Action] = []
        self._now = -math.inf  # the latest time an input or timer carried
        # the serving session's clock
        self._renew_at: float | None = None
        self._force_at: float | None = None
        # the next session, primed in the background
        self._next = _Next.NONE
        self._next_orphaned = False  # still opening, but no longer wanted: discard it when it opens
        self._next_started = 0.0
        self._next_opened_at = 0.0
        self._next_limit: float | None = None
        self._next_history = 0
        self._next_prepare_ms = 0.0
        self._prepare_retry_at = -math.inf
        # a replacement (or the first session): its reason, start, and bounded retries
        self._reason: Renewal | None = None
        self._started_at = 0.0
        self._attempt = 0
        self._retry_at: float | None = None
        self._opening = False
        self._filler_at: float | None = None
        # turn-taking
        self._caller_voice_at = -math.inf
        self._turn_ended_at = -math.inf
        self.agent_busy = False
        self._tools_running = 0
        self._history = 0

    # -- driver interface -------------------------------------------------------------------------

    def actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` is next due; never a time already handled."""
        candidates: list[float] = []
        if self._retry_at is not None:
            candidates.append(self._retry_at)
        if self._filler_at is not None:
            candidates.append(self._filler_at)
        if self.phase is Phase.SERVING and self._renew_at is not None and self._force_at is not None:
            if self._now < self._renew_at:
                candidates.append(self._renew_at)
            else:
                candidates += [self._force_at, self._caller_voice_at + CALLER_QUIET_S,
                               self._caller_voice_at + UNANSWERED_WAIT_S, self._prepare_retry_at]
        future = [t for t in candidates if t > self._now]
        return min(future) if future else None

    def handle_timer(self, now: float) -> list[Action]:
        self._now = now
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._opening = True
            self._emit(Open(Purpose.FIRST if self.phase is Phase.STARTING else Purpose.REPLACEMENT, self._attempt))
        if self._filler_at is not None and now >= self._filler_at:
            self._filler_at = None
            self._emit(PlayFiller())
        self._evaluate(now)
        return self.actions()

    def start(self, now: float) -> list[Action]:
        """The call's first session: the caller is held until it opens."""
        self._now = now
        self.phase = Phase.STARTING
        self._started_at = now
        self._schedule_attempt(now, 0)
        return self.actions()

    def opened(self, now: float, purpose: Purpose, *, limit: float | None, history_size: int) -> list[Action]:
        """A session opened; ``limit`` its provider's hard length, ``history_size`` the turns it was primed with."""
        self._now = now
        if purpose is Purpose.NEXT:
            self._next_opened(now, limit, history_size)
        elif self.phase in (Phase.STARTING, Phase.REPLACING) and self._opening:
            self._opening = False
            self._hand_over(now, purpose, opened_at=now, limit=limit)
        return self.actions()

    def open_failed(self, now: float, purpose: Purpose, *, code: ErrorCode | None = None,
                    recoverable: bool = True) -> list[Action]:
        self._now = now
        if purpose is Purpose.NEXT:
            self._next = _Next.NONE
            if self._next_orphaned:
                self._next_orphaned = False
            elif self.phase is Phase.REPLACING and self._reason is Renewal.FORCED:
                self._schedule_attempt(now, 0)  # the forced handover was waiting for it: open one now
            else:
                self._prepare_retry_at = now + PREPARE_RETRY_S
                self._evaluate(now)
            return self.actions()
        if not self._opening:
            return self.actions()
        self._opening = False
        if not recoverable or code is ErrorCode.AUTH:
            self._give_up(retries_exhausted=True)  # retrying with the same credentials cannot help
        else:
            self._schedule_attempt(now, self._attempt + 1)
        return self.actions()

    def failed(self, now: float, code: ErrorCode | None) -> list[Action]:
        """The serving session failed or ended (``code`` None: it just closed)."""
        self._now = now
        if self.phase is not Phase.SERVING:
            return self.actions()
        self._emit(HoldCaller(failed=True, cut_short=self.agent_busy))
        self._drop_next()
        self._enter_replacing(now, Renewal.EXPIRED if code is ErrorCode.SESSION_EXPIRED else Renewal.RECOVERED)
        if code is ErrorCode.AUTH:
            self._give_up(retries_exhausted=False)
            return self.actions()
        self._filler_at = now + self.policy.filler_after_s
        self._schedule_attempt(now, 0)
        return self.actions()

    # turn-taking: what makes a boundary

    def caller_voice(self, now: float) -> None:
        """A caller frame with speech in it (called per frame: it only records)."""
        self._caller_voice_at = now

    def agent_speaking(self, now: float) -> None:
        self.agent_busy = True

    def turn_ended(self, now: float) -> list[Action]:
        self._now = now
        self.agent_busy = False
        self._turn_ended_at = now
        self._evaluate(now)
        return self.actions()

    def tool_started(self, now: float) -> None:
        self._tools_running += 1

    def tool_finished(self, now: float) -> list[Action]:
        self._now = now
        self._tools_running = max(0, self._tools_running - 1)
        self._evaluate(now)
        return self.actions()

    def conversation(self, history_size: int) -> None:
        """The conversation now has this many turns (a primed session with fewer is stale)."""
        self._history = history_size

    def at_turn_boundary(self, now: float) -> bool:
        """Agent silent, no tool running, caller quiet, and the caller's last words answered
        (or left unanswered long enough that they were only noise)."""
        if self.phase is not Phase.SERVING or self.agent_busy or self._tools_running:
            return False
        if now < self._caller_voice_at + CALLER_QUIET_S:
            return False
        unanswered = self._caller_voice_at > self._turn_ended_at
        return not unanswered or now >= self._caller_voice_at + UNANSWERED_WAIT_S

    # -- the decisions -------------------------------------------------------------------------------

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _evaluate(self, now: float) -> None:
        if self.phase is not Phase.SERVING or self._renew_at is None or self._force_at is None:
            return
        if now < self._renew_at:
            return
        if now >= self._force_at:
            self._force(now)
            return
        if not self.at_turn_boundary(now):
            return
        if self._next is _Next.READY and self._next_history == self._history:
            self._hand_over(now, Purpose.NEXT, opened_at=self._next_opened_at, limit=self._next_limit,
                            reason=Renewal.SCHEDULED, prepare_ms=self._next_prepare_ms)
            return
        if self._next is _Next.OPENING or now < self._prepare_retry_at:
            return
        if self._next is _Next.READY:
            self._emit(Discard())  # primed with a conversation that has moved on
        self._next = _Next.OPENING
        self._next_started = now
        self._emit(Open(Purpose.NEXT, 0))

    def _next_opened(self, now: float, limit: float | None, history_size: int) -> None:
        if self._next_orphaned:
            self._next_orphaned = False
            self._next = _Next.NONE
            self._emit(Discard())
            return
        self._next = _Next.READY
        self._next_opened_at, self._next_limit, self._next_history = now, limit, history_size
        self._next_prepare_ms = (now - self._next_started) * 1000
        if self.phase is Phase.REPLACING and self._reason is Renewal.FORCED:
            self._hand_over(now, Purpose.NEXT, opened_at=now, limit=limit)  # the forced handover waited for it
        else:
            self._evaluate(now)  # time passed while it opened: is this still a boundary?

    def _force(self, now: float) -> None:
        """No boundary came in time: hold the caller and hand over to whatever opens first."""
        self._emit(HoldCaller(failed=False))
        self._enter_replacing(now, Renewal.FORCED)
        if self._next is _Next.READY:
            self._hand_over(now, Purpose.NEXT, opened_at=self._next_opened_at, limit=self._next_limit)
        elif self._next is _Next.NONE:
            self._schedule_attempt(now, 0)
        # OPENING: the handover happens when it opens (or retries start if it fails)

    def _enter_replacing(self, now: float, reason: Renewal) -> None:
        self.phase = Phase.REPLACING
        self._reason = reason
        self._started_at = now
        self._renew_at = self._force_at = None

    def _drop_next(self) -> None:
        if self._next is _Next.READY:
            self._emit(Discard())
            self._next = _Next.NONE
        elif self._next is _Next.OPENING:
            self._next_orphaned = True

    def _schedule_attempt(self, now: float, attempt: int) -> None:
        delays = self.policy.retry_delays_s
        if attempt >= len(delays):
            self._give_up(retries_exhausted=True)
            return
        self._attempt = attempt
        if delays[attempt] <= 0:
            self._opening = True
            self._emit(Open(Purpose.FIRST if self.phase is Phase.STARTING else Purpose.REPLACEMENT, attempt))
        else:
            self._retry_at = now + delays[attempt]

    def _hand_over(self, now: float, source: Purpose, *, opened_at: float, limit: float | None,
                   reason: Renewal | None = None, prepare_ms: float | None = None) -> None:
        if reason is None and self.phase is Phase.REPLACING:
            reason = self._reason
        if prepare_ms is None:
            prepare_ms = (now - self._started_at) * 1000
        if source is Purpose.NEXT:
            self._next = _Next.NONE
        self.phase = Phase.SERVING
        self._reason = None
        self._filler_at = self._retry_at = None
        self.agent_busy = False
        if limit:
            self._renew_at = opened_at + limit * self.policy.renew_fraction
            self._force_at = opened_at + limit - min(self.policy.force_margin_s, limit * FORCE_MARGIN_CAP)
        else:
            self._renew_at = self._force_at = None
        self._emit(Handover(source, reason, started_at=now if reason is Renewal.SCHEDULED else self._started_at,
                            prepare_ms=prepare_ms))

    def _give_up(self, *, retries_exhausted: bool) -> None:
        self.phase = Phase.FAILED
        self._filler_at = self._retry_at = None
        self._renew_at = self._force_at = None
        self._drop_next()
        self._emit(GiveUp(retries_exhausted))


__all__ = ["Action", "Discard", "GiveUp", "Handover", "HoldCaller", "Open", "Phase", "PlayFiller", "Purpose",
           "Renewal", "SessionLifecycle", "SessionPolicy"]
