"""Rough transcription of caller turns with pocketsphinx (its wheel bundles an English model).

The decoder is not thread-safe and takes a moment to load, so one process-wide :class:`Transcriber` owns it and runs
every decode on a single worker thread. Transcription is best effort: any failure yields an empty string.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .audio import Pcm, resample

__all__ = ["STT_RATE", "Transcriber", "get_transcriber"]

STT_RATE = 16000
log = logging.getLogger("webcall.emulator.media")


class Transcriber:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webcall-stt")
        self._decoder: Any = None

    def _transcribe_on_worker(self, pcm: Pcm, rate: int) -> str:
        if self._decoder is None:
            from pocketsphinx import Decoder

            self._decoder = Decoder(samprate=STT_RATE, loglevel="FATAL")
        audio = resample(pcm, rate, STT_RATE)
        decoder = self._decoder
        decoder.start_utt()
        decoder.process_raw(audio.tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return str(hyp.hypstr).strip() if hyp is not None else ""

    async def transcribe(self, pcm: Pcm, rate: int, *, call_id: str = "-") -> str:
        """Words heard in ``pcm`` (int16 mono at ``rate``); empty when nothing was recognised or decoding failed."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._transcribe_on_worker, pcm, rate)
        except Exception:
            log.warning("call %s: transcription failed", call_id, exc_info=True)
            return ""


_instance: Transcriber | None = None
_instance_lock = threading.Lock()


def get_transcriber() -> Transcriber:
    """The process-wide transcriber (created on first use; the model loads on the first turn)."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = Transcriber()
        return _instance
