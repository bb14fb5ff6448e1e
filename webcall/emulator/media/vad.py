"""Caller turn detection by energy with hysteresis, over the 20 ms frames of the incoming track.

Levels are RMS relative to full scale (0.0 silence .. 1.0 a full-scale square wave). A turn starts once the caller
has been above the threshold for ``start_ms`` (short dips under ``gap_ms`` do not reset the count) and ends after
``end_ms`` of continuous quiet; its audio (with a little pre-roll) is kept for transcription.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .audio import Pcm

__all__ = ["CallerTurn", "TurnDetector", "TurnSettings", "rms"]


@dataclass(frozen=True, kw_only=True)
class TurnSettings:
    threshold: float = 0.02
    """Speech threshold, RMS relative to full scale (0.02 ≈ -34 dBFS)."""
    start_ms: float = 200.0
    end_ms: float = 700.0
    gap_ms: float = 300.0
    preroll_ms: float = 300.0
    max_turn_s: float = 20.0
    recent_ms: float = 300.0


@dataclass(frozen=True)
class CallerTurn:
    audio: Pcm  # int16 mono at the detector's sample rate
    sample_rate: int
    started_at: float
    ended_at: float

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


def rms(samples: Pcm) -> float:
    """RMS of int16 samples relative to full scale."""
    if samples.size == 0:
        return 0.0
    x = samples.astype(np.float32)
    return float(np.sqrt(np.dot(x, x) / x.size)) / 32768.0


class TurnDetector:
    """Feed mono int16 frames with their arrival time; :meth:`feed` returns a :class:`CallerTurn` when one ends."""

    def __init__(self, settings: TurnSettings | None = None, sample_rate: int = 48000) -> None:
        self.settings = settings or TurnSettings()
        self.sample_rate = sample_rate
        self.frames = 0
        self.in_turn = False
        self.first_frame_at: float | None = None
        self.last_voice_at: float | None = None
        self._voiced_ms = 0.0
        self._quiet_ms = 0.0
        self._turn_started_at = 0.0
        self._preroll: deque[Pcm] = deque()
        self._preroll_samples = 0
        self._turn: list[Pcm] = []
        self._turn_samples = 0
        self._recent: deque[tuple[float, int]] = deque()  # (sum of squares, samples)
        self._recent_samples = 0

    @property
    def rms_recent(self) -> float:
        """RMS over the last ``recent_ms`` of caller audio (relative to full scale)."""
        if self._recent_samples == 0:
            return 0.0
        return math.sqrt(sum(s for s, _ in self._recent) / self._recent_samples) / 32768.0

    def silent_for(self, now: float) -> float | None:
        """Seconds since the caller was last above the threshold (since the first frame if never); None before."""
        since = self.last_voice_at if self.last_voice_at is not None else self.first_frame_at
        return None if since is None else max(0.0, now - since)

    def feed(self, samples: Pcm, now: float) -> CallerTurn | None:
        s = self.settings
        n = samples.size
        if n == 0:
            return None
        self.frames += 1
        if self.first_frame_at is None:
            self.first_frame_at = now
        x = samples.astype(np.float32)
        energy = float(np.dot(x, x))
        self._recent.append((energy, n))
        self._recent_samples += n
        recent_max = int(self.sample_rate * s.recent_ms / 1000)
        while self._recent_samples - self._recent[0][1] >= recent_max:
            self._recent_samples -= self._recent.popleft()[1]
        level = math.sqrt(energy / n) / 32768.0
        frame_ms = 1000.0 * n / self.sample_rate
        voiced = level >= s.threshold
        if voiced:
            self.last_voice_at = now

        if not self.in_turn:
            self._preroll.append(samples)
            self._preroll_samples += n
            keep = int(self.sample_rate * (s.preroll_ms + s.start_ms + s.gap_ms) / 1000)
            while self._preroll_samples - self._preroll[0].size >= keep:
                self._preroll_samples -= self._preroll.popleft().size
            if voiced:
                self._voiced_ms += frame_ms
                self._quiet_ms = 0.0
            else:
                self._quiet_ms += frame_ms
                if self._quiet_ms > s.gap_ms:
                    self._voiced_ms = 0.0
            if self._voiced_ms >= s.start_ms:
                self.in_turn = True
                self._turn_started_at = now - self._preroll_samples / self.sample_rate
                self._turn = list(self._preroll)
                self._turn_samples = self._preroll_samples
                self._preroll.clear()
                self._preroll_samples = 0
                self._quiet_ms = 0.0
            return None

        if self._turn_samples < s.max_turn_s * self.sample_rate:
            self._turn.append(samples)
            self._turn_samples += n
        self._quiet_ms = 0.0 if voiced else self._quiet_ms + frame_ms
        if self._quiet_ms < s.end_ms and self._turn_samples < s.max_turn_s * self.sample_rate:
            return None
        turn = CallerTurn(
            audio=np.concatenate(self._turn),
            sample_rate=self.sample_rate,
            started_at=self._turn_started_at,
            ended_at=now,
        )
        self.in_turn = False
        self._turn = []
        self._turn_samples = 0
        self._voiced_ms = 0.0
        self._quiet_ms = 0.0
        return turn
