"""The loaded flow model: nodes by id plus the flow-wide defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..speech.prompts import PromptSpec  # what the prompt cache renders, listed by static_prompts()
from ..yamlsource import Position
from .nodes import GatherNode, MenuNode, Node, SayNode, Text
from .template import has_placeholders


@dataclass(frozen=True)
class FlowWarning:
    position: Position
    reason: str

    def __str__(self) -> str:
        return f"{self.position}: warning: {self.reason}"


@dataclass
class Flow:
    name: str
    start: str
    nodes: dict[str, Node]
    language: str = "en"  # the default language
    languages: tuple[str, ...] = ("en",)  # languages callers may get (X-Lang is honoured for these)
    voices: dict[str, str] = field(default_factory=dict)  # language -> TTS voice
    variables: dict[str, str] = field(default_factory=dict)  # `vars:` name -> template
    settings: dict[str, str] = field(default_factory=dict)  # service constants, read-only
    file: str = "<flow>"
    warnings: list[FlowWarning] = field(default_factory=list)

    def voice_for(self, language: str, node_voice: str | None = None) -> str | None:
        return node_voice or self.voices.get(language)

    def static_prompts(self) -> list[PromptSpec]:
        """Every prompt without placeholders, in each language it can be spoken in."""
        specs: list[PromptSpec] = []
        for node in self.nodes.values():
            for text, fixed_language, voice in _prompts_of(node):
                for language, words in self._spoken_variants(text, fixed_language):
                    spec = PromptSpec(words, language, self.voice_for(language, voice))
                    if words.strip() and not has_placeholders(words) and spec not in specs:
                        specs.append(spec)
        return specs

    def _spoken_variants(self, text: Text, fixed_language: str | None) -> list[tuple[str, str]]:
        languages = [fixed_language] if fixed_language else self.languages
        # A language-neutral text is spoken in whatever language the call is in.
        return list(dict.fromkeys(text.pick(language, self.language) for language in languages))


def _prompts_of(node: Node) -> list[tuple[Text, str | None, str | None]]:
    if isinstance(node, SayNode):
        return [(node.text, node.language, node.voice)]
    if isinstance(node, MenuNode):
        texts = [node.prompt, node.invalid_prompt, node.timeout_prompt]
        return [(text, None, node.voice) for text in texts if text is not None]
    if isinstance(node, GatherNode) and node.prompt is not None:
        return [(node.prompt, None, node.voice)]
    return []
