"""espeak-ng through its command-line program (Debian package ``espeak-ng``).

The program rather than libespeak-ng through ctypes: a fresh process per
sentence costs a few milliseconds, is thread-safe by construction, and
cannot crash the server.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

import numpy as np

from callbridge.media.wavfile import read_wav

from .audio import EMPTY_PCM, normalize_peak
from .rate import check_rate

ESPEAK = "espeak-ng"
DEFAULT_WPM = 175  # espeak-ng's own default speed; rate scales it
MIN_WPM, MAX_WPM = 80, 450  # espeak-ng's accepted range
SAMPLE_RATE = 22050  # espeak-ng always writes 22.05 kHz
SYNTH_TIMEOUT_S = 30.0
MBROLA_PREFIX = "mb/"  # mbrola voices need data Debian main does not ship
_ALIAS = re.compile(r"\(([\w-]+) \d+\)")


def espeak_path() -> str | None:
    return shutil.which(ESPEAK)


@functools.cache
def _voice_table() -> dict[str, str]:
    """Every language tag espeak-ng answers to -> the voice to ask for."""
    program = espeak_path()
    if program is None:
        return {}
    listing = subprocess.run([program, "--voices"], capture_output=True, text=True, timeout=10, check=True).stdout
    table: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5 or fields[4].startswith(MBROLA_PREFIX):
            continue
        language = fields[1].lower()
        table.setdefault(language, language)
        for alias in _ALIAS.findall(line):
            aliases.setdefault(alias.lower(), language)
    for alias, language in aliases.items():
        table.setdefault(alias, language)
    return table


def espeak_languages() -> set[str]:
    return set(_voice_table())


def espeak_voice_for(tag: str) -> str | None:
    """The espeak-ng voice for a tag, falling back from "es-ar" to "es"."""
    table = _voice_table()
    tag = tag.lower().replace("_", "-")
    return table.get(tag) or table.get(tag.split("-")[0])


class EspeakSynthesizer:
    def __init__(self, voice: str) -> None:
        program = espeak_path()
        if program is None:
            raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
        self._program = program
        self._voice = voice
        self.name = f"espeak-ng:{voice}"
        self.sample_rate = SAMPLE_RATE

    def synthesize(self, text: str, *, rate: float = 1.0) -> np.ndarray:
        rate = check_rate(rate)
        if not text.strip():
            return EMPTY_PCM.copy()
        wpm = min(MAX_WPM, max(MIN_WPM, round(DEFAULT_WPM * rate)))
        # text on stdin, never argv: a prompt starting with "-" must not be an option
        result = subprocess.run(
            [self._program, "-v", self._voice, "-s", str(wpm), "-b", "1", "--stdout"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=SYNTH_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0 or not result.stdout:
            detail = result.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"espeak-ng failed ({result.returncode}): {detail}")
        pcm, rate_read = read_wav(result.stdout, target_rate=self.sample_rate)
        return normalize_peak(pcm)
