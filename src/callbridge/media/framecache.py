"""Encoded frames of shared audio, made once per codec instead of once per call and tick.

Every caller in an IVR menu hears the same few prompts, and every held caller
the same music: the PCM buffers are shared (the prompt cache, the hold-music
cache, the tone tables), so the encoded packets can be too. A stream whose
codec keeps no state between frames (G.711, L16) asks a source for the
payload of the frame it just read; the first stream to play a frame encodes
it and every later one gets the same bytes. Stateful codecs (G.722's ADPCM)
never use this: their output depends on what the call sent before.

Only read-only buffers are shared (the prompt cache, the tone tables and the
built-in hold music make theirs read-only): a buffer that can still change
could go stale. A buffer's frames live as long as the buffer does (a weak
reference drops them with it), and only frames someone played are encoded.
"""

from __future__ import annotations

import weakref

from .codecs.base import AudioCodec, CodecFactory, PcmArray

# Codecs without state between frames: a frame encodes to the same bytes whatever came before.
STATELESS_CODECS = frozenset({"PCMU", "PCMA", "L16"})

NOT_A_FRAME = -1  # a source's last read was not one whole frame of its buffer (see FramePayloads.payload)


class BufferFrames:
    """One buffer's frames for one codec and frame size, encoded when first asked for.

    It keeps no reference to the buffer (that would keep it alive forever):
    the source passes its buffer with each request.
    """

    __slots__ = ("_frame", "_codec", "_payloads")

    def __init__(self, samples: int, frame_samples: int, codec: AudioCodec) -> None:
        self._frame = frame_samples
        self._codec = codec
        self._payloads: list[bytes | None] = [None] * (samples // frame_samples)

    def payload(self, pcm: PcmArray, start: int) -> bytes | None:
        """The frame of ``pcm`` that begins at sample ``start``; None unless it is a whole, aligned one."""
        index, offset = divmod(start, self._frame)
        if offset or not 0 <= index < len(self._payloads):
            return None
        payload = self._payloads[index]
        if payload is None:
            payload = self._payloads[index] = self._codec.encode(pcm[start:start + self._frame])
        return payload


class FramePayloads:
    """The encoded frames of every shared buffer, for one stateless codec and frame size:
    streams with the same codec and frame size send identical packets for identical PCM."""

    def __init__(self, codec_name: str, frame_samples: int, codec: AudioCodec) -> None:
        if codec_name not in STATELESS_CODECS:
            raise ValueError(f"{codec_name} keeps state between frames: its frames cannot be shared")
        self.frame_samples = frame_samples
        self._codec = codec
        self._buffers: dict[int, BufferFrames] = {}

    def frames(self, pcm: PcmArray) -> BufferFrames | None:
        """``pcm``'s frames (made on first use, dropped when ``pcm`` is garbage-collected);
        None for a writable buffer, which could change after its frames were encoded."""
        key = id(pcm)
        frames = self._buffers.get(key)
        if frames is None:
            if pcm.flags.writeable:
                return None
            frames = self._buffers[key] = BufferFrames(len(pcm), self.frame_samples, self._codec)
            # id() is only unique while the buffer lives: forget its frames with it.
            weakref.finalize(pcm, self._buffers.pop, key, None)
        return frames

    def payload(self, pcm: PcmArray, start: int) -> bytes | None:
        """The encoded frame of ``pcm`` at ``start``, or None (see :meth:`BufferFrames.payload`)."""
        if start < 0:
            return None
        frames = self.frames(pcm)
        return None if frames is None else frames.payload(pcm, start)

    @property
    def buffers(self) -> int:
        return len(self._buffers)


_SHARED: dict[tuple[str, int], FramePayloads] = {}


def shared_payloads(codec_name: str, frame_samples: int, codec: CodecFactory) -> FramePayloads | None:
    """The process-wide cache for this codec and frame size (with its own ``codec()``);
    None for a codec with state."""
    if codec_name not in STATELESS_CODECS:
        return None
    key = (codec_name, frame_samples)
    payloads = _SHARED.get(key)
    if payloads is None:
        payloads = _SHARED[key] = FramePayloads(codec_name, frame_samples, codec())
    return payloads
