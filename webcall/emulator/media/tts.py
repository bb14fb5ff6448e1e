"""Speech synthesis for the simulated agent: libespeak-ng (bundled by ``espeakng-loader``) through ``ctypes``.

espeak-ng keeps global state and is not thread-safe, so one process-wide :class:`Synthesizer` owns it: every call
into the library runs on a single dedicated worker thread, off the event loop. The library is initialised in
``AUDIO_OUTPUT_SYNCHRONOUS`` mode with a synth callback that collects 16-bit PCM at the library's native rate
(22050 Hz); the result is resampled to 48 kHz mono for WebRTC and cached per (voice, text).
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import wave
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .audio import Pcm, resample

__all__ = ["OUTPUT_RATE", "SpeechSynthesisError", "Synthesizer", "get_synthesizer", "write_wav"]

OUTPUT_RATE = 48000
"""Sample rate of every buffer the synthesizer returns (int16, mono)."""

T = TypeVar("T")

# espeak_AUDIO_OUTPUT, espeakINITIALIZE_*, espeak_POSITION_TYPE, synth flags and parameters (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_EE_OK = 0
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class SpeechSynthesisError(RuntimeError):
    """libespeak-ng could not be loaded or could not speak a phrase."""


class _Espeak:
    """The loaded library. Every method must run on the synthesizer's worker thread."""

    def __init__(self, words_per_minute: int) -> None:
        try:
            import espeakng_loader
        except ImportError as err:
            raise SpeechSynthesisError(
                "The emulator's speech needs the 'espeakng-loader' package: "
                "install the emulator extra with pip install 'dialnexa-webcall[emulator]'."
            ) from err
        lib_path = espeakng_loader.get_library_path()
        try:
            data_path = espeakng_loader.get_data_path()
            self._lib = ctypes.CDLL(lib_path)
        except (OSError, RuntimeError) as err:
            raise SpeechSynthesisError(
                f"libespeak-ng could not be loaded from {lib_path} ({err}); "
                "reinstall the 'espeakng-loader' wheel for this platform."
            ) from err
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int

        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise SpeechSynthesisError(f"espeak_Initialize failed with the data at {data_path}.")
        self.sample_rate = rate
        self._chunks: list[bytes] = []
        # Keep a reference to the C callback for the lifetime of the library.
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self._words_per_minute = words_per_minute
        self._voice: str | None = None

    def _collect(self, wav: Any, numsamples: int, _events: Any) -> int:
        if wav and numsamples > 0:
            self._chunks.append(ctypes.string_at(wav, numsamples * 2))
        return 0  # continue synthesis

    def synth(self, text: str, voice: str) -> Pcm:
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise SpeechSynthesisError(f"espeak-ng has no voice named {voice!r} (try 'en-us').")
            self._lib.espeak_SetParameter(_PARAM_RATE, self._words_per_minute, 0)
            self._voice = voice
        data = text.encode("utf-8") + b"\0"
        self._chunks = []
        err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != _EE_OK:
            raise SpeechSynthesisError(f"espeak_Synth failed with error {err} for {text!r}.")
        pcm = np.frombuffer(b"".join(self._chunks), dtype="<i2").astype(np.int16)
        self._chunks = []
        return pcm


class Synthesizer:
    """Serialized, cached text-to-speech producing 48 kHz mono int16 PCM.

    One instance per process (:func:`get_synthesizer`): espeak-ng has global state. The library is loaded on first
    use, on the worker thread; :meth:`load` does it eagerly so that a missing library fails at startup.
    """

    def __init__(self, *, words_per_minute: int = 170, cache_size: int = 256) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webcall-espeak")
        self._engine: _Espeak | None = None
        self._words_per_minute = words_per_minute
        self._cache: OrderedDict[tuple[str, str], Pcm] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def _engine_on_worker(self) -> _Espeak:
        if self._engine is None:
            self._engine = _Espeak(self._words_per_minute)
        return self._engine

    def _synthesize_on_worker(self, text: str, voice: str) -> Pcm:
        key = (voice, text)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        engine = self._engine_on_worker()
        pcm = resample(engine.synth(text, voice), engine.sample_rate, OUTPUT_RATE)
        pcm.setflags(write=False)
        with self._cache_lock:
            self._cache[key] = pcm
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return pcm

    def cached(self, text: str, voice: str = "en-us") -> Pcm | None:
        """The cached PCM for a phrase, without synthesizing."""
        with self._cache_lock:
            return self._cache.get((voice, text))

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def load(self) -> None:
        """Load and initialise libespeak-ng now; raises :class:`SpeechSynthesisError` when it cannot."""
        await self._run(self._engine_on_worker)

    async def synthesize(self, text: str, voice: str = "en-us") -> Pcm:
        """Speak ``text`` with an espeak-ng ``voice``: read-only int16 PCM, 48 kHz mono."""
        cached = self.cached(text, voice)
        if cached is not None:
            return cached
        return await self._run(self._synthesize_on_worker, text, voice)

    def synthesize_blocking(self, text: str, voice: str = "en-us") -> Pcm:
        """:meth:`synthesize` for synchronous callers (scripts, fixtures); still serialized on the worker."""
        return self._executor.submit(self._synthesize_on_worker, text, voice).result()


_instance: Synthesizer | None = None
_instance_lock = threading.Lock()


def get_synthesizer() -> Synthesizer:
    """The process-wide synthesizer (created on first use)."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = Synthesizer()
        return _instance


def write_wav(path: str | Path, pcm: Pcm, rate: int = OUTPUT_RATE) -> None:
    """Write mono int16 PCM as a WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
