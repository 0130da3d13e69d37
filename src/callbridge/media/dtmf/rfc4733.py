"""RFC 4733 telephone-event (DTMF over RTP): receiver and sender, sans-IO.

Payload (RFC 4733 §2.3)::

     0                   1                   2                   3
    |     event     |E|R| volume    |          duration             |

The caller strips the RTP header and hands us the RTP timestamp, the
marker bit and the payload; we never look at sequence numbers or clocks.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

# Event codes 0-15 are the DTMF keys (RFC 4733 §3.2, table 7), in this order.
DTMF_DIGITS = "0123456789*#ABCD"
DIGIT_TO_EVENT: dict[str, int] = {d: i for i, d in enumerate(DTMF_DIGITS)}

PAYLOAD_FORMAT = struct.Struct("!BBH")
PAYLOAD_SIZE = PAYLOAD_FORMAT.size  # 4
END_BIT = 0x80
VOLUME_MASK = 0x3F  # power level in -dBm0, 0..63 (§2.3.4)

MAX_DURATION = 0xFFFF  # 16-bit duration field (§2.3.5)
TIMESTAMP_MODULUS = 1 << 32

DEFAULT_CLOCK_RATE = 8000
DEFAULT_DURATION_MS = 100
MIN_DURATION_MS = 40  # Q.24 minimum recognisable tone; shorter is unreliable in-band too
DEFAULT_INTERVAL_MS = 20  # one event packet per 20 ms, matching the audio ptime (§2.5.1.2)
DEFAULT_VOLUME = 10  # -10 dBm0
END_PACKET_REPEATS = 3  # §2.5.1.4: the final packet is sent three times
DEFAULT_GAP_MS = 100  # inter-digit pause when dialling a string
MIN_GAP_MS = 40  # Q.24 minimum pause between digits
PAUSE_CHAR = "w"  # dial-string pause, conventional in dialers
PAUSE_SECONDS = 0.5

# A segment whose duration got this close to the 16-bit limit may be
# continued by a new segment (long event, §2.5.1.3) rather than a new key press.
LONG_EVENT_THRESHOLD = MAX_DURATION - 0x1000
# How many recent event timestamps we remember to drop stragglers and repeats.
SEEN_HISTORY = 32

ReportMode = Literal["start", "end"]


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One decoded telephone-event payload."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent | None:
        if len(payload) < PAYLOAD_SIZE:
            return None
        # Only the first block matters: extra blocks can only be RFC 2198
        # redundancy, which arrives as a different payload type.
        event, flags, duration = PAYLOAD_FORMAT.unpack_from(payload)
        return cls(event, bool(flags & END_BIT), flags & VOLUME_MASK, duration)

    def pack(self) -> bytes:
        flags = (END_BIT if self.end else 0) | (self.volume & VOLUME_MASK)
        return PAYLOAD_FORMAT.pack(self.event, flags, self.duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A key press recovered from telephone-event packets.

    ``timestamp`` is the RTP timestamp of the event start; ``duration`` is
    in RTP clock units and is ``None`` when the digit is reported on its
    first packet (the length is not known yet).
    """

    digit: str
    timestamp: int
    volume: int
    duration: int | None = None
    clock_rate: int = DEFAULT_CLOCK_RATE

    @property
    def duration_ms(self) -> float | None:
        if self.duration is None:
            return None
        return self.duration * 1000.0 / self.clock_rate


@dataclass(slots=True)
class _Event:
    digit: str
    start: int  # RTP timestamp of the first segment
    segment: int  # RTP timestamp of the current segment
    volume: int
    base: int = 0  # duration of finished segments (long events)
    duration: int = 0  # longest duration seen in the current segment
    ended: bool = False
    reported: bool = False

    @property
    def total(self) -> int:
        return self.base + self.duration


class Rfc4733Receiver:
    """Turn telephone-event packets into one :class:`DtmfDigit` per key press.

    ``report="start"`` emits on the first packet of an event (fastest IVR
    reaction); ``report="end"`` waits for the end bit and includes the
    duration. Events are keyed by RTP timestamp, so retransmitted end
    packets, duplicates and late packets of a known event are ignored, and
    an event is accepted whether or not its first packet (with the marker
    bit) arrived.
    """

    def __init__(self, clock_rate: int = DEFAULT_CLOCK_RATE, report: ReportMode = "start") -> None:
        if report not in ("start", "end"):
            raise ValueError(f"report must be 'start' or 'end', got {report!r}")
        self.clock_rate = clock_rate
        self.report: ReportMode = report
        self._current: _Event | None = None
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._ssrc: int | None = None

    def feed(self, timestamp: int, marker: bool, payload: bytes, ssrc: int | None = None) -> list[DtmfDigit]:
        parsed = TelephoneEvent.parse(payload)
        if parsed is None or parsed.event >= len(DTMF_DIGITS):
            return []  # not DTMF (flash, tones, ...): RFC 4733 lets us ignore it
        timestamp %= TIMESTAMP_MODULUS
        digit = DTMF_DIGITS[parsed.event]
        out: list[DtmfDigit] = []
        if ssrc is not None and ssrc != self._ssrc:
            # A new source (RFC 3550 §8.2) has its own timestamp space: what we
            # remember of the old one says nothing about it. SIPp starts each
            # play_dtmf on a new SSRC with the same timestamp.
            if self._ssrc is not None:
                out.extend(self.flush())
                self._current = None
                self._seen.clear()
            self._ssrc = ssrc
        current = self._current

        if current is not None and timestamp == current.segment:
            if current.ended:
                return []  # retransmitted end packet (§2.5.1.4)
            current.duration = max(current.duration, parsed.duration)
        elif timestamp in self._seen:
            return []  # straggler from an older event
        elif current is not None and self._continues(current, digit, marker):
            # §2.5.1.3: a long event restarts the duration with a new timestamp
            current.base += current.duration
            current.segment = timestamp
            current.duration = parsed.duration
            self._remember(timestamp)
        else:
            if current is not None:
                out.extend(self._finish(current))  # its end packets were all lost
            current = _Event(digit, timestamp, timestamp, parsed.volume, duration=parsed.duration)
            self._current = current
            self._remember(timestamp)
            if self.report == "start" and not parsed.end:
                current.reported = True
                out.append(DtmfDigit(digit, timestamp, parsed.volume, None, self.clock_rate))

        if parsed.end and not current.ended:
            current.ended = True
            out.extend(self._finish(current))
        return out

    def flush(self) -> list[DtmfDigit]:
        """Report an event still open (its end packets never came), e.g. at hang-up
        or when the caller's inactivity timer fires."""
        current = self._current
        if current is None:
            return []
        current.ended = True
        return self._finish(current)

    def _continues(self, current: _Event, digit: str, marker: bool) -> bool:
        return (
            not current.ended
            and not marker
            and digit == current.digit
            and current.duration >= LONG_EVENT_THRESHOLD
        )

    def _finish(self, event: _Event) -> list[DtmfDigit]:
        if event.reported:
            return []
        event.reported = True
        return [DtmfDigit(event.digit, event.start, event.volume, event.total, self.clock_rate)]

    def _remember(self, timestamp: int) -> None:
        self._seen[timestamp] = None
        while len(self._seen) > SEEN_HISTORY:
            self._seen.popitem(last=False)


# ---------------------------------------------------------------- sender


@dataclass(frozen=True, slots=True)
class EventPacket:
    """One telephone-event packet to send.

    ``send_offset`` (RTP clock units from the event start) says when to send
    it; ``timestamp`` is the RTP timestamp to put in the header, which stays
    at the event (segment) start for every packet (§2.5.1.1).
    """

    timestamp: int
    marker: bool
    payload: bytes
    send_offset: int


def digit_packets(
    digit: str,
    start_timestamp: int,
    clock_rate: int = DEFAULT_CLOCK_RATE,
    duration_ms: float = DEFAULT_DURATION_MS,
    interval_ms: float = DEFAULT_INTERVAL_MS,
    volume: int = DEFAULT_VOLUME,
) -> list[EventPacket]:
    """All packets for one key press (RFC 4733 §2.5.1).

    The first packet carries the marker bit, durations grow by one packet
    interval each time, and the final duration is sent three times with
    the end bit, one packet interval apart. Events longer than the 16-bit duration field are split
    into segments with new timestamps and no marker (§2.5.1.3).
    """
    event = _event_code(digit)
    if duration_ms < MIN_DURATION_MS:
        raise ValueError(f"DTMF duration must be at least {MIN_DURATION_MS} ms")
    if not 0 <= volume <= VOLUME_MASK:
        raise ValueError(f"volume must be 0..{VOLUME_MASK} (-dBm0)")
    total = round(duration_ms * clock_rate / 1000)
    step = max(1, round(interval_ms * clock_rate / 1000))
    packets: list[EventPacket] = []
    elapsed = 0
    while True:
        segment_ts = (start_timestamp + elapsed) % TIMESTAMP_MODULUS
        segment_len = min(total - elapsed, MAX_DURATION)
        last_segment = elapsed + segment_len >= total
        position = 0
        while position < segment_len:
            position = min(position + step, segment_len)
            is_end = last_segment and position == segment_len
            payload = TelephoneEvent(event, is_end, volume, position).pack()
            repeats = END_PACKET_REPEATS if is_end else 1
            for repeat in range(repeats):
                marker = not packets  # only the very first packet of the event (§2.5.1.1)
                # repeats go out one interval apart so one loss burst can't take all three
                send_at = elapsed + position + repeat * step
                packets.append(EventPacket(segment_ts, marker, payload, send_at))
        if last_segment:
            return packets
        elapsed += segment_len


def _event_code(digit: str) -> int:
    code = DIGIT_TO_EVENT.get(digit.upper())
    if code is None:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


def plan_dial_string(
    dial: str,
    duration_ms: float = DEFAULT_DURATION_MS,
    gap_ms: float = DEFAULT_GAP_MS,
    pause_s: float = PAUSE_SECONDS,
) -> list[tuple[float, str]]:
    """Turn a dial string like ``"12w34#"`` into ``[(offset_seconds, digit), ...]``.

    Each digit lasts ``duration_ms`` followed by ``gap_ms`` of silence;
    ``w`` adds ``pause_s`` (0.5 s) on top. Spaces and dashes are ignored.
    """
    if duration_ms < MIN_DURATION_MS:
        raise ValueError(f"DTMF duration must be at least {MIN_DURATION_MS} ms")
    if gap_ms < MIN_GAP_MS:
        raise ValueError(f"inter-digit gap must be at least {MIN_GAP_MS} ms")
    schedule: list[tuple[float, str]] = []
    offset_ms = 0.0
    for char in dial:
        if char in " -":
            continue
        if char.lower() == PAUSE_CHAR:
            offset_ms += pause_s * 1000
            continue
        _event_code(char)
        schedule.append((offset_ms / 1000, char.upper()))
        offset_ms += duration_ms + gap_ms
    return schedule


def dial_string_packets(
    dial: str,
    start_timestamp: int,
    clock_rate: int = DEFAULT_CLOCK_RATE,
    duration_ms: float = DEFAULT_DURATION_MS,
    gap_ms: float = DEFAULT_GAP_MS,
    interval_ms: float = DEFAULT_INTERVAL_MS,
    volume: int = DEFAULT_VOLUME,
) -> list[EventPacket]:
    """Packets for a whole dial string; ``send_offset`` is relative to
    ``start_timestamp`` so the caller can schedule them on its media clock."""
    packets: list[EventPacket] = []
    for offset_s, digit in plan_dial_string(dial, duration_ms, gap_ms):
        offset = round(offset_s * clock_rate)
        for packet in digit_packets(
            digit, (start_timestamp + offset) % TIMESTAMP_MODULUS, clock_rate, duration_ms, interval_ms, volume
        ):
            packets.append(
                EventPacket(packet.timestamp, packet.marker, packet.payload, offset + packet.send_offset)
            )
    return packets
