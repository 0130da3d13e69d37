"""What a voice agent is told about a caller the IVR hands over.

The agent should not have to ask again what the caller already answered in
the menus, so the context carries the IVR path, the flow's variables, the
caller's identity and the SIP ``X-`` headers an upstream system may have set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LANGUAGE_NAMES = {
    "en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "ja": "Japanese", "zh": "Chinese", "ar": "Arabic",
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code.split("-")[0].lower(), code)


def x_headers(headers: dict[str, str]) -> dict[str, str]:
    """Only the ``X-*`` headers, with their names as received."""
    return {name: value for name, value in headers.items() if name.lower().startswith("x-")}


@dataclass(frozen=True)
class HandoffContext:
    agent: str
    caller_number: str | None
    caller_name: str | None
    called_number: str | None
    language: str
    reason: str
    # One entry per menu choice: {"menu": ..., "digit": ..., "label": ...}
    path: list[dict[str, str]] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    sip_headers: dict[str, str] = field(default_factory=dict)  # X-* only
    context: dict[str, str] = field(default_factory=dict)  # the agent node's rendered `context`

    def header(self, name: str) -> str | None:
        """A SIP X-header by name, ignoring case."""
        wanted = name.lower()
        for key, value in self.sip_headers.items():
            if key.lower() == wanted:
                return value
        return None

    @property
    def x_lang(self) -> str | None:
        return self.header("X-Lang")

    @property
    def x_reason(self) -> str | None:
        return self.header("X-Reason")

    @property
    def twilio_call_sid(self) -> str | None:
        return self.header("X-Twilio-CallSid")

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "caller_number": self.caller_number,
            "caller_name": self.caller_name,
            "called_number": self.called_number,
            "language": self.language,
            "reason": self.reason,
            "path": [dict(step) for step in self.path],
            "variables": dict(self.variables),
            "sip_headers": dict(self.sip_headers),
            "context": dict(self.context),
        }

    def to_instructions(self) -> str:
        """A short plain-English briefing for the agent's system prompt."""
        who = self.caller_number or "an unknown number"
        if self.caller_name:
            who = f"{self.caller_name} ({who})"
        lines = [f"You are now speaking with {who} on the phone."]
        if self.called_number:
            lines.append(f"They dialled {self.called_number}.")
        lines.append(f"Speak {language_name(self.language)} ({self.language}).")
        if self.reason:
            lines.append(f"Reason for the call: {self.reason.replace('_', ' ')}.")
        if self.path:
            steps = "; ".join(f"{step.get('menu', '?')}: {step.get('label') or step.get('digit', '?')}"
                              for step in self.path)
            lines.append(f"In the phone menu they chose: {steps}.")
        details = {k: v for k, v in {**self.variables, **self.context}.items() if v not in ("", None)}
        if details:
            lines.append("Known details: " + "; ".join(f"{k} = {v}" for k, v in details.items()) + ".")
        lines.append("They already answered these menus: do not ask again what they chose.")
        return "\n".join(lines)
