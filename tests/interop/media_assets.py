"""Audio for the media interop tests: generate what callers say, and analyse what was heard or recorded.

Everything here is independent of ``callbridge``: the assets are made with numpy, ``espeak-ng`` and ``sox``,
and the analysis (FFT levels, an FFT DTMF reader) is deliberately simple, so a bug in the server's own
DSP cannot hide behind the same bug in the test.

Levels are dB re a full-scale sine (a sine of peak amplitude 1.0 is 0 dBFS).
"""

from __future__ import annotations

import struct
import subprocess
import wave
from pathlib import Path

import numpy as np

RATE = 8000
FRAME = 160  # samples per 20 ms packet at 8 kHz

ROW_FREQS = (697.0, 770.0, 852.0, 941.0)
COL_FREQS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
DTMF_FREQS = {KEYPAD[r][c]: (ROW_FREQS[r], COL_FREQS[c]) for r in range(4) for c in range(4)}
RFC4733_EVENTS = {d: i for i, d in enumerate("0123456789*#ABCD")}


# -- generating ------------------------------------------------------------------------------------------

def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(round(seconds * rate)))


def sine(freq: float, seconds: float, dbfs: float, rate: int = RATE, ramp_ms: float = 5.0) -> np.ndarray:
    n = int(round(seconds * rate))
    out = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * np.arange(n) / rate)
    ramp = min(int(rate * ramp_ms / 1000), n // 2)
    if ramp:
        # Raised-cosine edges: no clicks, so no energy splashed over the other DTMF bins.
        edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        out[:ramp] *= edge
        out[-ramp:] *= edge[::-1]
    return out


def dtmf_tone(digit: str, seconds: float, dbfs: float = -10.0, twist_db: float = 2.0, rate: int = RATE) -> np.ndarray:
    """A key press as a telephone sends it: row tone at ``dbfs``, column tone ``twist_db`` louder."""
    low, high = DTMF_FREQS[digit]
    return sine(low, seconds, dbfs, rate) + sine(high, seconds, dbfs + twist_db, rate)


def dtmf_sequence(digits: str, tone_s: float, gap_s: float, lead_s: float = 0.5, tail_s: float = 0.5,
                  dbfs: float = -10.0) -> np.ndarray:
    parts = [silence(lead_s)]
    for digit in digits:
        parts += [dtmf_tone(digit, tone_s, dbfs), silence(gap_s)]
    parts.append(silence(tail_s))
    return np.concatenate(parts)


def pcm16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """Float samples in [-1, 1], shape (n,) for mono or (n, channels)."""
    data = pcm16(samples)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1 if data.ndim == 1 else data.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(data.tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Returns (samples with shape (channels, n) scaled to [-1, 1], rate). 16-bit PCM only."""
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2, f"{path}: expected 16-bit PCM, got {8 * wav.getsampwidth()}-bit"
        channels, rate = wav.getnchannels(), wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64) / 32768
    return data.reshape(-1, channels).T, rate


def read_wav_bytes(data: bytes, path: Path) -> tuple[np.ndarray, int]:
    path.write_bytes(data)
    return read_wav(path)


def sox_to_ulaw(wav: Path, out: Path) -> Path:
    """Raw 8 kHz mono µ-law, as SIPp's ``rtp_stream`` plays it (it does not read WAV headers)."""
    subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-t", "ul", str(out)], check=True, capture_output=True)
    return out


def ulaw_file(directory: Path, name: str, samples: np.ndarray) -> Path:
    """Write ``samples`` (8 kHz float) as ``name``.wav and, through sox, ``name``.ulaw; returns the .ulaw."""
    wav = write_wav(directory / f"{name}.wav", samples)
    return sox_to_ulaw(wav, directory / f"{name}.ulaw")


def ulaw_decode(data: bytes) -> np.ndarray:
    """G.711 µ-law to float in [-1, 1] (the textbook expansion, independent of the server's tables)."""
    u = ~np.frombuffer(data, dtype=np.uint8)
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent
    value = magnitude - 0x84
    return np.where(sign, -value, value).astype(np.float64) / 32768


# -- speech (talk-off) -------------------------------------------------------------------------------------

# Original text, varied on purpose: digits and number words, lists, questions, long vowels, sibilants.
SPEECH_TEXTS = [
    "Thank you for calling the riverside library. Our opening hours are nine in the morning until "
    "six in the evening, Monday through Saturday. On Sundays we open at noon and close at four.",
    "Hello, I would like to check on my order please. The order number is four seven two, nine nine "
    "one, zero three eight. I placed it last Tuesday and it still says processing.",
    "The weather tomorrow will be mostly cloudy with a chance of showers in the afternoon. Highs near "
    "fifty eight degrees, winds from the south west at ten to fifteen miles per hour.",
    "Could you spell that for me? Sure. It is S as in Sam, M as in Mary, I, T as in Tom, H. Smith. "
    "And the first name is Jonathan, with an H after the T.",
    "Please listen carefully, as our menu options have changed. For billing questions, say billing. "
    "To report an outage, say outage. For anything else, please stay on the line.",
    "Once upon a time there was a lighthouse keeper who lived alone on a rocky island. Every night "
    "he climbed one hundred and twelve steps to light the great lamp at the top of the tower.",
    "Yes, yes, that's right. No, not the blue one, the green one. Hmm, let me think. Oooh, I see what "
    "you mean now. Well, actually, I'm not so sure about that, to be honest.",
    "My address is one thousand two hundred and thirty four Maple Avenue, apartment six B, Springfield, "
    "and the postal code is nine oh two one oh. My phone number ends in five five five one.",
    "The quarterly results were better than expected. Revenue grew by eleven percent, while costs fell "
    "slightly, mainly because of lower shipping prices and fewer returns over the holidays.",
    "Ahhh. Eeeee. Ooooo. Mmmmm. Laaa laaa laaa. Singing a long vowel can look like a pure tone, so "
    "here is some sustained humming and singing: la la la la, do re mi fa so la ti do.",
    "I'm calling because my internet keeps dropping every few minutes. I already restarted the router "
    "twice and unplugged it for thirty seconds, but the little light keeps blinking orange.",
    "Sixty six, seventy seven, eighty eight, ninety nine. Star, pound, hash, zero, one, two, three. "
    "Press one for sales, press two for support, press nine to hear these options again.",
    "She sells seashells by the seashore. Peter Piper picked a peck of pickled peppers. How much wood "
    "would a woodchuck chuck if a woodchuck could chuck wood?",
    "Good afternoon, this is a reminder about your dental appointment on Thursday the fourteenth at "
    "half past two. If you need to reschedule, please call us back at your earliest convenience.",
]

# (voice, words per minute, pitch 0-99): men, women, accents, slow and fast.
SPEECH_VOICES = [
    ("en", 160, 50), ("en+f3", 175, 65), ("en-us", 150, 40), ("en-gb-scotland+m3", 185, 45),
    ("en+f2", 140, 75), ("en-029", 170, 55), ("en-gb-x-rp+f4", 200, 60), ("en-us+klatt", 165, 35),
    ("en+Annie", 155, 70), ("en+Denis", 190, 30), ("en-us+f5", 145, 80), ("en+m7", 180, 25),
]


def espeak_clip(text: str, voice: str, wpm: int, pitch: int, directory: Path, name: str) -> np.ndarray:
    """One utterance, resampled to 8 kHz by sox and peak-normalised to -3 dBFS (loud, as talk-off tests want)."""
    raw = directory / f"{name}.espeak.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(raw), text],
                   check=True, capture_output=True)
    resampled = directory / f"{name}.8k.wav"
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(resampled), "gain", "-n", "-3"],
                   check=True, capture_output=True)
    samples, rate = read_wav(resampled)
    assert rate == RATE
    return samples[0]


def speech_corpus(directory: Path, seconds: float) -> np.ndarray:
    """At least ``seconds`` of speech: every text in turn, each time with a different voice and speed."""
    parts: list[np.ndarray] = []
    total, i = 0, 0
    while total < seconds * RATE:
        text = SPEECH_TEXTS[i % len(SPEECH_TEXTS)]
        voice, wpm, pitch = SPEECH_VOICES[(i * 5) % len(SPEECH_VOICES)]
        clip = espeak_clip(text, voice, wpm, pitch, directory, f"speech{i:02d}")
        parts += [clip, silence(0.25)]
        total += len(clip) + int(0.25 * RATE)
        i += 1
    return np.concatenate(parts)


# -- RTP and pcap (SIPp's play_pcap_audio) -------------------------------------------------------------------

def rtp_packet(payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes,
               marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF,
                       timestamp & 0xFFFFFFFF, ssrc) + payload


def rtp_payload(packet: bytes) -> bytes:
    """The payload of an RTP packet, past CSRCs and any header extension, without padding."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        offset += 4 + 4 * int.from_bytes(packet[offset + 2:offset + 4], "big")
    end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
    return packet[offset:end]


def rfc4733_payload(digit: str, duration: int, end: bool = False, volume: int = 10) -> bytes:
    return struct.pack("!BBH", RFC4733_EVENTS[digit], (0x80 if end else 0) | volume, duration)


PCAP_RTP_PORT = 6000  # SIPp replays to the SDP's port + (this packet's port - the lowest port in the file)
PCAP_RTCP_PORT = PCAP_RTP_PORT + 1


def write_pcap(path: Path, datagrams: list[tuple[float, bytes]] | list[tuple[float, bytes, int]]) -> Path:
    """A classic Ethernet pcap of UDP datagrams (time, payload[, destination port]); SIPp rewrites addresses
    and ports on replay, keeping the offset from the lowest destination port (so 6001 goes to RTCP)."""
    assert all(len(d[1]) <= 1472 for d in datagrams), "SIPp refuses pcap packets over 1500 bytes"
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for seq, (at, payload, *port) in enumerate(datagrams):
        dst_port = port[0] if port else PCAP_RTP_PORT
        udp = struct.pack("!HHHH", dst_port - 1000, dst_port, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq & 0xFFFF, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
        checksum = sum(struct.unpack("!10H", ip))
        checksum = (checksum & 0xFFFF) + (checksum >> 16)
        ip = ip[:10] + struct.pack("!H", ~((checksum & 0xFFFF) + (checksum >> 16)) & 0xFFFF) + ip[12:]
        frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + udp
        seconds = int(at)
        out += struct.pack("<IIII", seconds, int(round((at - seconds) * 1e6)), len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))
    return path


def dual_dtmf_pcap(path: Path, ulaw: bytes, presses: list[tuple[str, float, float]], event_pt: int,
                   detection_delay_frames: int = 0, ssrc: int = 0x5EED1234) -> Path:
    """One RTP stream as a trunk that sends both kinds of DTMF produces it.

    ``ulaw`` (8 kHz µ-law, already holding the tones) goes out as 20 ms PCMU packets. Each press
    (digit, start, seconds) is also sent as RFC 4733 events on ``event_pt`` in the same SSRC and
    sequence space: the event timestamp is the audio timestamp where the tone begins (RFC 4733
    §2.5.1.2), but like a gateway that must first detect the tone, the first event packet (marker set,
    duration already counting from the tone's start) leaves ``detection_delay_frames`` frames late;
    an update follows every 20 ms while the tone lasts, then three end packets.
    """
    sequence, base_ts = 1000, 80000
    events: dict[int, list[bytes]] = {}  # frame -> RFC 4733 payloads sent right after its audio packet
    event_ts: dict[int, int] = {}
    for digit, start, length in presses:
        first, count = int(round(start * RATE / FRAME)), int(round(length * RATE / FRAME))
        assert 0 <= detection_delay_frames < count
        for frame in range(first + detection_delay_frames, first + count):
            events.setdefault(frame, []).append(rfc4733_payload(digit, (frame - first + 1) * FRAME))
            event_ts[frame] = base_ts + first * FRAME
        for _ in range(3):
            events.setdefault(first + count, []).append(rfc4733_payload(digit, count * FRAME, end=True))
        event_ts[first + count] = base_ts + first * FRAME
    datagrams: list[tuple[float, bytes]] = []
    marked: set[int] = set()
    for frame in range(len(ulaw) // FRAME):
        at = frame * 0.02
        datagrams.append((at, rtp_packet(0, sequence, base_ts + frame * FRAME, ssrc,
                                         ulaw[frame * FRAME:(frame + 1) * FRAME], marker=frame == 0)))
        sequence += 1
        for repeat, payload in enumerate(events.get(frame, [])):
            timestamp = event_ts[frame]
            marker = timestamp not in marked
            marked.add(timestamp)
            datagrams.append((at + 0.001 + 0.002 * repeat, rtp_packet(event_pt, sequence, timestamp, ssrc, payload,
                                                                      marker=marker)))
            sequence += 1
    return write_pcap(path, datagrams)


# -- analysing ---------------------------------------------------------------------------------------------

def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level re a full-scale sine: a sine at -12 dBFS measures -12."""
    return float(20 * np.log10(np.sqrt(2 * np.mean(np.square(samples))) + 1e-12))


def _spectrum(samples: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window)) ** 2
    # Parseval: a sine of amplitude A then sums to A^2 / 2 (its mean power) over its main lobe.
    spectrum *= 2 / (len(samples) * np.sum(window ** 2))
    return np.fft.rfftfreq(len(samples), 1 / rate), spectrum


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    freqs, power = _spectrum(samples, rate)
    return float(freqs[int(np.argmax(power))])


def tone_dbfs(samples: np.ndarray, rate: int, freq: float, width: float = 20.0) -> float:
    """Level of the component at ``freq`` (power within ±width Hz), re a full-scale sine."""
    freqs, power = _spectrum(samples, rate)
    band = np.abs(freqs - freq) <= width
    return float(10 * np.log10(2 * np.sum(power[band]) + 1e-24))


def fft_dtmf_digits(samples: np.ndarray, rate: int = RATE, frame_s: float = 0.048, min_frames: int = 3) -> str:
    """A plain FFT DTMF reader for checking assets: frames of 48 ms, hop 16 ms; a digit needs one row
    and one column tone above -30 dBFS, together holding 80 % of the frame's energy, for ``min_frames``
    frames in a row, and counts again only after a frame without it."""
    size, hop = int(frame_s * rate), int(frame_s * rate) // 3
    if len(samples) < size:
        return ""
    starts = np.arange(0, len(samples) - size + 1, hop)
    frames = samples[starts[:, None] + np.arange(size)]
    window = np.hanning(size)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2 * (2 / (size * np.sum(window ** 2)))
    freqs = np.fft.rfftfreq(size, 1 / rate)
    tones = ROW_FREQS + COL_FREQS
    # Level of each DTMF frequency (power within ±35 Hz) per frame, in dB re a full-scale sine.
    levels = np.stack([10 * np.log10(2 * power[:, np.abs(freqs - f) <= 35].sum(axis=1) + 1e-24) for f in tones], axis=1)
    total = 10 * np.log10(2 * np.mean(np.square(frames), axis=1) + 1e-24)
    rows, cols = np.argmax(levels[:, :4], axis=1), 4 + np.argmax(levels[:, 4:], axis=1)
    found, run, current, last = [], 0, None, None
    for i in range(len(starts)):
        row_db, col_db = levels[i, rows[i]], levels[i, cols[i]]
        pair = 10 * np.log10(10 ** (row_db / 10) + 10 ** (col_db / 10))
        digit = None
        if row_db > -30 and col_db > -30 and pair > total[i] + 10 * np.log10(0.8):
            digit = KEYPAD[rows[i]][cols[i] - 4]
        if digit is not None and digit == current:
            run += 1
        else:
            current, run = digit, 1
        if digit is not None and run == min_frames and last != digit:
            found.append(digit)
            last = digit
        if digit is None:
            last = None
    return "".join(found)


# -- bad input ---------------------------------------------------------------------------------------------

def garbage_rtp(rng: np.random.Generator, ssrc: int, telephone_event_pt: int = 101) -> list[bytes]:
    """Datagrams for an RTP port that a careless parser trips over: truncations, bad versions, lying
    CSRC counts, extension and padding lengths, odd payload sizes, broken RFC 4733 events, RTCP-looking
    payload types, sequence and timestamp jumps, SSRC changes, and random bytes."""
    header = struct.pack("!BBHII", 0x80, 0, 7, 1000, ssrc)
    out = [
        b"", b"\x80", header[:11], b"\x00" * 20,
        b"\x40" + header[1:] + b"\xff" * 160, b"\xc0" + header[1:] + b"\xff" * 160,
        b"\x8f" + header[1:] + b"\x00" * 4,  # 15 CSRCs announced, one present
        b"\x90" + header[1:] + b"\xbe\xde\xff\xff",  # extension of 65535 words, none present
        b"\x90" + header[1:] + b"\xbe\xde",  # extension header cut short
        b"\xa0" + header[1:] + b"\xff" * 10 + b"\x00",  # padding count 0
        b"\xa0" + header[1:] + b"\xff" * 10 + b"\xff",  # padding longer than the packet
        b"\xa0" + header[1:],  # padding bit, nothing to pad
        b"\xbf" + header[1:] + b"\x00" * 8 + b"\x7f",  # every flag, CSRCs and padding overlapping
        header,  # PT 0, empty payload
        header + b"\xff",  # one sample
        header + b"\xff" * 161,  # odd size
        header + bytes(rng.integers(0, 256, 1400, dtype=np.uint8)),  # 175 ms in one packet
        rtp_packet(telephone_event_pt, 8, 1160, ssrc, b""),  # empty event
        rtp_packet(telephone_event_pt, 9, 1160, ssrc, b"\x01"),  # short event
        rtp_packet(telephone_event_pt, 10, 1160, ssrc, b"\x01\x0a\x00"),
        rtp_packet(telephone_event_pt, 11, 1160, ssrc, b"\xff\x3f\x00\x00", marker=True),  # event 255
        rtp_packet(telephone_event_pt, 12, 1160, ssrc, b"\x05\x8a\xff\xff"),  # an end with no start
        rtp_packet(telephone_event_pt, 13, 1160, ssrc, b"\x05\x0a\x00\x00" * 40),  # oversized
        rtp_packet(13, 14, 1320, ssrc, b"\x7f\x00\x00"),  # comfort noise, not offered
        rtp_packet(127, 15, 1480, ssrc, b"\x00" * 40),
        rtp_packet(72, 16, 1640, ssrc, b"\x00" * 40, marker=True),  # reads as RTCP SR (200) on a muxed port
        rtp_packet(77, 17, 1800, ssrc, b"\x00" * 3, marker=True),
    ]
    # Sequence and timestamp chaos, in one stream and across SSRCs.
    for seq, ts in [(0xFFFF, 0xFFFFFF60), (0, 0), (0x8000, 0x80000000), (0x8000, 0x80000000), (1, 0x7FFFFFFF),
                    (0x7FFF, 5), (0xFFFE, 0xFFFFFFFF)]:
        out.append(rtp_packet(0, seq, ts, ssrc, b"\xff" * 160))
    for other in (0, 0xFFFFFFFF, ssrc ^ 1):
        out.append(rtp_packet(0, 100, 16000, other, b"\xff" * 160))
    for _ in range(60):
        out.append(bytes(rng.integers(0, 256, int(rng.integers(0, 1473)), dtype=np.uint8)))
    for _ in range(40):  # valid version bits, random everything else: goes deeper into parsers
        body = bytearray(rng.integers(0, 256, int(rng.integers(12, 300)), dtype=np.uint8))
        body[0] = 0x80 | (body[0] & 0x3F)
        out.append(bytes(body))
    return out


def garbage_rtcp(rng: np.random.Generator, ssrc: int) -> list[bytes]:
    """Datagrams for an RTCP port: lying lengths and counts, truncated blocks, SDES and BYE overruns,
    unknown packet types, broken compounds, and random bytes."""
    def rtcp(count: int, packet_type: int, body: bytes, length: int | None = None, padding: bool = False) -> bytes:
        words = (len(body) + 3) // 4 if length is None else length
        body = body + b"\x00" * (-len(body) % 4)
        return struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | count, packet_type, words) + body

    sender_info = struct.pack("!IIIIII", ssrc, 0xE0000000, 0, 160, 50, 8000)
    report = struct.pack("!IIIIII", 0x12345678, 0x01000005, 7, 3, 0, 0)
    valid_rr = rtcp(1, 201, struct.pack("!I", ssrc) + report)
    out = [
        b"", b"\x80", b"\x80\xc8", b"\x80\xc8\xff\xff", b"\x00" * 8, b"\x40\xc9\x00\x01" + b"\x00" * 4,
        rtcp(31, 200, sender_info),  # 31 report blocks announced, none present
        rtcp(1, 200, sender_info + report[:10]),  # truncated report block
        rtcp(0, 200, sender_info[:8]),  # sender info cut short
        rtcp(2, 201, struct.pack("!I", ssrc) + report),  # RR with one of two blocks
        rtcp(1, 201, struct.pack("!I", ssrc) + report, length=200),  # length past the datagram
        rtcp(0, 201, b"", length=0),
        rtcp(1, 202, struct.pack("!I", ssrc) + b"\x01\xff" + b"cname"),  # SDES item longer than the packet
        rtcp(1, 202, struct.pack("!I", ssrc) + b"\x01\x05cname"),  # no END item
        rtcp(31, 202, struct.pack("!I", ssrc)),  # 31 chunks announced
        rtcp(1, 203, struct.pack("!I", ssrc) + b"\xff" + b"bye"),  # BYE reason overruns
        rtcp(31, 203, struct.pack("!I", ssrc)),
        rtcp(0, 204, struct.pack("!I", ssrc) + b"na"),  # APP without its name
        rtcp(1, 205, b"\x00" * 3), rtcp(1, 206, b""), rtcp(0, 207, struct.pack("!I", ssrc) + b"\x04\x00\xff\xff"),
        rtcp(0, 199, b"\x00" * 8), rtcp(0, 255, b"\x00" * 8),
        rtcp(0, 201, struct.pack("!I", ssrc) + b"\x00\x00\x00\xff", padding=True),  # padding past the packet
        valid_rr + b"\x81\xca\x00\x09garbage",  # compound with a broken tail
        valid_rr + rtcp(1, 202, b"", length=0xFFFF),
        valid_rr * 40,  # a long, valid compound
    ]
    for _ in range(60):
        out.append(bytes(rng.integers(0, 256, int(rng.integers(0, 1473)), dtype=np.uint8)))
    for _ in range(40):
        body = bytearray(rng.integers(0, 256, int(rng.integers(4, 200)), dtype=np.uint8))
        body[0] = 0x80 | (body[0] & 0x3F)
        body[1] = int(rng.integers(192, 224))
        out.append(bytes(body))
    return out


def bad_media_pcap(path: Path, seconds: float, freq: float, garbage_from: float, garbage_until: float,
                   ssrc: int = 0x0BADF00D, seed: int = 4733) -> tuple[Path, int]:
    """A caller's stream of ``freq`` Hz PCMU for ``seconds``, with every datagram of ``garbage_rtp``
    (same source, partly the same SSRC) and ``garbage_rtcp`` (to the RTCP port) spread between
    ``garbage_from`` and ``garbage_until``. Returns the path and the number of valid audio packets."""
    rng = np.random.default_rng(seed)
    u = ulaw_file(path.parent, path.stem + ".audio", sine(freq, seconds, -16.0)).read_bytes()
    frames = len(u) // FRAME
    datagrams: list[tuple[float, bytes, int]] = [
        (i * 0.02, rtp_packet(0, 20000 + i, 40000 + i * FRAME, ssrc, u[i * FRAME:(i + 1) * FRAME], marker=i == 0),
         PCAP_RTP_PORT)
        for i in range(frames)
    ]
    bad = [(d, PCAP_RTP_PORT) for d in garbage_rtp(rng, ssrc)] + [(d, PCAP_RTCP_PORT) for d in garbage_rtcp(rng, ssrc)]
    order = rng.permutation(len(bad))
    step = (garbage_until - garbage_from) / len(bad)
    for slot, index in enumerate(order):
        data, port = bad[index]
        datagrams.append((garbage_from + slot * step + 0.003, data, port))
    datagrams.sort(key=lambda d: d[0])
    return write_pcap(path, datagrams), frames

