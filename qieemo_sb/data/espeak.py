"""Deterministic speech synthesis with eSpeak NG through ctypes.

The pip package ``espeakng-loader`` ships ``libespeak-ng`` and its data folder;
this module drives the library directly (no subprocess, no system install):
``espeak_Initialize`` in synchronous mode, a Python synth callback that
collects the 16-bit samples, ``espeak_SetVoiceByName`` with ``<accent>+<variant>``
names, ``espeak_SetParameter`` for rate, pitch, pitch range, volume and word
gap, then ``espeak_Synth``. eSpeak renders at 22.05 kHz; the result is
resampled to ``sample_rate`` (16 kHz by default) with a polyphase filter.

Determinism. eSpeak keeps state across calls, so the same text sounds slightly
different depending on what was synthesized before: the pitch-flutter phase,
the "roughness" cycle counter and further static synthesis memories survive
``espeak_Terminate`` / ``espeak_Initialize`` (some clips differ after a
re-initialization). The engine therefore loads a fresh instance of a
private copy of the library for every utterance and unloads it afterwards,
and reseeds eSpeak's noise generator and libc's ``rand`` before each
utterance. A clip then depends only on its text, voice and prosody: the same
call gives identical samples whatever ran before, in any process.
:meth:`EspeakSynthesizer.synthesize` accepts the variants of
:data:`MALE_VARIANTS` and :data:`FEMALE_VARIANTS` only (Klatt, robot and
whisper variants are left out: they do not sound like speech).

Every :class:`EspeakSynthesizer` of a process shares the private library file.

Example
-------
>>> synth = EspeakSynthesizer()
>>> wav = synth.synthesize("Hello there.", voice="en-us+f2")
>>> wav.dtype, wav.ndim, synth.sample_rate
(dtype('float32'), 1, 16000)
>>> 0.3 < len(wav) / synth.sample_rate < 2.0
True
>>> _ = synth.synthesize("Something else first.", voice="en+m3",
...                      prosody=Prosody(rate=240, pitch=80, volume=150))
>>> bool(np.array_equal(wav, synth.synthesize("Hello there.", voice="en-us+f2")))
True
"""

import atexit
import ctypes
import ctypes.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

#: English accents of eSpeak NG (voice identifiers accepted by SetVoiceByName).
#: en-gb-x-gbclan is left out: Whisper base fails on it (WER ~90%, vs 30-60%
#: for these).
ACCENTS = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)

#: Voice variants (``voices/!v``) with a male voice; Klatt, robot and whisper
#: variants are left out (not speech-like).
MALE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "Andy", "Lee", "Denis", "Diogo", "Henrique", "Hugo", "Marco", "Storm",
    "antonio", "michel", "miguel", "sandro", "travis", "victor",
    "Gene", "Jacky", "Mario", "Michael", "Mike", "gustave", "ian", "iven",
    "iven2", "john", "kaukovalta", "marcelo", "norbert", "pablo", "paul",
    "pedro", "quincy", "rob", "robert", "grandpa",
)  # fmt: skip

#: Voice variants with a female voice.
FEMALE_VARIANTS = (
    "f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika",
    "aunty", "belinda", "linda", "steph", "steph2", "steph3", "grandma",
)  # fmt: skip

# espeak_PARAMETER values (speak_lib.h).
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_NOISE_SEED = 1

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class Prosody:
    """eSpeak prosody settings of one utterance (eSpeak's own units).

    Arguments
    ---------
    rate : int
        Speaking rate in words per minute, 80..450 (eSpeak default 175).
    pitch : int
        Base pitch, 0..100 (default 50); maps onto the variant's pitch span.
    pitch_range : int
        Pitch range (intonation excursion), 0..100 (default 50; 0 is monotone).
    volume : int
        Amplitude, 0..200 (default 100).
    word_gap : int
        Extra pause between words in units of 10 ms, 0..50 (default 0).

    Example
    -------
    >>> Prosody(rate=120, pitch=35).rate
    120
    >>> Prosody(rate=20)
    Traceback (most recent call last):
    ...
    ValueError: Prosody.rate=20 is outside 80..450
    """

    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50
    volume: int = 100
    word_gap: int = 0

    _LIMITS = {
        "rate": (80, 450),
        "pitch": (0, 100),
        "pitch_range": (0, 100),
        "volume": (0, 200),
        "word_gap": (0, 50),
    }

    def __post_init__(self):
        for name, (low, high) in self._LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or not low <= value <= high:
                raise ValueError(f"Prosody.{name}={value} is outside {low}..{high}")


class _Engine:
    """A fresh instance of a private copy of libespeak-ng per utterance.

    eSpeak keeps synthesis state in static variables (glottal phase, filter
    and peak memories, ...) that neither ``espeak_Terminate`` nor
    ``espeak_Initialize`` resets, so in one library instance the same call
    gives slightly different samples depending on earlier calls. Each
    utterance therefore runs in a freshly loaded copy of the library (a
    private file, so no other handle in the process keeps it loaded) that is
    unloaded afterwards. A
    probe at start-up checks this (``reproducible``). Not thread-safe.
    """

    def __init__(self):
        import espeakng_loader

        self.data_root = Path(espeakng_loader.get_data_path())
        self.lib_path = _private_copy(Path(espeakng_loader.get_library_path()))
        libc_name = ctypes.util.find_library("c")
        self.libc = ctypes.CDLL(libc_name) if libc_name else None
        self._chunks: List[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # must outlive each library
        self.sample_rate = self._run(None, "en+m3", Prosody())[1]
        self.reproducible = self._check_reproducible()
        if not self.reproducible:
            logger.warning(
                "eSpeak NG output depends on earlier calls here (the library was not "
                "unloaded between utterances): synthesized files are not bit-reproducible"
            )

    def _check_reproducible(self) -> bool:
        probe = ("Is this the same?", "en+m1", Prosody(rate=190, pitch=60))
        first = self.synthesize(*probe)
        self.synthesize("Something else entirely.", "en-us+f3", Prosody(volume=150))
        return bool(np.array_equal(first, self.synthesize(*probe)))

    def _collect(self, wav, num_samples, events):
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def _load(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(str(self.lib_path), mode=getattr(ctypes, "RTLD_LOCAL", 0))
        lib.espeak_Initialize.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
        ]  # fmt: skip
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        return lib

    @staticmethod
    def _unload(lib: ctypes.CDLL) -> None:
        import _ctypes

        if hasattr(_ctypes, "dlclose"):
            _ctypes.dlclose(lib._handle)
        elif hasattr(_ctypes, "FreeLibrary"):  # Windows
            _ctypes.FreeLibrary(lib._handle)

    def _run(self, text: Optional[str], voice: str, prosody: Prosody) -> Tuple[np.ndarray, int]:
        lib = self._load()
        try:
            # Path is the folder that *contains* espeak-ng-data.
            rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_root.parent).encode(), 0
            )
            if rate <= 0:
                raise RuntimeError(
                    f"espeak_Initialize failed ({rate}) with data in {self.data_root}"
                )
            if text is None:
                return np.zeros(0, dtype=np.int16), rate
            lib.espeak_SetSynthCallback(self._callback)
            status = lib.espeak_SetVoiceByName(voice.encode())
            if status != 0:
                raise ValueError(f"eSpeak cannot load voice {voice!r} (error {status})")
            for parameter, value in (
                (_RATE, prosody.rate),
                (_VOLUME, prosody.volume),
                (_PITCH, prosody.pitch),
                (_RANGE, prosody.pitch_range),
                (_WORDGAP, prosody.word_gap),
            ):
                lib.espeak_SetParameter(parameter, int(value), 0)
            # Breath/aspiration noise: reseed both generators eSpeak draws from.
            lib.espeak_ng_SetRandSeed(_NOISE_SEED)
            if self.libc is not None:
                self.libc.srand(_NOISE_SEED)
            self._chunks = []
            data = text.encode("utf-8")
            status = lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE,
                None, None,
            )  # fmt: skip
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed ({status}) on {text!r}")
            chunks, self._chunks = self._chunks, []
            pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
            return pcm, rate
        finally:
            lib.espeak_Terminate()
            self._unload(lib)

    def synthesize(self, text: str, voice: str, prosody: Prosody) -> np.ndarray:
        return self._run(text, voice, prosody)[0]


_ENGINE: Optional[_Engine] = None


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def _private_copy(library: Path) -> Path:
    """Copies the library into a temporary folder removed at exit.

    A private file: no other ``dlopen`` of the packaged library (another user
    of espeakng-loader in this process) can keep our instance loaded.
    """
    root = Path(tempfile.mkdtemp(prefix="qieemo-espeak-"))
    owner = os.getpid()

    def cleanup():
        if os.getpid() == owner:
            shutil.rmtree(root, ignore_errors=True)

    atexit.register(cleanup)
    target = root / f"private-{library.name}"
    shutil.copyfile(library, target)
    return target


def available_variants() -> List[str]:
    """Names of the voice variants in eSpeak's data folder (``voices/!v``).

    Example
    -------
    >>> {"m3", "f2"} <= set(available_variants())
    True
    """
    import espeakng_loader

    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir())


class EspeakSynthesizer:
    """Synthesizes English utterances with eSpeak NG, deterministically.

    Arguments
    ---------
    sample_rate : int
        Output sample rate in Hz (eSpeak renders at 22050 Hz; 16000 default).

    Example
    -------
    >>> synth = EspeakSynthesizer(sample_rate=16000)
    >>> wav = synth.synthesize("Yes.", voice="en+m3", prosody=Prosody(rate=200))
    >>> wav.shape[0] > 1000, float(np.abs(wav).max()) <= 1.0
    (True, True)
    """

    def __init__(self, *, sample_rate: int = 16000):
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._engine = _engine()
        self.native_sample_rate = self._engine.sample_rate
        known = set(available_variants())
        self._variants: Dict[str, bool] = {v: v in known for v in MALE_VARIANTS + FEMALE_VARIANTS}

    def synthesize(self, text: str, *, voice: str, prosody: Prosody = Prosody()) -> np.ndarray:
        """Returns the waveform of ``text``.

        Arguments
        ---------
        text : str
            The words to say (punctuation shapes the intonation).
        voice : str
            ``<accent>+<variant>``, accent from :data:`ACCENTS`, variant from
            :data:`MALE_VARIANTS` or :data:`FEMALE_VARIANTS`.
        prosody : Prosody
            Rate, pitch, pitch range, volume and word gap.

        Returns
        -------
        numpy.ndarray
            float32, shape ``[samples]`` at ``self.sample_rate``, in [-1, 1].
        """
        accent, _, variant = voice.partition("+")
        if accent not in ACCENTS:
            raise ValueError(f"unknown accent {accent!r} in voice {voice!r}: use {ACCENTS}")
        if not self._variants.get(variant, False):
            raise ValueError(
                f"variant {variant!r} of voice {voice!r} is not one of "
                "MALE_VARIANTS or FEMALE_VARIANTS"
            )
        pcm = self._engine.synthesize(text, voice, prosody)
        wav = pcm.astype(np.float32) / 32768.0
        if self.native_sample_rate != self.sample_rate and wav.size:
            from scipy.signal import resample_poly

            g = gcd(self.sample_rate, self.native_sample_rate)
            wav = resample_poly(wav, self.sample_rate // g, self.native_sample_rate // g).astype(
                np.float32
            )
            np.clip(wav, -1.0, 1.0, out=wav)
        return wav
