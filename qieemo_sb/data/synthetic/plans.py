"""Corpus sizes, speakers and the plan of every clip (text, voice, prosody, label), deterministic for a seed."""

import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Dict, List, Sequence, Tuple

import numpy as np

from qieemo_sb.data.espeak import (
    ACCENTS,
    FEMALE_VARIANTS,
    MALE_VARIANTS,
    Prosody,
)
from qieemo_sb.data.synthetic.vocabulary import (
    CATEGORY_NAMES,
    COMMON_WEIGHTS,
    KEPT_EMOTIONAL,
    MODE_CYCLE,
    PROSODY_PROFILES,
    RARE_LABELS,
    VAD_MEANS,
    ProsodyProfile,
    emotional_sentence,
    libri_sentence,
    neutral_sentence,
    transcript_words,
)


SAMPLE_RATE = 16000
#: Bump when the generator's output changes for the same options.
GENERATOR_VERSION = 1
LIBRI_SPLITS = ("train-clean-100", "dev-clean", "test-clean")
IEMOCAP_ROOT = "IEMOCAP_full_release"
LIBRI_ROOT = "LibriSpeech"
NOISE_STD = 10 ** (-60 / 20)


@dataclass(frozen=True)
class CorpusSize:
    """Sizes of both corpora.

    Arguments
    ---------
    libri_train_speakers : int
        Speakers of train-clean-100.
    libri_chapters_per_speaker : int
        Chapters per train speaker.
    libri_utts_per_chapter : int
        Utterances per train chapter.
    libri_eval_speakers : int
        Speakers of dev-clean and of test-clean (each, one chapter each).
    libri_eval_utts_per_speaker : int
        Utterances per dev/test speaker.
    iemocap_dialogs_per_session : int
        Dialogs per session.
    iemocap_turns_per_dialog : int
        Turns per dialog.
    """

    libri_train_speakers: int
    libri_chapters_per_speaker: int
    libri_utts_per_chapter: int
    libri_eval_speakers: int
    libri_eval_utts_per_speaker: int
    iemocap_dialogs_per_session: int
    iemocap_turns_per_dialog: int

    def scaled(self, scale: float) -> "CorpusSize":
        """Multiplies the utterances per chapter/speaker and the turns per
        dialog by ``scale`` (speaker and dialog counts stay).

        Example
        -------
        >>> SIZES["small"].scaled(2.0).iemocap_turns_per_dialog
        50
        """
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")

        def mul(n: int) -> int:
            return max(1, int(round(n * scale)))

        return replace(
            self,
            libri_utts_per_chapter=mul(self.libri_utts_per_chapter),
            libri_eval_utts_per_speaker=mul(self.libri_eval_utts_per_speaker),
            iemocap_turns_per_dialog=mul(self.iemocap_turns_per_dialog),
        )


#: Named sizes: ``tiny`` for tests (seconds), ``small`` for the demo.
SIZES = {
    "tiny": CorpusSize(6, 1, 4, 2, 3, 2, 6),
    "small": CorpusSize(60, 2, 17, 8, 20, 8, 25),
}


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: an eSpeak voice and its neutral prosody."""

    speaker_id: str
    gender: str
    voice: str
    pitch: float
    rate: float
    pitch_range: float
    volume: float
    expressiveness: float


@dataclass(frozen=True)
class Clip:
    """One utterance to render.

    Arguments
    ---------
    path : str
        Output path relative to the output folder.
    text : str
        What eSpeak says (with punctuation).
    voice : str
        eSpeak voice name ``accent+variant``.
    prosody : Prosody
        eSpeak prosody.
    lead, tail : float
        Silence before / after the speech, seconds.
    noise_seed : int
        Seed of the noise floor.
    """

    path: str
    text: str
    voice: str
    prosody: Prosody
    lead: float
    tail: float
    noise_seed: int


@dataclass(frozen=True)
class LibriUtterance:
    """A planned LibriSpeech utterance (``words``: its transcript line)."""

    split: str
    speaker: str
    chapter: str
    utt_id: str
    words: str
    clip: Clip


@dataclass(frozen=True)
class IemocapTurn:
    """A planned IEMOCAP turn.

    Arguments
    ---------
    session : int
        1..5.
    dialog : str
        E.g. ``Ses03M_impro05a``.
    utt_id : str
        E.g. ``Ses03M_impro05a_F002``.
    gender : str
        ``F`` or ``M``: the speaker is ``Ses0<session><gender>``.
    label : str
        The release label (one of :data:`LABELS`).
    mode : str
        Emotion carrier: ``both``, ``prosody``, ``wording``, ``neutral``
        (neu, oth) or ``mixed`` (xxx).
    wording_class, prosody_class : str
        Classes whose wording / prosody the turn uses.
    gap : float
        Silence before the turn in its dialog, seconds.
    annotations : tuple
        (categorical lines, attribute lines) of the label file.
    vad : tuple
        The [v, a, d] of the turn line.
    clip : Clip
        What to render.
    """

    session: int
    dialog: str
    utt_id: str
    gender: str
    label: str
    mode: str
    wording_class: str
    prosody_class: str
    gap: float
    annotations: Tuple[Tuple[str, ...], Tuple[str, ...]]
    vad: Tuple[float, float, float]
    clip: Clip = field(repr=False)


# --------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------
def _voice_pool(seed: int) -> Dict[str, List[str]]:
    rng = np.random.default_rng([seed, 0])
    pools = {}
    for gender, variants in (("F", FEMALE_VARIANTS), ("M", MALE_VARIANTS)):
        voices = [f"{a}+{v}" for a in ACCENTS for v in variants]
        order = rng.permutation(len(voices))
        pools[gender] = [voices[i] for i in order]
    return pools


def _make_speaker(speaker_id: str, gender: str, voice: str, rng: np.random.Generator) -> Speaker:
    return Speaker(
        speaker_id=speaker_id,
        gender=gender,
        voice=voice,
        pitch=float(rng.uniform(35, 60)),
        rate=float(rng.uniform(150, 185)),
        pitch_range=float(rng.uniform(35, 55)),
        volume=float(rng.uniform(55, 75)),
        expressiveness=float(rng.uniform(0.75, 1.0)),
    )


def _speakers(size: CorpusSize, seed: int) -> Tuple[Dict[str, Speaker], Dict[str, List[Speaker]]]:
    """IEMOCAP actors (``Ses01F``...) and LibriSpeech speakers per split."""
    pools = _voice_pool(seed)
    taken = {"F": 0, "M": 0}
    rng = np.random.default_rng([seed, 1])

    def next_voice(gender: str) -> str:
        if taken[gender] >= len(pools[gender]):
            raise ValueError(f"not enough distinct {gender} voices ({len(pools[gender])})")
        voice = pools[gender][taken[gender]]
        taken[gender] += 1
        return voice

    actors = {}
    for session in range(1, 6):
        for gender in ("F", "M"):
            sid = f"Ses{session:02d}{gender}"
            actors[sid] = _make_speaker(sid, gender, next_voice(gender), rng)
    counts = {
        "test-clean": size.libri_eval_speakers,
        "dev-clean": size.libri_eval_speakers,
        "train-clean-100": size.libri_train_speakers,
    }
    total = sum(counts.values())
    ids = sorted(int(i) for i in rng.choice(np.arange(19, 9000), size=total, replace=False))
    id_order = rng.permutation(total)
    libri: Dict[str, List[Speaker]] = {}
    k = 0
    for split in ("test-clean", "dev-clean", "train-clean-100"):
        libri[split] = []
        for j in range(counts[split]):
            gender = "F" if j % 2 == 0 else "M"
            sid = str(ids[id_order[k]])
            k += 1
            libri[split].append(_make_speaker(sid, gender, next_voice(gender), rng))
        libri[split].sort(key=lambda s: int(s.speaker_id))
    return actors, libri


def _clamp(x: float, low: int, high: int) -> int:
    return int(min(high, max(low, round(x))))


def _prosody(
    speaker: Speaker,
    profile: ProsodyProfile,
    rng: np.random.Generator,
    jitter: Tuple[float, float, float, float],
) -> Prosody:
    e = speaker.expressiveness
    j_rate, j_pitch, j_range, j_vol = jitter
    return Prosody(
        rate=_clamp(speaker.rate * profile.rate**e * math.exp(rng.normal(0, j_rate)), 80, 450),
        pitch=_clamp(speaker.pitch + e * profile.pitch + rng.normal(0, j_pitch), 0, 100),
        pitch_range=_clamp(
            speaker.pitch_range + e * profile.pitch_range + rng.normal(0, j_range), 0, 100
        ),
        volume=_clamp(speaker.volume * profile.volume**e * math.exp(rng.normal(0, j_vol)), 0, 200),
        word_gap=int(profile.word_gap),
    )


def _noise_seed(seed: int, utt_id: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(utt_id.encode())) % (2**63)


def plan_librispeech(*, size: CorpusSize, seed: int) -> List[LibriUtterance]:
    """The LibriSpeech utterances that :func:`~qieemo_sb.data.synthetic.writer.generate` renders, in order.

    Arguments
    ---------
    size : CorpusSize
        Corpus sizes.
    seed : int
        Seed of every random choice.

    Returns
    -------
    list of LibriUtterance
        Sorted by split, speaker, chapter, utterance.

    Example
    -------
    >>> utts = plan_librispeech(size=SIZES["tiny"], seed=0)
    >>> len(utts), sorted({u.split for u in utts})
    (36, ['dev-clean', 'test-clean', 'train-clean-100'])
    >>> utts[0].utt_id.count("-"), utts[0].words == utts[0].words.upper()
    (2, True)
    """
    _, speakers = _speakers(size, seed)
    rng = np.random.default_rng([seed, 2])
    n_chapters_total = (
        size.libri_train_speakers * size.libri_chapters_per_speaker + 2 * size.libri_eval_speakers
    )
    chapter_ids = iter(
        int(c) for c in rng.choice(np.arange(1000, 300000), size=n_chapters_total, replace=False)
    )
    plan = []
    for split in LIBRI_SPLITS:
        if split == "train-clean-100":
            n_chapters, n_utts = size.libri_chapters_per_speaker, size.libri_utts_per_chapter
        else:
            n_chapters, n_utts = 1, size.libri_eval_utts_per_speaker
        for spk in speakers[split]:
            chapters = sorted(next(chapter_ids) for _ in range(n_chapters))
            for chapter in chapters:
                for i in range(n_utts):
                    utt_id = f"{spk.speaker_id}-{chapter}-{i:04d}"
                    text = libri_sentence(rng)
                    prosody = _prosody(spk, PROSODY_PROFILES["neu"], rng, (0.06, 3, 6, 0.1))
                    clip = Clip(
                        path=f"{LIBRI_ROOT}/{split}/{spk.speaker_id}/{chapter}/{utt_id}.flac",
                        text=text,
                        voice=spk.voice,
                        prosody=prosody,
                        lead=float(rng.uniform(0.05, 0.3)),
                        tail=float(rng.uniform(0.05, 0.3)),
                        noise_seed=_noise_seed(seed, utt_id),
                    )
                    plan.append(
                        LibriUtterance(
                            split,
                            spk.speaker_id,
                            str(chapter),
                            utt_id,
                            transcript_words(text),
                            clip,
                        )
                    )
    return plan


def _dialog_names(session: int, n_dialogs: int) -> List[str]:
    names = []
    impro_indices = [i for i in range(n_dialogs) if i % 2 == 0]
    for i in range(n_dialogs):
        lead = "F" if (i // 2 + session) % 2 == 1 else "M"
        if i % 2 == 0:
            names.append(f"Ses{session:02d}{lead}_impro{i // 2 + 1:02d}")
        else:
            k = i // 2
            names.append(f"Ses{session:02d}{lead}_script{k % 3 + 1:02d}_{k // 3 + 1}")
    if session == 3:
        # Real release: Ses03M_impro05a/b hold turns of both actors.
        names[impro_indices[-1]] = "Ses03M_impro05a"
        if len(impro_indices) > 1:
            names[impro_indices[-2]] = "Ses03M_impro05b"
    return names


def _session_labels(session: int, n_turns: int, rng: np.random.Generator) -> List[str]:
    if n_turns < 8:
        raise ValueError(f"IEMOCAP sessions need at least 8 turns, got {n_turns}")
    n_rare = max(1, int(round(0.05 * n_turns)))
    n_common = n_turns - n_rare
    raw = {k: w * n_common for k, w in COMMON_WEIGHTS.items()}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    by_remainder = sorted(raw, key=lambda k: (-(raw[k] - counts[k]), list(raw).index(k)))
    for k in by_remainder[: n_common - sum(counts.values())]:
        counts[k] += 1
    labels = [k for k in COMMON_WEIGHTS for _ in range(counts[k])]
    labels += [RARE_LABELS[(session - 1 + i) % len(RARE_LABELS)] for i in range(n_rare)]
    return [labels[i] for i in rng.permutation(len(labels))]


def _annotations(
    label: str, vad_class: str, rng: np.random.Generator, self_letter: str, disagree: Sequence[str]
) -> Tuple[Tuple[str, ...], Tuple[str, ...], Tuple[float, float, float]]:
    evaluators = sorted(rng.choice(["E1", "E2", "E3", "E4"], size=3, replace=False).tolist())
    cat_lines = []
    for i, ev in enumerate(evaluators + [f"{self_letter}1"]):
        if label == "xxx":
            cat = CATEGORY_NAMES[disagree[i % len(disagree)]]
        elif rng.random() < 0.2 and label != "oth":
            cat = CATEGORY_NAMES[label] + "; " + CATEGORY_NAMES["neu" if label != "neu" else "fru"]
        else:
            cat = CATEGORY_NAMES[label]
        cat_lines.append(f"C-{ev}:\t{cat};\t()")
    attr_lines, ratings = [], []
    for ev in evaluators[:2] + [f"{self_letter}1"]:
        r = [int(min(5, max(1, round(m + rng.normal(0, 0.6))))) for m in VAD_MEANS[vad_class]]
        if ev.startswith("E"):
            ratings.append(r)
        attr_lines.append(f"A-{ev}:\tval {r[0]}; act {r[1]}; dom  {r[2]};\t()")
    vad = tuple(float(np.mean([r[k] for r in ratings])) for k in range(3))
    return tuple(cat_lines), tuple(attr_lines), vad


def plan_iemocap(*, size: CorpusSize, seed: int) -> List[IemocapTurn]:
    """The IEMOCAP turns that :func:`~qieemo_sb.data.synthetic.writer.generate` renders, in order.

    Arguments
    ---------
    size : CorpusSize
        Corpus sizes.
    seed : int
        Seed of every random choice.

    Returns
    -------
    list of IemocapTurn
        By session, dialog, then time.

    Example
    -------
    >>> turns = plan_iemocap(size=SIZES["tiny"], seed=0)
    >>> from qieemo_sb.data.synthetic.vocabulary import LABELS
    >>> sorted({t.label for t in turns}) == sorted(LABELS)
    True
    >>> [t.dialog for t in turns if t.dialog.endswith("a")][:1]
    ['Ses03M_impro05a']
    """
    actors, _ = _speakers(size, seed)
    rng = np.random.default_rng([seed, 3])
    plan = []
    n_dialogs, n_per_dialog = size.iemocap_dialogs_per_session, size.iemocap_turns_per_dialog
    for session in range(1, 6):
        labels = _session_labels(session, n_dialogs * n_per_dialog, rng)
        modes: Dict[int, str] = {}
        for label in KEPT_EMOTIONAL:
            idx = [i for i, lab in enumerate(labels) if lab == label]
            start = int(rng.integers(len(MODE_CYCLE)))
            for j, i in enumerate(rng.permutation(idx) if idx else []):
                modes[int(i)] = MODE_CYCLE[(start + j) % len(MODE_CYCLE)]
        k = 0
        for dialog in _dialog_names(session, n_dialogs):
            genders = ["F" if g else "M" for g in rng.integers(0, 2, size=n_per_dialog)]
            if n_per_dialog >= 2 and len(set(genders)) == 1:
                genders[-1] = "M" if genders[0] == "F" else "F"
            counters = {"F": 0, "M": 0}
            for gender in genders:
                label = labels[k]
                if label in KEPT_EMOTIONAL:
                    mode = modes[k]
                    wording = label if mode in ("both", "wording") else "neu"
                    prosody_class = label if mode in ("both", "prosody") else "neu"
                elif label in ("neu", "oth"):
                    mode, wording, prosody_class = "neutral", "neu", "neu"
                elif label == "xxx":
                    pair = rng.choice(["neu", "hap", "sad", "ang", "exc"], size=2, replace=False)
                    mode, wording, prosody_class = "mixed", str(pair[0]), str(pair[1])
                else:
                    mode, wording, prosody_class = "both", label, label
                k += 1
                speaker = actors[f"Ses{session:02d}{gender}"]
                text = (
                    neutral_sentence(rng) if wording == "neu" else emotional_sentence(wording, rng)
                )
                prosody = _prosody(
                    speaker, PROSODY_PROFILES[prosody_class], rng, (0.05, 3, 5, 0.08)
                )
                utt_id = f"{dialog}_{gender}{counters[gender]:03d}"
                counters[gender] += 1
                vad_class = prosody_class if label == "xxx" else label
                cats, attrs, vad = _annotations(
                    label, vad_class, rng, gender, (wording, prosody_class, "fru")
                )
                clip = Clip(
                    path=f"{IEMOCAP_ROOT}/Session{session}/sentences/wav/{dialog}/{utt_id}.wav",
                    text=text,
                    voice=speaker.voice,
                    prosody=prosody,
                    lead=float(rng.uniform(0.05, 0.3)),
                    tail=float(rng.uniform(0.05, 0.3)),
                    noise_seed=_noise_seed(seed, utt_id),
                )
                plan.append(IemocapTurn(
                    session=session, dialog=dialog, utt_id=utt_id, gender=gender, label=label,
                    mode=mode, wording_class=wording, prosody_class=prosody_class,
                    gap=float(rng.uniform(0.2, 2.0)), annotations=(cats, attrs), vad=vad, clip=clip,
                ))  # fmt: skip
    return plan


