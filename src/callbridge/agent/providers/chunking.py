"""How much caller audio goes into one provider event.

Each event a provider receives costs a fixed amount of work on our side
(Nova Sonic's official SDK serialises, signs and frames every event in
Python, then hops to its HTTP/2 thread and back), so fewer, larger events
are cheaper. Larger events also hold audio back, which matters only while
the model is timing something: the pause that ends the caller's turn, or a
barge-in over the agent. So:

- in the pause after the caller speaks, until the model answers or
  ``listen_s`` of quiet has passed, audio goes out in small events
  (``listening_samples``), so the end of the turn is heard promptly;
- while the caller talks over the agent, also small events;
- otherwise (the caller talking to a quiet agent, the agent talking, or
  nobody) in large ones (``quiet_samples``);
- the first voiced frame after quiet sends everything held at once, so the
  start of speech is never held back by a large event.

Events are whole multiples of ``listening_samples`` except those onset
flushes and the last one, so a signal hovering around the voice threshold
never produces more events than steady small ones would.

Sans-IO: samples in, byte chunks out; time is counted in samples.
"""

from __future__ import annotations

import numpy as np

# An int16 peak above this counts as the caller's voice here. Low on purpose (about
# -40 dBFS, below the session's turn-boundary VOICE_PEAK): a quiet onset must not wait
# in a large event, and line noise that crosses it only costs the small events we
# would otherwise always send.
ONSET_PEAK = 300


class CallerAudioChunker:
    """Splits a caller's 16-bit mono audio into provider events."""

    def __init__(self, sample_rate: int, *, listening_samples: int, quiet_samples: int,
                 listen_s: float = 2.0) -> None:
        if not 0 < listening_samples <= quiet_samples:
            raise ValueError("need 0 < listening_samples <= quiet_samples")
        self.listening_samples = listening_samples
        self.quiet_samples = quiet_samples
        self._listen_for = int(listen_s * sample_rate)
        self._listen_left = self._listen_for  # a session starts listening (the caller may speak first)
        self._speaking = False
        self._agent_talking = False
        self._held = bytearray()

    @property
    def listening(self) -> bool:
        """Whether the model may be timing the caller (their pause, or a barge-in)."""
        return self._listen_left > 0 and (not self._speaking or self._agent_talking)

    @property
    def held_samples(self) -> int:
        return len(self._held) // 2

    def feed(self, pcm: np.ndarray) -> list[bytes]:
        """Take one frame; returns the events that are now complete."""
        samples = np.asarray(pcm, dtype="<i2")
        voiced = samples.size > 0 and max(int(samples.max()), -int(samples.min())) >= ONSET_PEAK
        onset = voiced and self._listen_left == 0
        self._speaking = voiced
        if voiced:
            self._listen_left = self._listen_for
        else:
            self._listen_left = max(0, self._listen_left - samples.size)
        self._held += samples.tobytes()
        if onset:
            return self.flush()
        wanted = self.listening_samples if self.listening else self.quiet_samples
        if self.held_samples < wanted:
            return []
        usable = 2 * (self.held_samples - self.held_samples % self.listening_samples)
        chunk = bytes(self._held[:usable])
        del self._held[:usable]
        return [chunk]

    def model_answered(self) -> None:
        """The model has taken its turn: nothing is waiting on the caller's pause any more."""
        self._listen_left = 0
        self._agent_talking = True

    def model_finished(self) -> None:
        """The agent's turn is over: the caller's speech no longer interrupts anything."""
        self._agent_talking = False

    def flush(self) -> list[bytes]:
        """Everything held, as one event (none when nothing is held)."""
        if not self._held:
            return []
        chunk = bytes(self._held)
        self._held.clear()
        return [chunk]
