"""A call's outgoing audio queue: sources in order, marks, and an instant flush (sans-IO).

The pacer reads one tick at a time, and what is read is sent in that same
tick, so "read" means "played to the caller". Marks sit between sources and
fire when playback passes them, or with ``played=False`` when a flush
(barge-in) discards them: the same contract as Twilio Media Streams marks,
which lets an agent cut its transcript to what the caller really heard.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import final

import numpy as np

from .codecs.base import PcmArray
from .sources import Source

MarkCallback = Callable[[str, bool], None]  # (name, played)


@final  # lets `type(x) is` checks narrow the union
@dataclass(slots=True)
class _Mark:
    name: str


@final
@dataclass(slots=True)
class _Entry:
    source: Source
    played: int = 0  # samples read so far


@dataclass(frozen=True, slots=True)
class Interrupted:
    """What a flush cut short: the source and how much of it the caller heard."""

    source: Source
    played_samples: int


class PlaybackQueue:
    def __init__(self, sample_rate: int, on_mark: MarkCallback | None = None) -> None:
        self.sample_rate = sample_rate
        self.on_mark = on_mark
        self._items: deque[_Entry | _Mark] = deque()
        self.samples_played = 0  # everything sent from this queue, for the call's record
        # The source whose one read filled the whole last tick (None: silence, or pieces of
        # several reads): the stream may take that tick's payload from it pre-encoded.
        self.sole_source: Source | None = None

    @property
    def idle(self) -> bool:
        return not self._items

    def enqueue(self, source: Source) -> None:
        self._items.append(_Entry(source))

    def enqueue_front(self, source: Source) -> None:
        """Play next, before anything queued (DTMF tones, urgent notices)."""
        self._items.appendleft(_Entry(source))

    def mark(self, name: str) -> None:
        """Fire ``on_mark(name, True)`` once everything queued before it has played."""
        self._items.append(_Mark(name))
        self._fire_leading_marks()

    def flush(self) -> Interrupted | None:
        """Stop at once (barge-in): drop every source, report every pending mark unplayed."""
        interrupted = None
        items, self._items = self._items, deque()
        for item in items:
            if isinstance(item, _Mark):
                self._notify(item.name, False)
            elif interrupted is None and item.played:
                interrupted = Interrupted(item.source, item.played)
        return interrupted

    def read(self, samples: int) -> PcmArray | None:
        """One tick of audio, or None when nothing is queued (the stream sends silence)."""
        items = self._items
        parts: list[PcmArray] = []
        wanted = samples
        source = None
        while wanted and items:
            head = items[0]
            if type(head) is _Mark:
                items.popleft()
                self._notify(head.name, True)
                continue
            source = head.source
            pcm = source.read(wanted)
            if pcm is None or not len(pcm):
                items.popleft()
                continue
            head.played += len(pcm)
            parts.append(pcm)
            wanted -= len(pcm)
        self._fire_leading_marks()
        self.sole_source = None
        if not parts:
            return None
        got = samples - wanted
        self.samples_played += got
        if len(parts) == 1 and not wanted:
            self.sole_source = source
            return parts[0]
        out = np.zeros(samples, dtype=np.int16)
        out[:got] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return out

    def _fire_leading_marks(self) -> None:
        # A mark with nothing before it has, by definition, been played.
        while self._items and type(head := self._items[0]) is _Mark:
            self._items.popleft()
            self._notify(head.name, True)

    def _notify(self, name: str, played: bool) -> None:
        if self.on_mark is not None:
            self.on_mark(name, played)
