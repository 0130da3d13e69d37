"""Intents files: loading with located errors, and nearest-example matching.

An utterance is embedded with MiniLM and compared (cosine) with every example
of every intent; the intent of the closest example wins if its similarity
reaches the file's ``threshold``, otherwise the result is the fallback.

Examples may name slots as ``{order_id}``. The placeholder is removed before
the example is embedded ("track order {order_id}" is embedded as "track
order"): a made-up value would pull unrelated utterances that happen to
contain numbers towards the example, and the words around a slot carry the
meaning anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callbridge.ivr.template import TemplateError, check, render, template_names
from callbridge.yamlsource import Located, Path_, load_yaml

from .slots import SLOT_TYPES, SlotSpec, extract

FALLBACK = "fallback"
ACTIONS = ("transfer", "end_call")
DEFAULT_THRESHOLD = 0.55
DEFAULT_FALLBACK_RESPONSE = "Sorry, I didn't catch that. Could you say it another way?"

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_EXAMPLE_SLOT = re.compile(r"\{([^{}]*)\}")
_SINGLE_BRACE_NAME = re.compile(r"(?<!\{)\{\s*[A-Za-z][A-Za-z0-9_.]*\s*\}(?!\})")
_TOP_KEYS = {"language", "threshold", "intents", "fallback"}
# MiniLM is trained on English; Spanish works for short, distinct phrasings matched
# against Spanish examples (measured on the demo intents), not for fine distinctions.
SUPPORTED_LANGUAGES = ("en", "es")
_INTENT_KEYS = {"examples", "slots", "tool", "action", "response", "error_response"}
_SLOT_KEYS = {"type", "min_length", "max_length", "prompt", "required"}


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    examples: tuple[str, ...]
    slots: tuple[SlotSpec, ...] = ()
    tool: str | None = None
    action: str | None = None
    response: str | None = None
    error_response: str | None = None


@dataclass(frozen=True, slots=True)
class IntentsConfig:
    file: str
    language: str
    threshold: float
    intents: dict[str, Intent]
    fallback_response: str


@dataclass(slots=True)
class Match:
    intent: str  # FALLBACK when nothing was close enough
    score: float
    slots: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def is_fallback(self) -> bool:
        return self.intent == FALLBACK


def example_text(example: str) -> str:
    """The text actually embedded for an example: slot placeholders removed."""
    return " ".join(_EXAMPLE_SLOT.sub(" ", example).split())


# ---------------------------------------------------------------- loading

def load_intents(path: str | Path) -> IntentsConfig:
    """Parse and validate an intents file; problems raise ``SourceError`` with file:line."""
    return _Validator(load_yaml(path)).config()


class _Validator:
    def __init__(self, located: Located) -> None:
        self.src = located

    def fail(self, path: Path_, reason: str) -> Exception:
        return self.src.error(path, reason)

    def mapping(self, value: Any, path: Path_, what: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"{what} must be a mapping")
        for key in value:
            if key not in allowed:
                raise self.fail(path + (key,),
                                f"unknown key {key!r} in {what} (expected one of: {', '.join(sorted(allowed))})")
        return value

    def text(self, value: Any, path: Path_, what: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"{what} must be a non-empty string")
        return value

    def template(self, value: Any, path: Path_, what: str, allowed_names: set[str], allow_result: bool) -> str:
        value = self.text(value, path, what)
        try:
            check(value)
        except TemplateError as exc:
            raise self.fail(path, f"{what}: {exc}") from None
        if _SINGLE_BRACE_NAME.search(_strip_tags(value)):
            raise self.fail(path, f"{what}: write placeholders as {{{{ name }}}} (double braces)")
        for name in sorted(template_names(value)):
            if name in allowed_names or (allow_result and name.startswith("result.")):
                continue
            hint = "a slot of this intent" + (" or result.<field>" if allow_result else "")
            raise self.fail(path, f"{what} uses {{{{ {name} }}}}, which is not {hint}")
        return value

    def config(self) -> IntentsConfig:
        top = self.mapping(self.src.value, (), "the intents file", _TOP_KEYS)
        language = self.text(top.get("language", "en"), ("language",), "language")
        if language not in SUPPORTED_LANGUAGES:
            raise self.fail(("language",), f"the built-in model understands {', '.join(SUPPORTED_LANGUAGES)}, "
                                           f"not {language!r}")
        threshold = top.get("threshold", DEFAULT_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise self.fail(("threshold",), "threshold must be a number between 0 and 1 (cosine similarity)")
        if "intents" not in top:
            raise self.fail((), "the intents file needs an 'intents' mapping")
        raw_intents = top["intents"]
        if not isinstance(raw_intents, dict) or not raw_intents:
            raise self.fail(("intents",), "intents must be a non-empty mapping of name -> intent")
        intents = {name: self.intent(name, body) for name, body in raw_intents.items()}
        self.no_shared_examples(intents)
        fallback = self.mapping(top.get("fallback", {}), ("fallback",), "fallback", {"response"})
        fallback_response = DEFAULT_FALLBACK_RESPONSE
        if "response" in fallback:
            fallback_response = self.template(fallback["response"], ("fallback", "response"), "fallback response",
                                              set(), False)
        return IntentsConfig(self.src.file, language, float(threshold), intents, fallback_response)

    def intent(self, name: Any, body: Any) -> Intent:
        path: Path_ = ("intents", name)
        if not isinstance(name, str) or not _NAME.match(name):
            raise self.fail(path, f"intent name {name!r} must be letters, digits and '_' (starting with a letter)")
        if name == FALLBACK:
            raise self.fail(path, "'fallback' is reserved; configure it with the top-level 'fallback' key")
        body = self.mapping(body, path, f"intent {name!r}", _INTENT_KEYS)
        slots = self.slots(body.get("slots", {}), path + ("slots",))
        slot_names = {slot.name for slot in slots}
        examples = self.examples(body.get("examples"), path + ("examples",), slot_names)
        tool = body.get("tool")
        if tool is not None and (not isinstance(tool, str) or not _NAME.match(tool)):
            raise self.fail(path + ("tool",), "tool must be a tool name (letters, digits and '_')")
        action = body.get("action")
        if action is not None and action not in ACTIONS:
            raise self.fail(path + ("action",), f"action must be one of: {', '.join(ACTIONS)}")
        response = error_response = None
        if "response" in body:
            response = self.template(body["response"], path + ("response",), "response", slot_names, tool is not None)
        elif action is None:
            raise self.fail(path, f"intent {name!r} needs a response (or an action)")
        if "error_response" in body:
            if tool is None:
                raise self.fail(path + ("error_response",), "error_response only applies to an intent with a tool")
            error_response = self.template(body["error_response"], path + ("error_response",), "error_response",
                                           slot_names, False)
        return Intent(name, examples, slots, tool, action, response, error_response)

    def examples(self, value: Any, path: Path_, slot_names: set[str]) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, "examples must be a non-empty list of phrases")
        out = []
        for index, example in enumerate(value):
            example = self.text(example, path + (index,), "an example")
            for placeholder in _EXAMPLE_SLOT.findall(example):
                if placeholder.strip() not in slot_names:
                    raise self.fail(path + (index,),
                                    f"example uses {{{placeholder}}}, which is not a slot of this intent")
            if not example_text(example):
                raise self.fail(path + (index,), "an example needs words besides slot placeholders")
            out.append(example)
        return tuple(out)

    def slots(self, value: Any, path: Path_) -> tuple[SlotSpec, ...]:
        if not isinstance(value, dict):
            raise self.fail(path, "slots must be a mapping of name -> slot")
        out = []
        for name, body in value.items():
            slot_path = path + (name,)
            if not isinstance(name, str) or not _NAME.match(name) or name == "result":
                raise self.fail(slot_path, f"slot name {name!r} must be letters, digits and '_' (and not 'result')")
            body = self.mapping(body, slot_path, f"slot {name!r}", _SLOT_KEYS)
            slot_type = body.get("type", "digits")
            if slot_type not in SLOT_TYPES:
                raise self.fail(slot_path + ("type",), f"slot type must be one of: {', '.join(SLOT_TYPES)}")
            lengths = {}
            for key, default in (("min_length", 1), ("max_length", 20)):
                number = body.get(key, default)
                if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                    raise self.fail(slot_path + (key,), f"{key} must be a whole number of at least 1")
                lengths[key] = number
            if lengths["min_length"] > lengths["max_length"]:
                raise self.fail(slot_path + ("min_length",), "min_length is greater than max_length")
            required = body.get("required", True)
            if not isinstance(required, bool):
                raise self.fail(slot_path + ("required",), "required must be true or false")
            prompt = None
            if "prompt" in body:
                prompt = self.template(body["prompt"], slot_path + ("prompt",), "prompt", set(), False)
            elif required:
                raise self.fail(slot_path, f"required slot {name!r} needs a prompt to ask the caller for it")
            out.append(SlotSpec(name, slot_type, lengths["min_length"], lengths["max_length"], prompt, required))
        return tuple(out)

    def no_shared_examples(self, intents: dict[str, Intent]) -> None:
        seen: dict[str, str] = {}
        for intent in intents.values():
            for index, example in enumerate(intent.examples):
                key = example_text(example).lower()
                if key in seen and seen[key] != intent.name:
                    raise self.fail(("intents", intent.name, "examples", index),
                                    f"example {example!r} is also an example of intent {seen[key]!r}")
                seen[key] = intent.name


def _strip_tags(template: str) -> str:
    return re.sub(r"\{\{.*?\}\}", "", template, flags=re.DOTALL)


# ---------------------------------------------------------------- matching

class IntentEngine:
    """Matches caller utterances against an intents file and renders replies."""

    def __init__(self, intents: str | Path | IntentsConfig, encoder: Any = None) -> None:
        self.config = intents if isinstance(intents, IntentsConfig) else load_intents(intents)
        if encoder is None:
            from .minilm import MiniLmEncoder
            encoder = MiniLmEncoder.load()
        self.encoder = encoder
        owners: list[str] = []
        texts: list[str] = []
        for intent in self.config.intents.values():
            for example in intent.examples:
                owners.append(intent.name)
                texts.append(example_text(example))
        self._owners = owners
        self._example_vectors = encoder.encode(texts)  # unit rows, so dot = cosine

    def intent(self, name: str) -> Intent:
        return self.config.intents[name]

    def scores(self, utterance: str) -> dict[str, float]:
        """Each intent's best example similarity, highest first."""
        if not utterance.strip():
            return {}
        similarities = self._example_vectors @ self.encoder.encode([utterance])[0]
        best: dict[str, float] = {}
        for owner, similarity in zip(self._owners, similarities.tolist(), strict=True):
            if similarity > best.get(owner, -1.0):
                best[owner] = similarity
        return dict(sorted(best.items(), key=lambda item: item[1], reverse=True))

    def match(self, utterance: str) -> Match:
        ranked = self.scores(utterance)
        if not ranked:
            return Match(FALLBACK, 0.0)
        name, score = next(iter(ranked.items()))
        if score < self.config.threshold:
            return Match(FALLBACK, score)
        slots, missing = self.extract_slots(name, utterance)
        return Match(name, score, slots, missing)

    def extract_slots(self, intent: str, utterance: str) -> tuple[dict[str, str], list[str]]:
        """Slot values found in ``utterance`` and the required slots still missing.

        Also for the caller's answer to a slot prompt ("four five seven two").
        """
        found: dict[str, str] = {}
        missing: list[str] = []
        for slot in self.config.intents[intent].slots:
            value = extract(slot, utterance)
            if value is not None:
                found[slot.name] = value
            elif slot.required:
                missing.append(slot.name)
        return found, missing

    def prompt_for(self, match: Match) -> str | None:
        """What to ask next if a required slot is missing, else None."""
        if match.is_fallback or not match.missing:
            return None
        for slot in self.config.intents[match.intent].slots:
            if slot.name == match.missing[0]:
                return render_reply(slot.prompt or "", match.slots, None)
        return None

    def reply(self, match: Match, result: Mapping[str, Any] | None = None, failed: bool = False) -> str:
        """The text to say for a match; ``result``/``failed`` come from its tool."""
        if match.is_fallback:
            return render_reply(self.config.fallback_response, {}, None)
        intent = self.config.intents[match.intent]
        prompt = self.prompt_for(match)
        if prompt is not None:
            return prompt
        if failed:
            return render_reply(intent.error_response or self.config.fallback_response, match.slots, None)
        return render_reply(intent.response or "", match.slots, result)


def render_reply(template: str, slots: Mapping[str, str], result: Mapping[str, Any] | None) -> str:
    variables: dict[str, object] = dict(slots)
    if result is not None:
        _flatten("result", result, variables)
    return " ".join(render(template, variables).split())


def _flatten(prefix: str, value: Any, out: dict[str, object]) -> None:
    # The template looks up dotted names in a flat dict, so {"status": ..}
    # under "result" becomes "result.status".
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
    else:
        out[prefix] = value

