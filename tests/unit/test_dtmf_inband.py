"""In-band DTMF detection on real generated signals: tones, codecs, noise, speech."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from callbridge.media.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callbridge.media.dtmf.goertzel import GoertzelBank, goertzel_power
from callbridge.media.dtmf.inband import (
    DIGIT_FREQS,
    DTMF_FREQS,
    InbandDtmfDetector,
    dtmf_sequence,
    dtmf_tone,
    dual_tone,
)
from callbridge.media.resample import resample

ALL_DIGITS = "123A456B789C*0#D"
RATE = 8000


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.int16)


def detect(signal: np.ndarray, rate: int = RATE, chunk: int = 160) -> list[tuple[str, int]]:
    """Run the streaming detector in RTP-sized chunks."""
    detector = InbandDtmfDetector(rate)
    found = []
    for start in range(0, signal.size, chunk):
        found += detector.feed(signal[start : start + chunk])
    return [(d.digit, d.sample_offset) for d in found]


def digits(signal: np.ndarray, rate: int = RATE) -> str:
    return "".join(d for d, _ in detect(signal, rate))


def padded(tone: np.ndarray, lead: int = 400, rate: int = RATE) -> np.ndarray:
    return np.concatenate((np.zeros(lead, np.int16), tone, silence(0.1, rate)))


def add_noise(signal: np.ndarray, snr_db: float, rng: np.random.Generator, ref_power: float) -> np.ndarray:
    noise = rng.normal(0.0, np.sqrt(ref_power / 10 ** (snr_db / 10)), signal.size)
    return np.clip(np.rint(signal + noise), -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------ Goertzel


def test_goertzel_bank_matches_recursion() -> None:
    rng = np.random.default_rng(3)
    blocks = rng.normal(0, 1000, size=(3, 102))
    bank = GoertzelBank(DTMF_FREQS, 102, RATE)
    power = bank.power(blocks)
    for b in range(3):
        for f, freq in enumerate(DTMF_FREQS):
            assert power[b, f] == pytest.approx(goertzel_power(blocks[b], freq, RATE), rel=1e-9)
    np.testing.assert_allclose(np.abs(bank.bins(blocks)) ** 2, power)


# ------------------------------------------------------------------ detection


@pytest.mark.parametrize("rate", [8000, 16000])
def test_every_digit_detected_once(rate: int) -> None:
    for digit in ALL_DIGITS:
        found = detect(padded(dtmf_tone(digit, 0.1, rate), lead=rate // 20, rate=rate), rate, chunk=rate // 50)
        assert [d for d, _ in found] == [digit], digit
        # reported offset is close to the real start of the tone
        assert abs(found[0][1] - rate // 20) <= rate * 0.01


def test_dial_sequence_through_ulaw_and_alaw() -> None:
    audio = dtmf_sequence("159#*0ABCD2w3", duration_ms=60, gap_ms=60)
    assert digits(ulaw_decode(ulaw_encode(audio))) == "159#*0ABCD23"
    assert digits(alaw_decode(alaw_encode(audio))) == "159#*0ABCD23"


def test_noise_at_20db_snr_through_ulaw() -> None:
    rng = np.random.default_rng(20)
    misses = []
    for trial in range(5):
        for digit in ALL_DIGITS:
            tone = dtmf_tone(digit, 0.06).astype(np.float64)
            signal = np.concatenate((np.zeros(300 + 37 * trial), tone, np.zeros(400)))
            noisy = add_noise(signal, 20.0, rng, ref_power=float(np.mean(tone**2)))
            got = digits(ulaw_decode(ulaw_encode(noisy)))
            if got != digit:
                misses.append((digit, got))
    assert misses == []


def test_tone_under_quiet_speech_still_detected() -> None:
    speech = speech_like(1.0, seed=11).astype(np.float64) * 10 ** (-24 / 20)
    mixed = speech.copy()
    mixed[2000:2000 + 800] += dtmf_tone("8", 0.1, amplitude_dbfs=-10)
    assert digits(np.clip(mixed, -32768, 32767).astype(np.int16)) == "8"


@pytest.mark.parametrize("offset", [0.014, -0.014, 0.015, -0.015])
def test_frequency_within_1_5_percent_accepted(offset: float) -> None:
    for digit, (low, high) in DIGIT_FREQS.items():
        for lo, hi in ((low * (1 + offset), high), (low, high * (1 + offset)),
                       (low * (1 + offset), high * (1 + offset))):
            assert digits(padded(dual_tone(lo, hi, 0.1))) == digit, (digit, lo, hi)


@pytest.mark.parametrize("offset", [0.035, -0.035, 0.036, -0.036, 0.05, -0.05])
def test_frequency_beyond_3_5_percent_rejected(offset: float) -> None:
    for low, high in DIGIT_FREQS.values():
        for lo, hi in ((low * (1 + offset), high), (low, high * (1 + offset))):
            assert digits(padded(dual_tone(lo, hi, 0.1))) == "", (lo, hi)


@pytest.mark.parametrize(("twist_db", "accepted"),
                         [(0, True), (4, True), (7, True), (-3, True), (10, False), (-6, False)])
def test_twist_limits(twist_db: float, accepted: bool) -> None:
    # positive = normal twist (high group louder), limit 8 dB; reverse limit 4 dB
    for digit in ALL_DIGITS:
        tone = dtmf_tone(digit, 0.1, amplitude_dbfs=-14.0, twist_db=twist_db)
        assert digits(padded(tone)) == (digit if accepted else ""), digit


def test_level_limits() -> None:
    assert digits(padded(dtmf_tone("5", 0.1, amplitude_dbfs=-30.0))) == "5"
    assert digits(padded(dtmf_tone("5", 0.1, amplitude_dbfs=-45.0))) == ""


def test_single_tones_and_three_tones_rejected() -> None:
    t = np.arange(800) / RATE
    for freq in DTMF_FREQS:
        assert digits(padded(np.rint(8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16))) == ""
    # two column tones with a row tone: not a valid key
    three = dtmf_tone("5", 0.1).astype(np.float64) + 6000 * np.sin(2 * np.pi * 1633 * t)
    assert digits(padded(np.rint(three).astype(np.int16))) == ""


@pytest.mark.parametrize(("duration", "expected"), [(0.030, ""), (0.045, "7")])
def test_minimum_duration(duration: float, expected: str) -> None:
    # every alignment of the tone against the analysis blocks
    for lead in range(300, 360, 3):
        assert digits(padded(dtmf_tone("7", duration), lead=lead)) == expected, lead


def test_repeated_digit_needs_a_gap() -> None:
    tone = dtmf_tone("3", 0.08)
    for lead in range(300, 352, 4):
        two_presses = np.concatenate((silence(lead / RATE), tone, silence(0.05), tone, silence(0.1)))
        assert digits(two_presses) == "33", lead
        dropout = np.concatenate((silence(lead / RATE), tone, silence(0.01), tone, silence(0.1)))
        assert digits(dropout) == "3", lead  # a 10 ms break inside one press is bridged


def test_digit_change_without_gap() -> None:
    assert digits(padded(np.concatenate((dtmf_tone("1", 0.08), dtmf_tone("9", 0.08))))) == "19"


def test_streaming_is_independent_of_chunk_size() -> None:
    rng = np.random.default_rng(5)
    audio = dtmf_sequence("0123456789", duration_ms=50, gap_ms=50)
    reference = detect(audio, chunk=audio.size)
    detector = InbandDtmfDetector()
    found, pos = [], 0
    while pos < audio.size:
        size = int(rng.integers(1, 400))
        found += [(d.digit, d.sample_offset) for d in detector.feed(audio[pos : pos + size])]
        pos += size
    assert found == reference
    assert "".join(d for d, _ in found) == "0123456789"


def test_reset_forgets_state() -> None:
    detector = InbandDtmfDetector()
    tone = dtmf_tone("6", 0.1)
    assert [d.digit for d in detector.feed(tone)] == ["6"]
    detector.reset()
    assert [(d.digit, d.sample_offset) for d in detector.feed(tone)] == [("6", 0)]


# ------------------------------------------------------------------ generator


def test_generator_frequencies_and_levels() -> None:
    tone = dtmf_tone("#", 1.0, amplitude_dbfs=-10.0, twist_db=2.0, ramp_ms=0.0).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(tone)) * 2 / tone.size  # 1 Hz bins, peak amplitude
    low, high = DIGIT_FREQS["#"]
    assert 20 * np.log10(spectrum[int(low)] / 32768) == pytest.approx(-10.0, abs=0.05)
    assert 20 * np.log10(spectrum[int(high)] / 32768) == pytest.approx(-8.0, abs=0.05)
    assert np.sum(spectrum**2) == pytest.approx(spectrum[int(low)] ** 2 + spectrum[int(high)] ** 2, rel=1e-3)
    assert dtmf_tone("1", 0.05, 16000).size == 800
    with pytest.raises(ValueError):
        dtmf_tone("E", 0.1)


# ------------------------------------------------------------------ talk-off

# F1-F3 of ten vowels (typical adult male averages, Peterson & Barney)
VOWEL_FORMANTS = np.array(
    [
        (270, 2290, 3010), (390, 1990, 2550), (530, 1840, 2480), (660, 1720, 2410), (730, 1090, 2440),
        (570, 840, 2410), (440, 1020, 2240), (300, 870, 2240), (640, 1190, 2390), (490, 1350, 1690),
    ],
    dtype=np.float64,
)
FORMANT_BANDWIDTHS = (70.0, 100.0, 140.0)


def speech_like(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """Source-filter speech imitation, band-limited like a phone line.

    Phrases of voiced syllables (glottal harmonics at a pitch gliding within
    90-250 Hz, shaped by moving vowel formants), fricative noise bursts and
    pauses. Harmonics are summed directly so it stays vectorised.
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    f0 = np.full(n, 120.0)
    formants = np.tile(VOWEL_FORMANTS[0], (n, 1))
    voiced = np.zeros(n)
    hiss = np.zeros(n)
    pos = 0
    while pos < n:
        base = rng.uniform(90, 250)
        scale = np.interp(base, [90, 250], [1.0, 1.3])  # higher voices, shorter vocal tracts
        for _ in range(int(rng.integers(3, 12))):
            end = min(n, pos + int(rng.uniform(0.08, 0.4) * rate))
            t = np.linspace(0.0, 1.0, end - pos)
            v0, v1 = VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS), size=2)] * scale
            formants[pos:end] = v0 + (v1 - v0) * t[:, None]
            p0 = base * rng.uniform(0.8, 1.25)
            p1 = p0 * rng.uniform(0.75, 1.3)
            vibrato = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 7) * t * (end - pos) / rate)
            f0[pos:end] = np.clip(p0 + (p1 - p0) * t, 80, 300) * vibrato
            voiced[pos:end] = np.sin(np.pi * t) ** rng.uniform(0.3, 1.0) * rng.uniform(0.3, 1.0)
            pos = end
            end = min(n, pos + int(rng.uniform(0.02, 0.12) * rate))
            f0[pos:end] = f0[pos - 1]
            formants[pos:end] = formants[pos - 1]
            if rng.random() < 0.5:
                hiss[pos:end] = rng.uniform(0.05, 0.3) * np.hanning(end - pos)
            pos = end
        end = min(n, pos + int(rng.uniform(0.1, 0.6) * rate))
        f0[pos:end] = f0[pos - 1]
        formants[pos:end] = formants[pos - 1]
        pos = end
    phase = np.cumsum(2 * np.pi * f0 / rate)
    out = np.zeros(n)
    for k in range(1, 46):
        fk = k * f0
        amp = 1.0 / k  # glottal roll-off with lip radiation: about -6 dB/octave
        for i, bandwidth in enumerate(FORMANT_BANDWIDTHS):
            F = formants[:, i]
            amp = amp * F**2 / np.sqrt((F**2 - fk**2) ** 2 + (bandwidth * fk) ** 2)
        # phone line band-pass 300-3400 Hz removes the strong low harmonics
        amp = amp * (fk / 300) ** 4 / np.sqrt(1 + (fk / 300) ** 8) / np.sqrt(1 + (fk / 3400) ** 16)
        out += np.where(fk < 0.95 * rate / 2, amp, 0.0) * np.sin(k * phase)
    out *= voiced
    out += hiss * np.diff(rng.normal(size=n), prepend=0.0) * 0.5
    out *= 0.5 * 32767 / np.max(np.abs(out))
    return np.rint(out).astype(np.int16)


def sustained_vowels(seconds_each: float = 0.12, pitch_step: float = 3.0) -> np.ndarray:
    """Every vowel held at every pitch from 85 to 300 Hz (sung/drawn-out
    vowels are the classic talk-off hazard: steady harmonics for many blocks)."""
    t = np.arange(round(seconds_each * RATE)) / RATE
    fade = np.hanning(t.size) ** 0.2
    segments = []
    for scale in (1.0, 1.3):
        for vowel in VOWEL_FORMANTS * scale:
            for f0 in np.arange(85.0, 300.0, pitch_step):
                k = np.arange(1, int(3800 / f0) + 1)[:, None]
                amp = 1.0 / k
                for formant, bandwidth in zip(vowel, FORMANT_BANDWIDTHS, strict=True):
                    amp = amp * formant**2 / np.sqrt((formant**2 - (k * f0) ** 2) ** 2 + (bandwidth * k * f0) ** 2)
                amp = amp * (k * f0 / 300) ** 4 / np.sqrt(1 + (k * f0 / 300) ** 8)
                x = np.sum(amp * np.sin(2 * np.pi * f0 * k * t + 1.3 * k), axis=0)
                segments.append(x / np.max(np.abs(x)) * 16000 * fade)
    return np.rint(np.concatenate(segments)).astype(np.int16)


def test_talk_off_sustained_vowels() -> None:
    audio = sustained_vowels()
    assert audio.size > 150 * RATE
    assert detect(ulaw_decode(ulaw_encode(audio))) == []


def test_talk_off_synthetic_speech() -> None:
    found = []
    for seed in range(6):  # 6 x 40 s, different speakers and phrasing
        speech = ulaw_decode(ulaw_encode(speech_like(40.0, seed)))
        found += detect(speech)
        # also louder (clipping) and quieter versions of the same material
        found += detect(np.clip(speech.astype(np.int32) * 2, -32768, 32767).astype(np.int16))
        found += detect((speech // 8).astype(np.int16))
    assert found == []


ESPEAK = shutil.which("espeak-ng")
SENTENCES = [
    "Hello, thank you for calling. How can I help you today?",
    "Please say or enter your account number, followed by the pound key.",
    "My number is one two three, four five six, seven eight nine zero.",
    "I would like to speak to someone about my bill from last month.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Could you repeat that? The line is really bad and I can barely hear you.",
    "We are open Monday through Friday from nine in the morning until five.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "Oh no, oh no, oh no. Beep beep. La la la la la. Mmmmm, hmmmm.",
    "Eeeeeee. Ooooooo. Aaaaaaah. Weeeee! Hooray! Yes yes yes!",
    "Your call is important to us. Please stay on the line and an agent will be with you shortly.",
    "Twenty one, thirty two, forty three, fifty four, sixty five, seventy six, eighty seven, ninety eight.",
]
VOICES = [("en", 160, 50), ("en-us", 190, 70), ("en+f3", 150, 80), ("en+m3", 140, 30), ("de", 170, 60), ("fr", 175, 45)]


def read_wav_mono16(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16), wav.getframerate()


def test_talk_off_espeak_speech(tmp_path: Path) -> None:
    if ESPEAK is None:
        pytest.fail("espeak-ng not installed; scripts/setup.sh --test installs it")
    text = " ".join(SENTENCES)
    clips = []
    for i, (voice, speed, pitch) in enumerate(VOICES):
        out = tmp_path / f"speech{i}.wav"
        result = subprocess.run(
            [ESPEAK, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text], capture_output=True
        )
        if result.returncode != 0 or not out.exists():
            continue  # voice not installed on this machine
        pcm, rate = read_wav_mono16(out)
        clips.append(resample(pcm, rate, RATE))
    assert clips, "espeak-ng produced no audio"
    speech = np.concatenate(clips)
    assert speech.size > 120 * RATE  # several minutes of talk
    speech = ulaw_decode(ulaw_encode(speech))
    assert detect(speech) == []
    loud = np.clip(speech.astype(np.int32) * 3, -32768, 32767).astype(np.int16)
    assert detect(loud) == []


def test_wav_reader_with_sox_output(tmp_path: Path) -> None:
    # keeps the espeak path's WAV handling honest on machines without espeak-ng
    sox = shutil.which("sox")
    if sox is None:
        pytest.fail("sox not installed; scripts/setup.sh --test installs it")
    out = tmp_path / "tone.wav"
    subprocess.run([sox, "-n", "-r", "22050", "-b", "16", "-c", "1", str(out), "synth", "0.2", "sine", "697"],
                   check=True)
    pcm, rate = read_wav_mono16(out)
    assert rate == 22050 and pcm.size == 4410
    assert resample(pcm, rate, RATE).size == 1600


# ---------------------------------------------------------------- the quiet-audio shortcut


def _state(detector: InbandDtmfDetector) -> tuple:
    return (detector._pending.tolist(), detector._pending_start, detector._candidate, detector._run,
            detector._run_start, detector._active, detector._misses)


def test_quiet_audio_skips_the_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    # Silence and line noise far below the weakest acceptable tone never reach the tone analysis...
    detector = InbandDtmfDetector(RATE)

    def analysed(*args: object) -> None:
        raise AssertionError("quiet audio went through the tone analysis")

    monkeypatch.setattr(detector, "_decide", analysed)
    rng = np.random.default_rng(7)
    for _ in range(50):
        assert detector.feed(silence(0.02)) == []
        assert detector.feed(rng.normal(0, 20, 160).astype(np.int16)) == []  # about -64 dBFS


def test_the_shortcut_changes_nothing_a_full_analysis_would_find() -> None:
    # ...and a detector without the shortcut, fed the same audio, ends every chunk in the same state,
    # finding the same digits, weak ones included, at levels on both sides of the shortcut's threshold.
    rng = np.random.default_rng(11)
    pieces = []
    for level_dbfs in (-60.0, -50.0, -40.0, -37.0, -35.0, -30.0):
        pieces.append(rng.normal(0, 32768 * 10 ** (level_dbfs / 20), RATE // 4))
        pieces.append(dual_tone(770.0, 1336.0, 0.08, amplitude_dbfs=level_dbfs, twist_db=0.0).astype(np.float64))
        pieces.append(np.zeros(RATE // 10))
    signal = np.clip(np.concatenate(pieces), -32768, 32767).astype(np.int16)
    fast, full = InbandDtmfDetector(RATE), InbandDtmfDetector(RATE)
    full._quiet_energy = -1.0  # every chunk analysed, as before the shortcut
    found_fast, found_full = [], []
    for start in range(0, signal.size, 160):
        found_fast += fast.feed(signal[start:start + 160])
        found_full += full.feed(signal[start:start + 160])
        assert _state(fast) == _state(full), start
    assert found_fast == found_full
    # -35 and -30 dBFS pass; -40 and -37 are under the -36 dBFS minimum per tone
    assert [d.digit for d in found_full] == ["5", "5"]
