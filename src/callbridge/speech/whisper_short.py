"""Whisper on a short window: a caller's utterance in a tenth of the time.

Whisper's encoder always runs over a 30 s window, padded with silence, and
on two CPU cores that fixed cost (~400 ms for whisper-base int8) is most of
the time to transcribe a five-word answer. The encoder accepts a shorter
window: over 10 s it costs ~40 ms and, measured on the demo's phrases, gives
the same words. The decoder then attends to a window shorter than the one it
was trained on, which can make it repeat itself on very short inputs, so a
result that looks degenerate (repetitive, or unsure) is rejected and the
caller gets the full 30 s pass instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

WHISPER_RATE = 16000
SHORT_WINDOW_S = 10  # encoder window for utterances that fit; 1000 mel frames
SHORT_MAX_S = 8.0  # longer utterances take the full window: leave the short one some silence
MEL_FRAMES_PER_S = 100
MAX_TOKENS = 100  # a phone answer is far shorter; a run-on decode is a failure, not a long answer
MAX_COMPRESSION_RATIO = 2.4  # whisper's own threshold for a repetitive (hallucinated) decode
MIN_AVG_LOGPROB = -1.0  # and its threshold for an unsure one


def transcribe_short(model: Any, audio: np.ndarray, *, language: str, prompt: str | None,
                     beam_size: int) -> str | None:
    """Text of a short utterance (float32 at 16 kHz), or None when the full pass should decide."""
    if len(audio) > SHORT_MAX_S * WHISPER_RATE:
        return None
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

    window = np.zeros(SHORT_WINDOW_S * WHISPER_RATE, np.float32)
    window[:len(audio)] = audio
    features = model.feature_extractor(window)[:, :SHORT_WINDOW_S * MEL_FRAMES_PER_S]
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
    previous = tokenizer.encode(" " + prompt.strip()) if prompt else []
    tokens = model.get_prompt(tokenizer, previous, without_timestamps=True)
    encoded = model.encode(features)
    [result] = model.model.generate(
        encoded, [tokens], beam_size=beam_size, max_length=MAX_TOKENS, return_scores=True,
        suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)))
    ids = [token for token in result.sequences_ids[0] if token < tokenizer.eot]
    text = tokenizer.decode(ids).strip()
    if not text:
        return ""
    avg_logprob = result.scores[0] / max(len(ids) + 1, 1)  # ctranslate2's score is the summed log-prob
    if get_compression_ratio(text) > MAX_COMPRESSION_RATIO or avg_logprob < MIN_AVG_LOGPROB:
        return None
    if len(ids) >= MAX_TOKENS - len(tokens) - 1:
        return None
    return text
