"""The simulator's report: one result per script step, as text or JSON, and the exit status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


from .script import Step


EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_CALL_FAILED = 3


# -- the report ------------------------------------------------------------------------------------

@dataclass
class StepResult:
    index: int
    step: Step
    status: str = "skip"  # pass | fail | skip
    at: float | None = None  # seconds since the call was answered
    duration: float = 0.0
    detail: str = ""
    transcript: str | None = None

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "index": self.index, "kind": self.step.kind, "line": self.step.position.line,
            "description": self.step.describe(), "status": self.status,
            "at_s": None if self.at is None else round(self.at, 2), "duration_s": round(self.duration, 2),
            "detail": self.detail,
        }
        if self.transcript is not None:
            entry["transcript"] = self.transcript
        return entry


@dataclass
class Report:
    script: str
    target: str
    outcome: str = "passed"  # passed | failed | call_failed | error
    exit_status: int = EXIT_PASSED
    message: str = ""
    sip_call_id: str | None = None
    answered_after: float | None = None
    media: str | None = None
    duration: float = 0.0
    audio_file: str | None = None
    steps: list[StepResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "script": self.script, "target": self.target, "outcome": self.outcome,
            "exit_status": self.exit_status, "message": self.message, "sip_call_id": self.sip_call_id,
            "answered_after_s": None if self.answered_after is None else round(self.answered_after, 2),
            "media": self.media, "duration_s": round(self.duration, 2), "audio_file": self.audio_file,
            "passed": sum(r.status == "pass" for r in self.steps),
            "failed": sum(r.status == "fail" for r in self.steps),
            "skipped": sum(r.status == "skip" for r in self.steps),
            "steps": [result.to_dict() for result in self.steps],
        }

    def to_text(self) -> str:
        lines = [f"test-call {self.script} -> {self.target}"]
        if self.answered_after is not None:
            lines.append(f"  answered after {self.answered_after:.2f} s ({self.media}); Call-ID {self.sip_call_id}")
        width = min(max((len(r.step.describe()) for r in self.steps), default=10), 48)
        lines.append(f"  {'#':>2} {'':4}  {'step':<{width}}  {'line':>4} {'at':>7} {'took':>6}")
        for result in self.steps:
            at = "" if result.at is None else f"{result.at:6.2f}s"
            took = "" if result.status == "skip" else f"{result.duration:5.2f}s"
            label = result.step.describe()
            if len(label) > width:
                label = label[:width - 3] + "..."
            line = (f"  {result.index:>2} {result.status.upper():4}  {label:<{width}}  "
                    f"{result.step.position.line:>4} {at:>7} {took:>6}")
            if result.detail:
                line += f"  {result.detail}"
            lines.append(line.rstrip())
            if result.transcript is not None:
                lines.append(f"{'':10}heard: " + (f'"{result.transcript}"' if result.transcript else "(no speech)"))
        if self.audio_file:
            lines.append(f"  heard audio saved to {self.audio_file}")
        counts = self.to_dict()
        summary = f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
        verdict = {"passed": "PASS", "failed": "FAIL", "call_failed": "CALL FAILED", "error": "ERROR"}[self.outcome]
        lines.append(f"{verdict}: {self.message + '; ' if self.message else ''}{summary} in {self.duration:.1f} s")
        return "\n".join(lines)


class StepFailed(Exception):
    """An expectation was not met; the message says what happened instead."""


class CallNotPlaced(Exception):
    pass


class SetupError(Exception):
    """This machine cannot run the script: no speech engine or model, or no socket to bind."""
