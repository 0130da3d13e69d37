"""Adaptive jitter buffer for audio frames (sans-IO).

The caller pushes packets as they arrive and pops one item every ptime.
Playout follows a schedule ``P(ts) = ts / rate + base + target`` where
``base`` tracks the fastest observed transit (arrival - ts / rate) and
``target`` is the adaptive delay. The play pointer normally advances one
frame per pop; it is re-anchored to the schedule at talkspurt starts and
after comfort noise (where moving it is inaudible), and nudged by dropping or
stretching single frames during continuous speech.
"""

from __future__ import annotations

import bisect
import enum
from collections import deque
from dataclasses import dataclass
from typing import Final, final

from .packet import RtpPacket

__all__ = [
    "CN_PAYLOAD_TYPE",
    "ComfortNoise",
    "Frame",
    "Gap",
    "GapReason",
    "JitterBuffer",
    "JitterStats",
    "Output",
]

CN_PAYLOAD_TYPE = 13  # RFC 3551 §6: static PT for comfort noise (RFC 3389)
DEFAULT_CLOCK_RATE = 8000
DEFAULT_PTIME_MS = 20
MIN_DELAY_MS = 20
MAX_DELAY_MS = 200
INITIAL_DELAY_MS = 40
DEFAULT_CAPACITY = 50  # frames; one second at 20 ms
MAX_CONCEAL_FRAMES = 5  # PLC for up to 100 ms, then silence (sender may be in DTX)

JITTER_GAIN = 1 / 16  # same smoothing as RFC 3550 §A.8
JITTER_MULTIPLIER = 3.0  # target ~ k * jitter
TARGET_RELEASE = 0.005  # per packet: ~4 s time constant at 50 packets/s
# The transit floor is a windowed minimum (blocks of BASE_BLOCK_S, last
# BASE_BLOCKS kept) so it follows sender clock drift but not jitter.
BASE_BLOCK_S = 1.0
BASE_BLOCKS = 4
RESYNC_THRESHOLD_S = 1.0  # transit jump that means a new timeline, not jitter
MAX_SEQ_GAP = 3000  # RFC 3550 §A.1 MAX_DROPOUT: bigger gaps are not counted as loss

# Play pointer lag behind schedule, in frames (hysteresis band [0, 1.5)).
SHRINK_LAG = 1.5
FAST_SHRINK_LAG = 4.0
EXPAND_LAG = 0.0  # never play a slot before its scheduled time
SHRINK_SPACING = 3  # pops between drops, so shrinking is spread out
EXPAND_SPACING = 2  # pops between stretches while audio is available

SEEN_WINDOW = 512  # sequence numbers remembered for duplicate detection
_SEQ_BITS = 16
_TS_BITS = 32
_TS_MASK = (1 << _TS_BITS) - 1
_TS_HALF = 1 << (_TS_BITS - 1)


class GapReason(enum.Enum):
    LOSS = "loss"  # packet missing: decoder should run PLC
    EXPAND = "expand"  # buffer is growing its delay: conceal/stretch one frame
    SILENCE = "silence"  # nothing to play (buffering, DTX without CN)


@final  # lets `type(x) is` checks narrow the union in the hot path
@dataclass(slots=True, frozen=True)
class Frame:
    sequence: int
    timestamp: int
    payload: bytes
    marker: bool = False


@final
@dataclass(slots=True, frozen=True)
class ComfortNoise:
    """Comfort noise in effect (RFC 3389 §3): ``level`` is -dBov (0..127)."""

    level: int
    payload: bytes = b""


@final
@dataclass(slots=True, frozen=True)
class Gap:
    reason: GapReason

    @property
    def conceal(self) -> bool:
        return self.reason is not GapReason.SILENCE


GAP_LOSS = Gap(GapReason.LOSS)
GAP_EXPAND = Gap(GapReason.EXPAND)
GAP_SILENCE = Gap(GapReason.SILENCE)

Output = Frame | ComfortNoise | Gap


@dataclass(slots=True, frozen=True)
class JitterStats:
    received: int
    duplicates: int
    late: int
    lost: int
    concealed: int
    expanded: int
    shrunk: int
    overflow: int
    resyncs: int
    comfort_noise: int
    buffered: int
    target_delay_ms: float
    jitter_ms: float


# A buffered packet: (extended sequence number, the frame to play, comfort noise?). A tuple, and the
# Frame built without the frozen dataclass's per-field object.__setattr__: both are once per packet.
_Entry = tuple[int, Frame, bool]
_EXT_SEQ: Final = 0
_FRAME: Final = 1
_CN: Final = 2
_new_frame = object.__new__
_set_sequence = Frame.__dict__["sequence"].__set__
_set_timestamp = Frame.__dict__["timestamp"].__set__
_set_payload = Frame.__dict__["payload"].__set__
_set_marker = Frame.__dict__["marker"].__set__


def _frame(sequence: int, timestamp: int, payload: bytes, marker: bool) -> Frame:
    """``Frame(sequence, timestamp, payload, marker)``, a third of the cost (same object, still frozen)."""
    frame = _new_frame(Frame)
    _set_sequence(frame, sequence)
    _set_timestamp(frame, timestamp)
    _set_payload(frame, payload)
    _set_marker(frame, marker)
    return frame


def _unwrap(value: int, ref_raw: int, ref_ext: int, bits: int) -> int:
    # Nearest extended value to the reference, so reordering across a wrap works.
    half = 1 << (bits - 1)
    delta = ((value - ref_raw + half) & ((1 << bits) - 1)) - half
    return ref_ext + delta


def _extend(value: int, ref: tuple[int, int] | None, bits: int) -> tuple[int, tuple[int, int]]:
    """A wrapping counter's extended value, and the (raw, extended) reference to keep:
    the highest value seen, so late packets never move it backwards."""
    if ref is None:
        return value, (value, value)
    ext = _unwrap(value, ref[0], ref[1], bits)
    return ext, ((value, ext) if ext > ref[1] else ref)


class JitterBuffer:
    """One audio stream's jitter buffer; see module docstring."""

    def __init__(
        self,
        clock_rate: int = DEFAULT_CLOCK_RATE,
        ptime_ms: int = DEFAULT_PTIME_MS,
        *,
        min_delay_ms: float = MIN_DELAY_MS,
        max_delay_ms: float = MAX_DELAY_MS,
        initial_delay_ms: float = INITIAL_DELAY_MS,
        cn_payload_type: int | None = CN_PAYLOAD_TYPE,
        capacity: int = DEFAULT_CAPACITY,
        max_conceal_frames: int = MAX_CONCEAL_FRAMES,
    ) -> None:
        self.clock_rate = clock_rate
        self.samples_per_frame = clock_rate * ptime_ms // 1000
        self.cn_payload_type = cn_payload_type
        self.capacity = capacity
        self.max_conceal_frames = max_conceal_frames
        self._min_delay = min_delay_ms / 1000
        self._max_delay = max_delay_ms / 1000
        self._target = min(max(initial_delay_ms / 1000, self._min_delay), self._max_delay)
        self._jitter = 0.0  # seconds
        # counters
        self.received = self.duplicates = self.late = self.lost = 0
        self.concealed = self.expanded = self.shrunk = self.overflow = 0
        self.resyncs = self.comfort_noise = 0
        self._ssrc: int | None = None
        self._reset_timeline()

    def _reset_timeline(self) -> None:
        """Forget everything tied to the sender's seq/ts space (SSRC change, jump)."""
        self._order: list[int] = []  # buffered extended timestamps, sorted
        self._entries: dict[int, _Entry] = {}
        self._seen: set[int] = set()
        self._seq_ref: tuple[int, int] | None = None  # (raw, extended) highest seq
        self._ts_ref: tuple[int, int] | None = None
        self._base: float | None = None
        self._base_blocks: deque[float] = deque(maxlen=BASE_BLOCKS)
        self._blocks_min: float | None = None
        self._block_min = 0.0
        self._block_start: float | None = None
        self._last_arrival: float | None = None
        self._last_arrival_ts = 0
        self._play_ts: int | None = None  # next slot; also the "late" frontier
        self._anchored = False
        self._cn: ComfortNoise | None = None
        self._conceal_run = 0
        self._first_consumed: int | None = None
        self._last_consumed: int | None = None
        self._since_shrink = SHRINK_SPACING
        self._since_expand = EXPAND_SPACING

    # --- properties -------------------------------------------------------

    @property
    def target_delay_ms(self) -> float:
        return self._target * 1000

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000

    @property
    def buffered(self) -> int:
        return len(self._order)

    def stats(self) -> JitterStats:
        return JitterStats(
            self.received, self.duplicates, self.late, self.lost, self.concealed,
            self.expanded, self.shrunk, self.overflow, self.resyncs, self.comfort_noise,
            len(self._order), self.target_delay_ms, self.jitter_ms,
        )  # fmt: skip

    # --- input ------------------------------------------------------------

    def push_packet(self, packet: RtpPacket, now: float) -> bool:
        return self.push(
            packet.sequence, packet.timestamp, packet.payload, now,
            marker=packet.marker, payload_type=packet.payload_type, ssrc=packet.ssrc,
        )  # fmt: skip

    def push(
        self,
        seq: int,
        timestamp: int,
        payload: bytes,
        now: float,
        *,
        marker: bool = False,
        payload_type: int | None = None,
        ssrc: int | None = None,
    ) -> bool:
        """Buffer one packet; False if dropped (duplicate, late, overflow)."""
        self.received += 1
        if ssrc is not None and ssrc != self._ssrc:
            if self._ssrc is not None:
                self._resync()
            self._ssrc = ssrc

        ext_seq = self._ext_seq(seq)
        if ext_seq in self._seen:
            self.duplicates += 1
            return False
        ext_ts = self._ext_ts(timestamp)
        rate = self.clock_rate
        transit = now - ext_ts / rate
        base = self._base
        if base is not None and abs(transit - base) > RESYNC_THRESHOLD_S:
            # Timestamps no longer match arrival times: new timeline.
            self._resync()
            ext_seq = self._ext_seq(seq)
            ext_ts = self._ext_ts(timestamp)
            transit = now - ext_ts / rate
            base = None
        self._remember(ext_seq)

        # Interarrival jitter, RFC 3550 §A.8 style but in seconds.
        if self._last_arrival is not None:
            d = (now - self._last_arrival) - (ext_ts - self._last_arrival_ts) / rate
            self._jitter += (abs(d) - self._jitter) * JITTER_GAIN
        self._last_arrival = now
        self._last_arrival_ts = ext_ts

        base = self._track_base(transit, now)
        self._adapt(transit - base)

        play_ts = self._play_ts
        if play_ts is not None and ext_ts < play_ts:
            self.late += 1
            # Counted lost when the pointer passed it; it did arrive after all.
            first, last = self._first_consumed, self._last_consumed
            if first is not None and last is not None and first < ext_seq < last and self.lost:
                self.lost -= 1
            return False
        if ext_ts in self._entries:
            self.duplicates += 1  # same media time twice under another seq
            return False

        cn = payload_type is not None and payload_type == self.cn_payload_type
        if cn:
            self.comfort_noise += 1
        self._entries[ext_ts] = (ext_seq, _frame(seq, timestamp, payload, marker), cn)
        bisect.insort(self._order, ext_ts)
        while len(self._order) > self.capacity:
            dropped = self._consume_head()
            self.overflow += 1
            if play_ts is not None and dropped >= play_ts:
                self._play_ts = play_ts = dropped + self.samples_per_frame
        return True

    def _track_base(self, transit: float, now: float) -> float:
        start = self._block_start
        if start is None or now - start >= BASE_BLOCK_S:
            if start is not None:
                self._base_blocks.append(self._block_min)
                self._blocks_min = min(self._base_blocks)  # once a second, not per packet
            self._block_start = now
            self._block_min = transit
        elif transit < self._block_min:
            self._block_min = transit
        blocks_min = self._blocks_min
        base = self._block_min if blocks_min is None or self._block_min < blocks_min else blocks_min
        self._base = base
        return base

    def _adapt(self, excess: float) -> None:
        # Grow at once to cover a spike, release slowly towards k * jitter.
        desired = max(JITTER_MULTIPLIER * self._jitter, excess)
        target = self._target
        if desired > target:
            target = desired
        else:
            target += (desired - target) * TARGET_RELEASE
        self._target = min(max(target, self._min_delay), self._max_delay)

    def _ext_seq(self, seq: int) -> int:
        ref = self._seq_ref
        if ref is not None and seq == (ref[0] + 1) & 0xFFFF:
            self._seq_ref = (seq, ref[1] + 1)  # the next packet in order: the common case
            return ref[1] + 1
        ext, self._seq_ref = _extend(seq, ref, _SEQ_BITS)
        return ext

    def _ext_ts(self, ts: int) -> int:
        ref = self._ts_ref
        if ref is not None:
            step = (ts - ref[0]) & _TS_MASK
            if 0 < step < _TS_HALF:  # later than the highest so far: the common case, as _extend would
                ext = ref[1] + step
                self._ts_ref = (ts, ext)
                return ext
        ext, self._ts_ref = _extend(ts, ref, _TS_BITS)
        return ext

    def _remember(self, ext_seq: int) -> None:
        seen = self._seen
        seen.add(ext_seq)
        if len(seen) > 2 * SEEN_WINDOW:
            floor = self._seq_ref[1] - SEEN_WINDOW  # type: ignore[index]
            self._seen = {s for s in seen if s > floor}

    def _resync(self) -> None:
        self.resyncs += 1
        self._reset_timeline()

    # --- output -----------------------------------------------------------

    def pop(self, now: float) -> Output:
        """Return what to play for the next ptime."""
        self._since_shrink += 1
        self._since_expand += 1
        if self._base is None:
            return self._idle_output()
        ideal = (now - self._base - self._target) * self.clock_rate
        for _ in range(2):  # a pop may leave the talkspurt and re-anchor once
            if not self._anchored:
                anchored = self._anchor(ideal)
                if anchored is None:
                    return self._idle_output()
                ideal = anchored
            out = self._play(ideal)
            if out is not None:
                return out
        return self._idle_output()

    def _idle_output(self) -> Output:
        return self._cn if self._cn is not None else GAP_SILENCE

    def _anchor(self, ideal: float) -> float | None:
        """Start playing at the oldest buffered frame; the schedule's position to play against,
        or None while still buffering up to the target delay."""
        order = self._order
        if not order or order[0] > ideal:
            return None
        # Frames already overdue were not late: they waited for this pop. The pop came late (a busy
        # event loop), the transit floor fell while we buffered (a later packet came faster), or
        # they arrived before the stream started ticking. Dropping them would cut the start of the
        # talkspurt (the caller's first syllable), so play from the oldest and grow the delay by
        # the whole frames it is overdue, as for any delay spike (_adapt releases it slowly).
        # Only a backlog past the maximum delay is dropped, oldest first.
        spf = self.samples_per_frame
        overdue = int((ideal - order[0]) // spf)
        if overdue:
            grow = min(overdue * spf / self.clock_rate, self._max_delay - self._target)
            if grow > 0:
                self._target += grow
                ideal -= grow * self.clock_rate
        while len(order) > 1 and order[1] <= ideal:
            self._consume_head()
            self.late += 1
        self._play_ts = order[0]
        self._anchored = True
        self._conceal_run = 0
        return ideal

    def _play(self, ideal: float) -> Output | None:
        """Output for the current slot, or None to go idle and re-anchor."""
        order = self._order
        spf = self.samples_per_frame
        play_ts = self._play_ts
        assert play_ts is not None
        lag = (ideal - play_ts) / spf

        if order and order[0] < play_ts + spf:
            if self._entries[order[0]][_CN]:
                return self._start_cn()
            if lag < EXPAND_LAG and self._since_expand >= EXPAND_SPACING:
                self._since_expand = 0
                self.expanded += 1
                return GAP_EXPAND  # hold the pointer: grows the delay by a frame
            if (
                lag >= SHRINK_LAG
                and len(order) > 1
                and order[1] < order[0] + 2 * spf
                and (self._since_shrink >= SHRINK_SPACING or lag >= FAST_SHRINK_LAG)
            ):
                self._consume_head()
                self._since_shrink = 0
                self.shrunk += 1
                if self._entries[order[0]][_CN]:
                    return self._start_cn()
            frame = self._entries[order[0]][_FRAME]
            self._play_ts = self._consume_head() + spf
            self._conceal_run = 0
            self._cn = None
            return frame

        if order:
            _, head, cn = self._entries[order[0]]
            if head.marker or cn:
                # The gap is DTX before a new talkspurt or CN, not loss.
                self._anchored = False
                return None
        if lag < EXPAND_LAG:
            self.expanded += 1
            return GAP_EXPAND  # target grew: wait for the frame rather than skip it
        if self._conceal_run >= self.max_conceal_frames:
            self._anchored = False  # stop PLC; probably DTX without CN
            return None
        self._conceal_run += 1
        self.concealed += 1
        self._play_ts = play_ts + spf
        return GAP_LOSS

    def _start_cn(self) -> ComfortNoise:
        payload = self._entries[self._order[0]][_FRAME].payload
        self._play_ts = self._consume_head() + self.samples_per_frame
        # RFC 3389 §3: first octet is the noise level in -dBov (7 bits).
        level = payload[0] & 0x7F if payload else 0
        self._cn = ComfortNoise(level, payload)
        self._anchored = False  # CN lasts until the next packet is due
        return self._cn

    def _consume_head(self) -> int:
        ext_ts = self._order.pop(0)
        ext_seq = self._entries.pop(ext_ts)[_EXT_SEQ]
        last = self._last_consumed
        if last is None:
            self._first_consumed = self._last_consumed = ext_seq
        elif ext_seq > last:
            if 1 < ext_seq - last < MAX_SEQ_GAP:
                # Passed over for good; late arrivals already seen are not lost.
                seen = self._seen
                self.lost += sum(1 for s in range(last + 1, ext_seq) if s not in seen)
            self._last_consumed = ext_seq
        return ext_ts
