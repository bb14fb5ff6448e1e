"""Audio tracks: a real-time paced outgoing track that plays queued utterances, and frame helpers."""

from __future__ import annotations

import asyncio
import fractions
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from .audio import Pcm

__all__ = ["FRAME_SAMPLES", "SAMPLE_RATE", "PacedAudioTrack", "Utterance", "frame_to_mono"]

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_MAX_LAG = 0.2  # seconds behind schedule after which pacing restarts instead of bursting to catch up


@dataclass(eq=False)
class Utterance:
    """One queued buffer of speech; ``started``/``finished`` resolve when its first/last frame left the track."""

    pcm: Pcm
    started: asyncio.Future[None]
    finished: asyncio.Future[None]
    position: int = 0
    interrupted: bool = field(default=False)

    @property
    def duration(self) -> float:
        return len(self.pcm) / SAMPLE_RATE


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class PacedAudioTrack(MediaStreamTrack):
    """An audio track producing 20 ms s16 mono 48 kHz frames in real time.

    Queued utterances (:meth:`play`) are played back to back; in between, the track sends silence. Frames are
    produced only when the RTP sender pulls them, so playback starts once the connection is up.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[Utterance] = deque()
        self._silence: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._start: float | None = None
        self.frames_sent = 0

    @property
    def speaking(self) -> bool:
        """True while an utterance is queued or playing."""
        return bool(self._queue)

    def play(self, pcm: Pcm) -> Utterance:
        """Queue 48 kHz mono int16 ``pcm`` after anything already queued."""
        loop = asyncio.get_running_loop()
        utterance = Utterance(pcm=pcm, started=loop.create_future(), finished=loop.create_future())
        if self.readyState != "live":
            utterance.interrupted = True
            _resolve(utterance.started)
            _resolve(utterance.finished)
        else:
            self._queue.append(utterance)
        return utterance

    def clear(self) -> None:
        """Stop speaking now: drop queued utterances (their futures resolve, marked interrupted)."""
        while self._queue:
            utterance = self._queue.popleft()
            utterance.interrupted = True
            _resolve(utterance.started)
            _resolve(utterance.finished)

    def stop(self) -> None:
        self.clear()
        super().stop()

    def _next_samples(self) -> Pcm:
        chunk = self._silence
        while self._queue:
            utterance = self._queue[0]
            if utterance.position == 0:
                _resolve(utterance.started)
            start = utterance.position
            chunk = utterance.pcm[start : start + FRAME_SAMPLES]
            utterance.position = start + len(chunk)
            if utterance.position >= len(utterance.pcm):
                self._queue.popleft()
                _resolve(utterance.finished)
            if len(chunk) == 0:
                chunk = self._silence
                continue
            if len(chunk) < FRAME_SAMPLES:
                chunk = np.concatenate([chunk, self._silence[: FRAME_SAMPLES - len(chunk)]])
            break
        return chunk

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            wait = self._start + self.frames_sent * FRAME_SAMPLES / SAMPLE_RATE - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -_MAX_LAG:
                # The consumer stalled: restart the schedule rather than burst frames to catch up.
                self._start = loop.time() - self.frames_sent * FRAME_SAMPLES / SAMPLE_RATE
            if self.readyState != "live":
                raise MediaStreamError
        frame = AudioFrame.from_ndarray(self._next_samples().reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.frames_sent * FRAME_SAMPLES
        frame.time_base = _TIME_BASE
        self.frames_sent += 1
        return frame


def frame_to_mono(frame: AudioFrame) -> Pcm:
    """The first channel of an s16 (packed or planar) audio frame as int16 samples."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if channels == 1:
        return np.asarray(data.reshape(-1), dtype=np.int16)
    if frame.format.is_planar:
        return np.asarray(data[0], dtype=np.int16)
    return np.asarray(data.reshape(-1, channels)[:, 0], dtype=np.int16)
