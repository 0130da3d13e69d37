"""In-band DTMF: a streaming detector and a tone generator.

Detection runs Goertzel single-bin DFTs (see :mod:`.goertzel`) on blocks of
12.75 ms (102 samples at 8 kHz) taken every half block, and applies the
usual ITU-T Q.24-style acceptance rules to every block:

* one row and one column tone, each the clear peak of its group;
* each tone within ±2.5 % of nominal, measured by estimating the actual
  frequency (phase advance over one sample of a Hann-windowed bin), so
  tones within ±1.5 % pass and tones beyond ±3.5 % fail (Q.24 table);
* twist (column level minus row level) between -4 dB (reverse) and +8 dB
  (normal, high group louder);
* the two tones carry nearly all the block energy -- speech and music
  spread energy over many harmonics, which is what defeats talk-off;
* a minimum level per tone.

A digit is reported once at least five consecutive blocks agree (about
40 ms of tone: 30 ms tones never qualify, 45 ms tones always do), and the
same digit is not reported again until the tone has been absent for about
40 ms, so brief drop-outs inside one key press are bridged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .goertzel import dft_basis
from .rfc4733 import DEFAULT_DURATION_MS, DEFAULT_GAP_MS, PAUSE_SECONDS, plan_dial_string

ROW_FREQS = (697.0, 770.0, 852.0, 941.0)  # low group, Q.23
COL_FREQS = (1209.0, 1336.0, 1477.0, 1633.0)  # high group, Q.23
DTMF_FREQS = ROW_FREQS + COL_FREQS
KEYPAD = ("123A", "456B", "789C", "*0#D")  # KEYPAD[row][col]
DIGIT_FREQS: dict[str, tuple[float, float]] = {
    KEYPAD[r][c]: (ROW_FREQS[r], COL_FREQS[c]) for r in range(4) for c in range(4)
}
_GROUP = len(ROW_FREQS)

BASE_RATE = 8000
BLOCK_SECONDS = 102 / BASE_RATE  # 12.75 ms: 78 Hz bins separate adjacent DTMF tones
HOPS_PER_BLOCK = 2  # half-block steps give ~6 ms timing resolution for duration rules
FULL_SCALE = 32768.0

DEFAULT_TONE_DBFS = -10.0
DEFAULT_GENERATOR_TWIST_DB = 2.0  # high group a little louder, as telephones send it
DEFAULT_RAMP_MS = 1.0  # soften on/off edges so the tone doesn't splatter


@dataclass(frozen=True, slots=True)
class InbandThresholds:
    """Acceptance rules; the defaults follow ITU-T Q.24 practice."""

    min_tone_dbfs: float = -36.0  # per tone, re a full-scale sine (about -33 dBm0)
    normal_twist_db: float = 8.0  # column tone may exceed row tone by this much
    reverse_twist_db: float = 4.0  # row tone may exceed column tone by this much
    relative_peak_db: float = 8.0  # chosen tone over the next tone of its group
    min_energy_ratio: float = 0.85  # the two tones' share of block energy
    freq_tolerance: float = 0.025  # midway between the ±1.5 % accept / ±3.5 % reject limits
    min_on_blocks: int = 5  # consecutive agreeing blocks before reporting (~40 ms)
    release_blocks: int = 6  # blocks without the digit before it may repeat (~40 ms gap)


class InbandDigit(NamedTuple):
    digit: str
    sample_offset: int  # first sample of the first block that carried the tone


_NO_DIGIT = -1
# Chunks whose whole energy is under this share of the provable minimum skip the analysis.
QUIET_MARGIN = 0.5
# Tones are only accepted within 2.5 %: about half a bin at 1633 Hz.
# Clamping keeps roll-off corrections finite for wild estimates on noise.
_MAX_OFFSET_BINS = 0.6


class InbandDtmfDetector:
    """Streaming DTMF detector for one direction of one call (8 or 16 kHz int16)."""

    def __init__(self, sample_rate: int = BASE_RATE, thresholds: InbandThresholds | None = None) -> None:
        if sample_rate < BASE_RATE:
            raise ValueError(f"sample rate must be at least {BASE_RATE} Hz")
        self.sample_rate = sample_rate
        self.thresholds = thresholds or InbandThresholds()
        # even, so a block is exactly two hops (see the split basis below)
        self.hop = round(BLOCK_SECONDS * sample_rate / HOPS_PER_BLOCK)
        self.block_size = HOPS_PER_BLOCK * self.hop
        n = self.block_size
        k = len(DTMF_FREQS)
        # Rectangular bins give levels and the energy share; a trailing
        # column of ones gives the block sum, so DC can be removed
        # algebraically instead of by touching the samples.
        rect = np.concatenate((dft_basis(DTMF_FREQS, n, sample_rate), np.ones((n, 1))), axis=1)
        rect[:, : 2 * k] -= rect[:, : 2 * k].mean(axis=0)  # a zero-mean basis ignores DC
        self._rect_basis = rect
        # Blocks overlap by half, so each block's bins are the sum of its two
        # halves' partial sums: one matrix product over non-overlapping halves
        # (a reshape, no copies) serves every block of the chunk.
        self._split_basis = np.concatenate((rect[: self.hop], rect[self.hop :]), axis=1)
        # Hann bins over samples 0..n-1 and 1..n: their phase difference is
        # the tone frequency. Computed only for blocks that pass the screen.
        hann = np.hanning(n)
        pair = np.zeros((n + 1, 4 * k))
        pair[:n, : 2 * k] = dft_basis(DTMF_FREQS, n, sample_rate, hann)
        pair[1:, 2 * k :] = dft_basis(DTMF_FREQS, n, sample_rate, hann)
        self._hann_basis = pair
        self._hann_dc = pair.sum(axis=0)  # response to a constant, subtracted per block
        self._span_index = np.arange(n + 1)
        self._nominal = np.asarray(DTMF_FREQS)
        t = self.thresholds
        # |X|^2 of a sine of amplitude A over n samples is (A n / 2)^2
        self._min_power = (FULL_SCALE * 10 ** (t.min_tone_dbfs / 20) * n / 2) ** 2
        self._normal_twist = 10 ** (t.normal_twist_db / 10)
        self._reverse_twist = 10 ** (t.reverse_twist_db / 10)
        self._relative_peak = 10 ** (t.relative_peak_db / 10)
        # Largest roll-off correction an in-tolerance tone can need: bounds
        # what the screen may assume before the frequency is known.
        worst_offset = np.minimum(t.freq_tolerance * self._nominal * n / sample_rate, _MAX_OFFSET_BINS)
        self._max_gain = 1.0 / np.sinc(worst_offset) ** 2
        # 2*sum(gain*|X|^2) + ratio*sum^2 >= ratio*n*sum(x^2)  <=>  tone share
        # of the DC-free energy could reach min_energy_ratio
        ratio = t.min_energy_ratio
        self._quick_weights = np.concatenate((2 * self._max_gain, 2 * self._max_gain, [ratio]))
        self._quick_scale = ratio * n
        self._quick_floor = 4 * self._min_power  # both tones at the minimum level
        # Quiet audio cannot pass that condition, so it skips the matrix products: by
        # Cauchy-Schwarz a block of energy E gives at most E * sum(weight * |basis column|^2)
        # on the left, and the right is at least the floor. Half the floor leaves room for
        # rounding, so the shortcut only ever takes chunks the full test would reject.
        column_energy = np.einsum("ij,ij->j", rect, rect)
        self._quiet_energy = QUIET_MARGIN * self._quick_floor / float(column_energy @ self._quick_weights)
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float64)
        self._pending_start = 0  # absolute index of _pending[0]
        self._candidate = _NO_DIGIT
        self._run = 0
        self._run_start = 0
        self._active = _NO_DIGIT
        self._misses = 0

    def feed(self, samples: NDArray[np.int16]) -> list[InbandDigit]:
        """Analyse the next chunk; returns digits whose tone qualified in it."""
        chunk = np.asarray(samples, dtype=np.float64)
        buf = np.concatenate((self._pending, chunk)) if self._pending.size else chunk
        hop = self.hop
        count = (buf.size - self.block_size - 1) // hop + 1  # blocks with their extra sample
        if count <= 0:
            self._pending = buf
            return []
        used = buf[: (count + 1) * hop]
        if used @ used < self._quiet_energy:
            results = None  # silence or line noise: no block could hold a tone (see __init__)
        else:
            halves = used.reshape(count + 1, hop)
            partial = halves @ self._split_basis
            width = self._rect_basis.shape[1]
            parts = partial[:-1, :width] + partial[1:, width:]
            half_energy = np.einsum("ij,ij->i", halves, halves)
            energy = half_energy[:-1] + half_energy[1:]
            results = self._decide(parts, energy, lambda sel: buf[sel[:, None] * hop + self._span_index])
        base = self._pending_start
        consumed = count * hop
        self._pending = buf[consumed:].copy()
        self._pending_start += consumed
        return self._track(results, count, base)

    def classify(self, windows: NDArray[np.floating]) -> NDArray[np.int64]:
        """Per-block key index 0..15 (KEYPAD order, row*4+col) or -1.

        ``windows`` has shape (m, block_size + 1); the extra sample feeds the
        frequency estimate. For analysis and tuning; :meth:`feed` is the
        streaming path.
        """
        block = np.asarray(windows[:, : self.block_size], dtype=np.float64)
        parts = block @ self._rect_basis
        energy = np.einsum("ij,ij->i", block, block)
        results = self._decide(parts, energy, lambda sel: np.asarray(windows[sel], dtype=np.float64))
        return np.full(len(block), _NO_DIGIT, dtype=np.int64) if results is None else results

    def _decide(
        self,
        parts: NDArray[np.float64],
        raw_energy: NDArray[np.float64],
        fetch: Callable[[NDArray[np.intp]], NDArray[np.float64]],
    ) -> NDArray[np.int64] | None:
        """Keys per block from the rectangular bins; ``None`` when no block passes."""
        n = self.block_size
        k = len(DTMF_FREQS)
        squared = parts * parts
        # Quick necessary condition, one product for all blocks: even all
        # eight bins at their most generous correction must hold the
        # required share of the (DC-free) energy and twice the minimum
        # tone level. Fails on silence and almost all speech, so most
        # frames cost only this.
        bound = np.maximum(self._quick_scale * raw_energy, self._quick_floor)
        if not np.any(squared @ self._quick_weights >= bound):
            return None
        sums = parts[:, 2 * k]
        energy = raw_energy - sums * sums / n  # energy of the block minus its DC
        power = squared[:, :k] + squared[:, k : 2 * k]
        # Screen: even with the most generous frequency correction, do the
        # strongest tones hold enough level and energy share?
        gained = power * self._max_gain
        best_row = gained[:, :_GROUP].max(axis=1)
        best_col = gained[:, _GROUP:].max(axis=1)
        hopeful = (np.minimum(best_row, best_col) >= self._min_power) & (
            2.0 * (best_row + best_col) >= self.thresholds.min_energy_ratio * n * energy
        )
        if not hopeful.any():
            return None
        sel = np.flatnonzero(hopeful)
        power = power[sel]
        rows = np.argmax(power[:, :_GROUP], axis=1)
        cols = _GROUP + np.argmax(power[:, _GROUP:], axis=1)
        windows = fetch(sel)
        hann_parts = windows @ self._hann_basis - (sums[sel] / n)[:, None] * self._hann_dc
        ok = self._verify(hann_parts, power, energy[sel], rows, cols)
        results = np.full(len(parts), _NO_DIGIT, dtype=np.int64)
        results[sel[ok]] = rows[ok] * _GROUP + (cols[ok] - _GROUP)
        return results

    def _verify(
        self,
        hann_parts: NDArray[np.float64],
        power: NDArray[np.float64],
        energy: NDArray[np.float64],
        rows: NDArray[np.int64],
        cols: NDArray[np.int64],
    ) -> NDArray[np.bool_]:
        t = self.thresholds
        n = self.block_size
        k = len(DTMF_FREQS)
        early = hann_parts[:, :k] + 1j * hann_parts[:, k : 2 * k]
        late = hann_parts[:, 2 * k : 3 * k] + 1j * hann_parts[:, 3 * k :]
        idx = np.arange(len(power))
        ok = np.ones(len(power), dtype=bool)
        tone_power = []
        smooth_power = []
        for chosen, group in ((rows, slice(0, _GROUP)), (cols, slice(_GROUP, 2 * _GROUP))):
            nominal = self._nominal[chosen]
            early_bin = early[idx, chosen]
            # a sinusoid advances by 2*pi*f/fs per sample: read f off the phase step
            step = np.angle(late[idx, chosen] * np.conj(early_bin))
            offset_hz = step * self.sample_rate / (2 * np.pi) - nominal
            ok &= np.abs(offset_hz) <= t.freq_tolerance * nominal
            offset_bins = np.clip(offset_hz * n / self.sample_rate, -_MAX_OFFSET_BINS, _MAX_OFFSET_BINS)
            # undo each bin's roll-off for an off-centre tone
            corrected = power[idx, chosen] / np.sinc(offset_bins) ** 2
            runner_up = np.sort(power[:, group], axis=1)[:, -2]
            ok &= corrected >= runner_up * self._relative_peak
            ok &= corrected >= self._min_power
            tone_power.append(corrected)
            hann_rolloff = np.sinc(offset_bins) / (1.0 - offset_bins**2)
            smooth_power.append(np.abs(early_bin) ** 2 / hann_rolloff**2)
        row_power, col_power = tone_power
        # Twist from the Hann bins: their low side lobes keep a loud column
        # tone from leaking into the row bin and wobbling the level ratio.
        row_smooth, col_smooth = smooth_power
        ok &= col_smooth <= row_smooth * self._normal_twist
        ok &= row_smooth <= col_smooth * self._reverse_twist
        # tone energy over the block is 2|X|^2/n for each sinusoid
        ok &= 2.0 * (row_power + col_power) >= t.min_energy_ratio * n * energy
        return ok

    def _track(self, results: NDArray[np.int64] | None, count: int, base: int) -> list[InbandDigit]:
        t = self.thresholds
        if results is None:
            # fast path, same outcome as the loop below: nothing is forming
            self._candidate = _NO_DIGIT
            self._run = 0
            if self._active != _NO_DIGIT:
                self._misses += count
                if self._misses >= t.release_blocks:
                    self._active = _NO_DIGIT
            return []
        found: list[InbandDigit] = []
        for i, key in enumerate(results.tolist()):
            if key == _NO_DIGIT or key != self._candidate:
                self._candidate = key
                self._run = 0 if key == _NO_DIGIT else 1
                self._run_start = base + i * self.hop
            else:
                self._run += 1
            if key == self._active and key != _NO_DIGIT:
                self._misses = 0
            elif self._active != _NO_DIGIT:
                self._misses += 1
                if self._misses >= t.release_blocks:
                    self._active = _NO_DIGIT
            if self._run >= t.min_on_blocks and self._candidate != self._active:
                self._active = self._candidate
                self._misses = 0
                found.append(InbandDigit(KEYPAD[key // _GROUP][key % _GROUP], self._run_start))
        return found


# ---------------------------------------------------------------- generator


def dual_tone(
    low_hz: float,
    high_hz: float,
    duration_s: float,
    sample_rate: int = BASE_RATE,
    amplitude_dbfs: float = DEFAULT_TONE_DBFS,
    twist_db: float = DEFAULT_GENERATOR_TWIST_DB,
    ramp_ms: float = DEFAULT_RAMP_MS,
) -> NDArray[np.int16]:
    """Two summed sines: ``low_hz`` at ``amplitude_dbfs`` (re full-scale sine),
    ``high_hz`` ``twist_db`` louder (negative for reverse twist)."""
    count = round(duration_s * sample_rate)
    t = np.arange(count) / sample_rate
    low_amp = FULL_SCALE * 10 ** (amplitude_dbfs / 20)
    high_amp = low_amp * 10 ** (twist_db / 20)
    signal = low_amp * np.sin(2 * np.pi * low_hz * t) + high_amp * np.sin(2 * np.pi * high_hz * t)
    ramp = min(round(ramp_ms * sample_rate / 1000), count // 2)
    if ramp > 0:
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
        signal[:ramp] *= edge
        signal[count - ramp :] *= edge[::-1]
    return np.clip(np.rint(signal), -FULL_SCALE, FULL_SCALE - 1).astype(np.int16)


def dtmf_tone(
    digit: str,
    duration_s: float,
    sample_rate: int = BASE_RATE,
    amplitude_dbfs: float = DEFAULT_TONE_DBFS,
    twist_db: float = DEFAULT_GENERATOR_TWIST_DB,
    ramp_ms: float = DEFAULT_RAMP_MS,
) -> NDArray[np.int16]:
    """The Q.23 tone pair for ``digit`` (0-9, *, #, A-D)."""
    try:
        low, high = DIGIT_FREQS[digit.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF digit: {digit!r}") from None
    return dual_tone(low, high, duration_s, sample_rate, amplitude_dbfs, twist_db, ramp_ms)


def dtmf_sequence(
    dial: str,
    sample_rate: int = BASE_RATE,
    duration_ms: float = DEFAULT_DURATION_MS,
    gap_ms: float = DEFAULT_GAP_MS,
    pause_s: float = PAUSE_SECONDS,
    amplitude_dbfs: float = DEFAULT_TONE_DBFS,
    twist_db: float = DEFAULT_GENERATOR_TWIST_DB,
) -> NDArray[np.int16]:
    """Audio for a dial string such as ``"12w34#"`` (``w`` = 0.5 s pause)."""
    schedule = plan_dial_string(dial, duration_ms, gap_ms, pause_s)
    if not schedule:
        return np.zeros(0, dtype=np.int16)
    tone_len = round(duration_ms * sample_rate / 1000)
    total = round(schedule[-1][0] * sample_rate) + tone_len + round(gap_ms * sample_rate / 1000)
    out = np.zeros(total, dtype=np.int16)
    for offset_s, digit in schedule:
        start = round(offset_s * sample_rate)
        out[start : start + tone_len] = dtmf_tone(digit, duration_ms / 1000, sample_rate, amplitude_dbfs, twist_db)
    return out

