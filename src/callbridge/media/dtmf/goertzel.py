"""Goertzel tone analysis, vectorised over blocks and frequencies.

The Goertzel algorithm evaluates one DFT term at an arbitrary frequency.
In C it is run as a two-tap recursion per sample; in numpy the same number
is obtained far faster as a dot product with a precomputed cos/sin basis,
which also lets one matrix product cover every block of a chunk and every
frequency at once. :func:`goertzel_power` keeps the textbook recursion as a
reference (tests check the bank against it), not for the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def goertzel_power(block: Sequence[float] | NDArray[np.number], freq: float, sample_rate: float) -> float:
    """|X(freq)|^2 of ``block`` by the classic Goertzel recursion (reference only)."""
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / sample_rate)
    s_prev = s_prev2 = 0.0
    for x in np.asarray(block, dtype=np.float64).tolist():
        s = x + coeff * s_prev - s_prev2
        s_prev2, s_prev = s_prev, s
    return s_prev2 * s_prev2 + s_prev * s_prev - coeff * s_prev * s_prev2


def dft_basis(
    freqs: Sequence[float], block_size: int, sample_rate: float, window: FloatArray | None = None
) -> FloatArray:
    """Real basis of shape (block_size, 2F): columns [w*cos | -w*sin] per frequency.

    ``blocks @ basis`` gives real and imaginary parts of X(f) for every block.
    """
    n = np.arange(block_size, dtype=np.float64)[:, None]
    omega = 2.0 * np.pi * np.asarray(freqs, dtype=np.float64)[None, :] / sample_rate
    basis = np.concatenate((np.cos(omega * n), -np.sin(omega * n)), axis=1)
    if window is not None:
        basis *= np.asarray(window, dtype=np.float64)[:, None]
    return basis


class GoertzelBank:
    """Complex single-bin DFTs of many equal-length blocks at a set of frequencies."""

    def __init__(
        self, freqs: Sequence[float], block_size: int, sample_rate: float, window: FloatArray | None = None
    ) -> None:
        self.freqs = tuple(float(f) for f in freqs)
        self.block_size = block_size
        self.sample_rate = sample_rate
        self._basis = dft_basis(self.freqs, block_size, sample_rate, window)

    def bins(self, blocks: NDArray[np.number]) -> NDArray[np.complex128]:
        """X(f) for each block: input (n_blocks, block_size) -> (n_blocks, F)."""
        parts = np.asarray(blocks, dtype=np.float64) @ self._basis
        count = len(self.freqs)
        return parts[:, :count] + 1j * parts[:, count:]

    def power(self, blocks: NDArray[np.number]) -> FloatArray:
        """|X(f)|^2 for each block, equal to the Goertzel output."""
        parts = np.asarray(blocks, dtype=np.float64) @ self._basis
        squared = parts * parts
        count = len(self.freqs)
        return squared[:, :count] + squared[:, count:]
