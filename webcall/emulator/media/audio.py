"""PCM helpers shared by speech synthesis, the tracks and transcription (int16 mono numpy arrays)."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt

__all__ = ["Pcm", "resample"]

Pcm = npt.NDArray[np.int16]


def resample(pcm: Pcm, rate: int, to_rate: int) -> Pcm:
    """int16 mono at ``rate`` → int16 mono at ``to_rate`` (libswresample through PyAV)."""
    if rate == to_rate or pcm.size == 0:
        return pcm
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    frame.pts = 0
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to_rate)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.int16) if out else np.zeros(0, dtype=np.int16)
