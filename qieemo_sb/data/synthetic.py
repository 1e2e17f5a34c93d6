"""Synthetic LibriSpeech and IEMOCAP corpora, written in the real folder layouts.

IEMOCAP and LibriSpeech cannot be downloaded everywhere, so the project makes
its own: speech from eSpeak NG (:mod:`qieemo_sb.data.espeak`), 16 kHz mono,
deterministic for a seed. The prepare scripts read these folders exactly as
they read the real corpora. ``qieemo synth --out DIR --size tiny|small`` writes

- ``DIR/LibriSpeech/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/``
  with ``<spk>-<chapter>-<utt>.flac`` and ``<spk>-<chapter>.trans.txt``
  (upper-case words, apostrophes kept, no other punctuation);
- ``DIR/IEMOCAP_full_release/Session{1..5}/`` with
  ``sentences/wav/<dialog>/<utterance>.wav``,
  ``dialog/EmoEvaluation/<dialog>.txt`` (header line, ``[start - end]<TAB>
  utterance<TAB>label<TAB>[v, a, d]`` turn lines, ``C-E2:`` / ``A-E3:``
  annotator lines, a blank line between turns) and
  ``dialog/transcriptions/<dialog>.txt`` (``Ses01F_impro01_F000
  [006.2901-008.2357]: Excuse me.``). Dialog-level audio, video, motion capture
  and forced alignments of the real release are not generated;
- ``DIR/synth_librispeech.json`` and ``DIR/synth_iemocap.json``: the options,
  counts and timing of each generation (outside the corpus folders). A second
  run with the same options skips a corpus; other options need ``--overwrite``;
  a corpus folder without this record (a real corpus) is never deleted.

Generative rules
----------------
Voices. A speaker is an eSpeak accent (7 English accents) with a voice variant
(42 male, 16 female), plus a base pitch (eSpeak 0..100: U(35, 60)), base rate
(U(150, 185) words/min), pitch range (U(35, 55)) and volume (U(55, 75)). The
(accent, variant) pairs are shuffled once per seed and dealt without
replacement: the 10 IEMOCAP actors first (Session s: one female, one male),
then the LibriSpeech test, dev and train speakers, so every speaker has its
own voice and dev/test speakers never occur in train.

Words. Sentences come from templates over a ~700-word vocabulary (names,
places, nouns, adjectives, verbs in base and past forms, numbers, times), so
an ASR model must learn sounds rather than memorise lines. LibriSpeech
sentences are narrative (one clause, or two joined with probability 0.3); each
clause with probability 0.3 describes a feeling or quotes a line of the
IEMOCAP-like corpus (neutral or emotional wording), so that an ASR trained on
LibriSpeech knows its words. Each LibriSpeech utterance uses
the speaker's prosody with small jitter (rate x exp(N(0, .06)), pitch +N(0, 3),
range +N(0, 6), volume x exp(N(0, .1))).

Emotions (IEMOCAP). Every turn has a label, a *wording class* and a *prosody
class*:

- wording: neutral wording is conversational template text with no emotion
  word; emotional wording (classes hap, exc, sad, ang, fru, sur, fea, dis) uses
  class templates that each contain at least one word of that class's lexicon
  (:data:`EMOTION_TEMPLATES`, :func:`class_words`).
- prosody: per class a profile relative to the speaker's neutral voice
  (:data:`PROSODY_PROFILES`: rate factor, pitch shift, range shift, volume
  factor, word gap): ang is fast, very loud, with a wide range; sad is slow,
  low, quiet, narrow, with pauses between words; hap is higher, wide-ranged,
  a bit fast and loud; exc higher, wider, faster and louder still; neu is the
  speaker's own voice. The shifts are multiplied by the speaker's
  expressiveness U(0.75, 1.0) (the volume and rate factors as powers) and
  jittered per turn (rate x exp(N(0, .05)), pitch +N(0, 3), range +N(0, 5),
  volume x exp(N(0, .08))).
- carriers: for the kept emotional labels (hap, exc, sad, ang) the mode cycles,
  from a seeded random start per session and label, through (both, prosody,
  wording, both): about half the turns carry the emotion in both wording and
  prosody, a quarter only in prosody (neutral wording), a quarter only in
  wording (neutral prosody). neu turns are neutral in both. So neither the
  acoustic path nor the text-like (PPG) path of Qieemo alone can separate all
  classes.
- labels the 4-class task drops: fru, sur, fea, dis carry their own wording and
  prosody; oth is neutral in both; xxx (no annotator agreement) takes the
  wording of one kept class and the prosody of another, and its annotator
  lines disagree.

Labels per session: ``n_rare = max(1, round(0.05 N))`` turns of the rare labels
(sur, fea, dis, oth, cycling across sessions), the other turns split by
largest remainder with weights neu .24, hap .11, exc .11, sad .18, ang .18,
xxx .10, fru .08, then shuffled over the session's dialogs. Dialogs alternate
improvisations and scripts (``Ses01F_impro01``, ``Ses02M_script01_1``, ...);
in Session 3 the last improvisation is named ``Ses03M_impro05a`` (and the one
before ``Ses03M_impro05b``), whose F turns are spoken by Ses03F. Turns are
named ``<dialog>_<F|M><nnn>``; the gender letter is the speaker. Turn times
are consecutive within a dialog with gaps U(0.2, 2.0) s.

Audio. 16 kHz mono, 16-bit (FLAC for LibriSpeech, WAV for IEMOCAP), with
U(0.05, 0.3) s of silence before and after the speech and a -60 dBFS Gaussian
noise floor seeded per utterance.

Example
-------
>>> size = SIZES["tiny"]
>>> turns = plan_iemocap(size=size, seed=0)
>>> len(turns) == 5 * size.iemocap_dialogs_per_session * size.iemocap_turns_per_dialog
True
>>> sorted({t.session for t in turns})
[1, 2, 3, 4, 5]
>>> plan_iemocap(size=size, seed=0) == turns
True
"""

import argparse
import json
import logging
import math
import os
import re
import shutil
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from qieemo_sb.data.espeak import (
    ACCENTS,
    FEMALE_VARIANTS,
    MALE_VARIANTS,
    Prosody,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: Bump when the generator's output changes for the same options.
GENERATOR_VERSION = 1
LIBRI_SPLITS = ("train-clean-100", "dev-clean", "test-clean")
IEMOCAP_ROOT = "IEMOCAP_full_release"
LIBRI_ROOT = "LibriSpeech"
NOISE_STD = 10 ** (-60 / 20)

#: Labels of the IEMOCAP release; the 4-class task keeps the first five
#: (exc merged into hap).
LABELS = ("neu", "hap", "exc", "sad", "ang", "xxx", "fru", "sur", "fea", "oth", "dis")
KEPT_EMOTIONAL = ("hap", "exc", "sad", "ang")
RARE_LABELS = ("sur", "fea", "dis", "oth")
COMMON_WEIGHTS = {
    "neu": 0.24, "hap": 0.11, "exc": 0.11, "sad": 0.18, "ang": 0.18,
    "xxx": 0.10, "fru": 0.08,
}  # fmt: skip
MODE_CYCLE = ("both", "prosody", "wording", "both")
CATEGORY_NAMES = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness",
    "ang": "Anger", "fru": "Frustration", "sur": "Surprise", "fea": "Fear",
    "dis": "Disgust", "oth": "Other",
}  # fmt: skip
#: Mean (valence, activation, dominance) ratings per class (1..5 scale).
VAD_MEANS = {
    "neu": (3.0, 2.3, 2.6), "hap": (4.0, 3.0, 3.0), "exc": (4.0, 3.8, 3.4),
    "sad": (1.8, 2.0, 2.1), "ang": (1.6, 3.9, 4.0), "fru": (2.0, 3.3, 3.3),
    "sur": (3.4, 3.8, 2.6), "fea": (1.8, 3.4, 1.7), "dis": (1.7, 3.0, 3.5),
    "oth": (3.0, 3.0, 3.0),
}  # fmt: skip


@dataclass(frozen=True)
class ProsodyProfile:
    """How a class changes the speaker's neutral prosody.

    Arguments
    ---------
    rate : float
        Factor on the words-per-minute rate.
    pitch : float
        Shift of the base pitch (eSpeak 0..100 units).
    pitch_range : float
        Shift of the pitch range (eSpeak 0..100 units).
    volume : float
        Factor on the amplitude.
    word_gap : int
        Pause added between words, in 10 ms units.
    """

    rate: float = 1.0
    pitch: float = 0.0
    pitch_range: float = 0.0
    volume: float = 1.0
    word_gap: int = 0


#: Prosody of each class relative to the speaker's neutral voice.
PROSODY_PROFILES = {
    "neu": ProsodyProfile(),
    "hap": ProsodyProfile(rate=1.10, pitch=12, pitch_range=25, volume=1.25),
    "exc": ProsodyProfile(rate=1.22, pitch=18, pitch_range=35, volume=1.45),
    "sad": ProsodyProfile(rate=0.72, pitch=-12, pitch_range=-30, volume=0.60, word_gap=2),
    "ang": ProsodyProfile(rate=1.18, pitch=6, pitch_range=15, volume=1.75),
    "fru": ProsodyProfile(rate=1.05, pitch=3, pitch_range=-5, volume=1.30),
    "sur": ProsodyProfile(rate=1.00, pitch=20, pitch_range=40, volume=1.20),
    "fea": ProsodyProfile(rate=1.30, pitch=15, pitch_range=-15, volume=0.80),
    "dis": ProsodyProfile(rate=0.85, pitch=-6, pitch_range=10, volume=1.10),
    "oth": ProsodyProfile(),
}

# --------------------------------------------------------------------------
# Vocabulary. Neutral words must stay free of emotion words (tests check it).
# --------------------------------------------------------------------------
NAMES = (
    "Anna Peter Mary John Thomas Alice Henry Margaret George Helen Robert Clara "
    "Edward Laura Walter Susan Daniel Emily Frank Grace Arthur Lucy Charles "
    "Martha Philip Rose Samuel Julia Oliver Sarah Victor Diana Hugh Ellen Simon "
    "Nora Albert Esther Ralph Agnes Stephen Irene Felix Harriet Leonard Mabel "
    "Oscar Paula Raymond Sylvia"
).split()
NOUNS = (
    "apple book bottle bridge candle captain car castle chair child clock coat "
    "country cup desk doctor dog door engine farmer field fire flower forest "
    "gate glass hammer harbor hat hill horse house island jacket journey key "
    "king kitchen ladder lake lamp letter lion machine map message mirror "
    "moon mountain needle newspaper ocean orange painter paper parcel pencil "
    "picture pillow pocket poem potato queen question rabbit radio river road "
    "rock roof room sailor season servant ship shoe silver singer soldier song "
    "stone story street student sun table teacher telephone ticket tower train "
    "tree violin wagon wall watch window word basket blanket bread butter cabin "
    "camera carpet cloud corner diamond drawer feather fountain guitar helmet "
    "jewel kettle lantern lemon medal ribbon saddle sandwich shadow shelf spoon "
    "sugar thread tunnel umbrella vase wheel whistle wire bicycle compass "
    "envelope hammock notebook orchard pebble puzzle rocket statue trumpet"
).split()
PLACES = (
    "library kitchen garden harbor station market office school church village "
    "forest valley cottage cabin castle tower meadow bridge island field shop "
    "yard hotel museum hospital bakery theater factory farm beach"
).split()
ADJECTIVES = (
    "old new small large quiet narrow wide heavy light dark bright warm cold "
    "long short round square wooden golden silver green blue red yellow brown "
    "white black gray simple strange ordinary ancient modern empty full clean "
    "dusty tall low deep shallow distant early late soft hard smooth rough thin "
    "thick plain busy famous hidden open closed rusty shiny tiny enormous "
    "northern southern eastern western polished painted striped curved hollow"
).split()
VERBS = tuple(
    tuple(pair.split("/"))
    for pair in (
        "carry/carried open/opened close/closed paint/painted find/found "
        "bring/brought take/took build/built clean/cleaned count/counted "
        "cover/covered deliver/delivered describe/described draw/drew "
        "drop/dropped fix/fixed follow/followed gather/gathered hold/held "
        "keep/kept leave/left lift/lifted measure/measured move/moved "
        "notice/noticed pack/packed pass/passed pull/pulled push/pushed "
        "repair/repaired return/returned sell/sold send/sent show/showed "
        "sign/signed study/studied throw/threw touch/touched turn/turned "
        "wash/washed watch/watched wrap/wrapped write/wrote borrow/borrowed "
        "buy/bought check/checked choose/chose collect/collected "
        "examine/examined hide/hid load/loaded mark/marked order/ordered "
        "place/placed prepare/prepared polish/polished visit/visited "
        "carve/carved fold/folded hang/hung fetch/fetched"
    ).split()
)
INTRANSITIVE_PAST = (
    "arrived stopped fell disappeared moved returned began ended shook cracked "
    "vanished appeared rang burned melted froze waited rested turned swayed"
).split()
ADVERBS = (
    "slowly quickly carefully quietly suddenly finally gently always often "
    "rarely soon later together again almost already still perhaps certainly "
    "simply easily clearly politely patiently briefly softly"
).split()
PREPOSITIONS = (
    "near behind under beside inside above below across beyond around along " "past toward against"
).split()
TIMES = (
    "in the morning|at noon|in the evening|at midnight|on Monday|on Tuesday|"
    "on Friday|on Sunday|last week|next year|before dinner|after lunch|"
    "during the winter|at dawn|at sunset|in the spring|every day|that autumn"
).split("|")
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
NUMBERS = (
    "two three four five six seven eight nine ten eleven twelve fifteen twenty "
    "thirty forty fifty"
).split()
FAMILY = (
    "father mother brother sister uncle aunt cousin grandfather grandmother "
    "neighbor husband wife son daughter"
).split()
PRONOUNS = "he she they we I".split()
IRREGULAR_PLURALS = {"child": "children", "shelf": "shelves", "potato": "potatoes"}

#: Narrative templates of the LibriSpeech-like corpus.
LIBRI_TEMPLATES = (
    "{Name} {past} the {adj} {noun} {prep} the {noun2}.",
    "The {adj} {noun} was {prep} the {noun2} {time}.",
    "{Pron} {adverb} {past} {a_adj} {noun} and {past2} it to the {place}.",
    "When the {noun} {intrans}, {name} {past} the {adj} {noun2}.",
    "{Name} said that the {noun} in the {place} was {adj}.",
    "In the {adj} {place}, {pron} found {a_adj2} {noun} beside the {noun2}.",
    "{Name} and {name2} {past} the {noun} {time}.",
    "It was {adj} in the {place}, and the {noun} {intrans} {adverb}.",
    "{Pron} could not {base} the {noun} because the {noun2} was {adj}.",
    "The {family} of {name} {past} {a_adj} {noun} {time}.",
    "{Number} {adj} {nouns} stood {prep} the {place}.",
    "Nobody {past} the {noun} until the {noun2} {intrans}.",
    "The {noun} {intrans} {prep} the {adj} {noun2}, and {name} {past} the {noun3}.",
)
#: Narrative templates that carry the emotion vocabulary into the ASR data.
LIBRI_FEELING_TEMPLATES = (
    "{Name} felt {feeling} when the {noun} {intrans}.",
    "The {family} was {feeling} about the {adj} {noun}.",
    "{Pron} looked {feeling}, and {name} {past} the {noun}.",
    "{Name} said, {quote}",
    "Then {name} cried out, {quote}",
)
#: Conversational neutral templates of the IEMOCAP-like corpus.
NEUTRAL_TEMPLATES = (
    "I will meet {name} at the {place} {time}.",
    "Could you pass me the {noun}?",
    "The {noun} is {prep} the {noun2}.",
    "We need to {base} the {noun} before {day}.",
    "My {family} works at the {place}.",
    "Did you {base} the {noun} yesterday?",
    "The {place} opens at {number} o'clock.",
    "{Name} bought {a_adj} {noun} {time}.",
    "I think the {noun} is in the {place}.",
    "Okay, let me check the {noun} first.",
    "It takes about {number} minutes to get to the {place}.",
    "So, where did you put the {noun}?",
    "I'm going to the {place} {time}.",
    "Yes, I talked to {name} about the {noun}.",
    "The {adj} {noun} is still in the {place}.",
    "Maybe we can {base} the {noun} on {day}.",
    "What time does the {place} open?",
    "How far is the {place} from here?",
    "This {noun} is for {name}.",
    "I am going out with {name} {time}.",
    "Oh, the {noun} is right there, next to the {noun2}.",
    "Now we just have to {base} the {noun} and the {noun2}.",
    "Is this the {noun} you were looking for?",
    "I never really used the {noun} that much.",
    "Let me know when you are back from the {place}.",
    "Do you have the {noun} with you, or is it still at the {place}?",
    "There's one more {noun} in the {place}, I think.",
    "Everyone said the {place} was closed on {day}.",
    "So what did {name} say about the {noun}?",
    "Okay, I will look for the {noun} tonight.",
    "Please put the {noun} on the {noun2}, it's not mine.",
    "I can't find the {noun}, it was in the {place} last time.",
    "Well, I saw {name} at the {place}, and we talked for an hour.",
    "Does anyone know how the {noun} got up there?",
    "We were told to wait here until {number} o'clock.",
    "He said there are only {number} left, so get one now.",
)

#: Per-class slot words (each is in the class lexicon).
EMOTION_SLOTS = {
    "ang_adj": "ridiculous unacceptable outrageous stupid insulting pathetic disgraceful absurd".split(),
    "ang_insult": "idiot liar coward fool jerk".split(),
    "ang_intj": ["Enough!", "Shut up!", "Listen to me!", "Damn it!", "Unbelievable!"],
    "ang_state": ["furious", "fed up", "sick of this", "livid"],
    "hap_adj": "happy glad pleased delighted grateful cheerful proud".split(),
    "hap_adj2": "lovely wonderful beautiful charming sweet pleasant".split(),
    "hap_intj": ["Oh, how nice,", "Aw, that's sweet,", "Oh good,", "Oh, lovely,"],
    "exc_adj": "amazing fantastic incredible awesome brilliant spectacular".split(),
    "exc_intj": ["Oh wow,", "Yay!", "Hooray,", "Oh my gosh,", "Whoa,"],
    "exc_verb": "won nailed aced conquered".split(),
    "sad_adj": "lonely devastated hopeless miserable heartbroken lost helpless".split(),
    "sad_noun": ["tears", "grief", "funeral", "goodbye"],
    "fru_adj": "annoying pointless exhausting useless".split(),
    "fea_adj": "scared afraid terrified frightened".split(),
    "dis_adj": "disgusting filthy gross revolting".split(),
}

#: Emotional wording templates per class; each has a class-specific word.
EMOTION_TEMPLATES = {
    "ang": (
        "{ang_intj} I am {ang_state} with you!",
        "How dare you {base} my {noun}!",
        "This is {ang_adj}, completely {ang_adj}!",
        "Get out of my {place} right now!",
        "I hate the way you {base} the {noun}!",
        "Stop lying to me about the {noun}!",
        "You never listen, you {ang_insult}!",
        "Don't you dare touch my {noun} again!",
        "I told you a hundred times, {ang_intj}",
        "What a {ang_adj} thing to say, {name}!",
    ),
    "hap": (
        "I am so {hap_adj} about the {noun}!",
        "What a {hap_adj2} {noun}, I love it!",
        "Thank you so much for the {noun}, {name}.",
        "{hap_intj} this makes me smile.",
        "We had such a {hap_adj2} time at the {place}.",
        "I really love you, {name}.",
        "Everything is fine now, I'm so {hap_adj}.",
        "You always make me laugh, {name}.",
    ),
    "exc": (
        "{exc_intj} we {exc_verb} the {noun}!",
        "This is {exc_adj}, {name}, absolutely {exc_adj}!",
        "I can't believe we are going to the {place}!",
        "Let's celebrate tonight, we did it!",
        "Guess what, I got the {noun}! It's {exc_adj}!",
        "{exc_intj} look at this {exc_adj} {noun}!",
    ),
    "sad": (
        "I miss {name} so much.",
        "I feel so {sad_adj} since the {noun} is gone.",
        "Nothing matters anymore without {name}.",
        "I'm sorry, I just can't stop crying.",
        "Everyone left the {place}, and I am {sad_adj}.",
        "It was the last time I saw my {family}, and now there's only {sad_noun}.",
        "I wish things could go back to how they were.",
        "My {family} died, and I never said goodbye.",
    ),
    "fru": (
        "Why does the {noun} keep breaking, again and again?",
        "I have asked you three times already.",
        "Whatever, it never works anyway.",
        "I've been waiting here for hours, this is so {fru_adj}.",
        "Can't you just do one simple thing?",
    ),
    "sur": (
        "Really? You {past} the {noun}?",
        "What? Since when?",
        "No way, are you serious?",
        "Oh! I did not expect that at all.",
    ),
    "fea": (
        "Please don't hurt me.",
        "I'm {fea_adj}, something is outside the {place}.",
        "What was that noise? I'm {fea_adj}.",
        "Help! Somebody help me!",
    ),
    "dis": (
        "Ugh, that's {dis_adj}.",
        "Get that {dis_adj} {noun} away from me.",
        "That smells horrible, how {dis_adj}.",
    ),
}
#: Adjectives that describe feelings in LibriSpeech narration.
FEELINGS = tuple(
    EMOTION_SLOTS["ang_adj"]
    + EMOTION_SLOTS["hap_adj"]
    + EMOTION_SLOTS["exc_adj"]
    + EMOTION_SLOTS["sad_adj"]
    + EMOTION_SLOTS["fea_adj"]
    + EMOTION_SLOTS["dis_adj"]
    + ["furious", "angry", "excited", "amazed", "annoyed", "disgusted"]
)


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
# Text
# --------------------------------------------------------------------------
def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _plural(noun: str) -> str:
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if re.search(r"(s|x|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


#: Template slots filled by one word (or phrase) of a list; ``{nouns}``,
#: ``{past}``, ``{base}``, ``{a_adj}`` and ``{quote}`` have rules of their own.
WORD_SLOTS = {
    "name": NAMES,
    "noun": NOUNS,
    "place": PLACES,
    "adj": ADJECTIVES,
    "intrans": INTRANSITIVE_PAST,
    "adverb": ADVERBS,
    "prep": PREPOSITIONS,
    "time": TIMES,
    "day": DAYS,
    "number": NUMBERS,
    "family": FAMILY,
    "pron": PRONOUNS,
    "feeling": FEELINGS,
}


def _fill(template: str, rng: np.random.Generator) -> str:
    """Fills a template's ``{slot}`` fields with words drawn from ``rng``."""

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    used: Dict[str, str] = {}

    def value(slot: str) -> str:
        key = slot.lower()
        if key.startswith("a_adj"):
            adj = pick(ADJECTIVES)
            return f"{_article(adj)} {adj}"
        base = re.sub(r"\d+$", "", key)
        if base in WORD_SLOTS:
            return pick(WORD_SLOTS[base])
        if base == "nouns":
            return _plural(pick(NOUNS))
        if base == "past":
            return pick(VERBS)[1]
        if base == "base":
            return pick(VERBS)[0]
        if base == "quote":
            # Conversational lines of every class, so that the ASR knows the
            # words of the IEMOCAP-like corpus.
            label = pick(("neu", "neu", "neu") + tuple(EMOTION_TEMPLATES))
            return neutral_sentence(rng) if label == "neu" else emotional_sentence(label, rng)
        if key in EMOTION_SLOTS:
            return pick(EMOTION_SLOTS[key])
        raise KeyError(f"unknown template slot {{{slot}}} in {template!r}")

    def substitute(match: "re.Match[str]") -> str:
        slot = match.group(1)
        if slot not in used or slot.lower() in ("ang_adj", "exc_adj"):
            used[slot] = value(slot)
        word = used[slot]
        if slot[0].isupper():
            word = word[0].upper() + word[1:]
        return word

    text = re.sub(r"\{(\w+)\}", substitute, template)
    # "I" keeps its capital; a pronoun that starts a sentence is capitalised.
    return text[0].upper() + text[1:]


def neutral_sentence(rng: np.random.Generator) -> str:
    """A conversational sentence without emotion words.

    Example
    -------
    >>> s = neutral_sentence(np.random.default_rng(3))
    >>> isinstance(s, str) and s[-1] in ".?"
    True
    """
    return _fill(NEUTRAL_TEMPLATES[int(rng.integers(len(NEUTRAL_TEMPLATES)))], rng)


def emotional_sentence(label: str, rng: np.random.Generator) -> str:
    """A sentence in the wording of ``label`` (a key of EMOTION_TEMPLATES)."""
    templates = EMOTION_TEMPLATES[label]
    return _fill(templates[int(rng.integers(len(templates)))], rng)


def libri_sentence(rng: np.random.Generator) -> str:
    """A narrative sentence (one clause, sometimes two joined).

    Example
    -------
    >>> s = libri_sentence(np.random.default_rng(0))
    >>> s[0].isupper() and s[-1] in ".!?"
    True
    """
    n_clauses = 2 if rng.random() < 0.3 else 1
    clauses = []
    for _ in range(n_clauses):
        if rng.random() < 0.3:
            template = LIBRI_FEELING_TEMPLATES[int(rng.integers(len(LIBRI_FEELING_TEMPLATES)))]
        else:
            template = LIBRI_TEMPLATES[int(rng.integers(len(LIBRI_TEMPLATES)))]
        clauses.append(_fill(template, rng))
    return " ".join(clauses)


def transcript_words(text: str) -> str:
    """LibriSpeech-style transcript: upper-case words, apostrophes kept.

    Example
    -------
    >>> transcript_words("Okay, let me check the key first. It's fine!")
    "OKAY LET ME CHECK THE KEY FIRST IT'S FINE"
    """
    return " ".join(w.upper() for w in re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", text))


def _words_of(templates: Sequence[str], slots: Sequence[str]) -> set:
    words = set()
    for t in templates:
        words.update(w.lower() for w in re.findall(r"[A-Za-z']+", re.sub(r"\{\w+\}", " ", t)))
    for s in slots:
        for item in EMOTION_SLOTS[s]:
            words.update(w.lower() for w in re.findall(r"[A-Za-z']+", item))
    return words


def neutral_words() -> set:
    """Every word neutral wording can produce (lower case)."""
    words = _words_of(NEUTRAL_TEMPLATES, ())
    for slot, seq in WORD_SLOTS.items():
        if slot == "feeling":  # feelings are emotion words, not neutral wording
            continue
        for item in seq:
            words.update(w.lower() for w in item.split())
    for base, past in VERBS:
        words.update((base.lower(), past.lower()))
    words.update(("an", "a"))
    return words


def class_words(label: str) -> set:
    """Words specific to the wording of ``label``: in its templates or slots,
    never in neutral wording.

    Example
    -------
    >>> {"hate", "furious"} <= class_words("ang")
    True
    >>> "table" in class_words("ang")
    False
    """
    templates = EMOTION_TEMPLATES[label]
    slots = sorted({s for t in templates for s in re.findall(r"\{(\w+)\}", t)} & set(EMOTION_SLOTS))
    return _words_of(templates, slots) - neutral_words()


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
    """The LibriSpeech utterances that :func:`generate` renders, in order.

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
    """The IEMOCAP turns that :func:`generate` renders, in order.

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


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------
def render_clips(out_dir: str, clips: Sequence[Clip]) -> List[int]:
    """Synthesizes and writes ``clips`` (also in worker processes).

    Arguments
    ---------
    out_dir : str
        Folder the clip paths are relative to (their folders must exist).
    clips : sequence of Clip
        What to render; each file depends only on its own Clip.

    Returns
    -------
    list of int
        Length of each written file in samples (16 kHz).
    """
    import soundfile as sf

    from qieemo_sb.data.espeak import EspeakSynthesizer

    synth = EspeakSynthesizer(sample_rate=SAMPLE_RATE)
    lengths = []
    for clip in clips:
        speech = synth.synthesize(clip.text, voice=clip.voice, prosody=clip.prosody)
        wav = np.concatenate([
            np.zeros(int(round(clip.lead * SAMPLE_RATE)), np.float32),
            speech,
            np.zeros(int(round(clip.tail * SAMPLE_RATE)), np.float32),
        ])  # fmt: skip
        wav = wav + np.random.default_rng(clip.noise_seed).normal(0, NOISE_STD, wav.shape)
        np.clip(wav, -1.0, 1.0, out=wav)
        path = Path(out_dir) / clip.path
        fmt = "FLAC" if path.suffix == ".flac" else "WAV"
        sf.write(str(path), wav, SAMPLE_RATE, subtype="PCM_16", format=fmt)
        lengths.append(len(wav))
    return lengths


def _render_all(
    out_dir: Path, clips: List[Clip], workers: int, progress: bool, desc: str
) -> List[int]:
    from tqdm import tqdm

    for d in sorted({str((out_dir / c.path).parent) for c in clips}):
        os.makedirs(d, exist_ok=True)
    chunk = 16
    chunks = [clips[i : i + chunk] for i in range(0, len(clips), chunk)]
    lengths: List[Optional[List[int]]] = [None] * len(chunks)
    bar = tqdm(total=len(clips), desc=desc, unit="clip", disable=not progress)
    if workers <= 1:
        for i, part in enumerate(chunks):
            lengths[i] = render_clips(str(out_dir), part)
            bar.update(len(part))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: safe whatever the parent holds (torch threads in tests).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {
                pool.submit(render_clips, str(out_dir), part): i for i, part in enumerate(chunks)
            }
            for future in as_completed(futures):
                lengths[futures[future]] = future.result()
                bar.update(len(chunks[futures[future]]))
    bar.close()
    return [n for part in lengths for n in part]


def _fmt_time(t: float) -> str:
    return f"{t:.4f}"


def _write_iemocap_text(out_dir: Path, turns: List[IemocapTurn], lengths: List[int]) -> None:
    by_dialog: Dict[Tuple[int, str], List[Tuple[IemocapTurn, float, float]]] = {}
    clock: Dict[str, float] = {}
    for turn, n in zip(turns, lengths):
        start = clock.get(turn.dialog, 0.0) + turn.gap + (2.0 if turn.dialog not in clock else 0.0)
        end = start + n / SAMPLE_RATE
        clock[turn.dialog] = end
        by_dialog.setdefault((turn.session, turn.dialog), []).append((turn, start, end))
    for (session, dialog), items in by_dialog.items():
        base = out_dir / IEMOCAP_ROOT / f"Session{session}" / "dialog"
        (base / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
        (base / "transcriptions").mkdir(parents=True, exist_ok=True)
        emo = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        trans = []
        for turn, start, end in items:
            v, a, d = turn.vad
            emo.append(
                f"[{_fmt_time(start)} - {_fmt_time(end)}]\t{turn.utt_id}\t{turn.label}\t"
                f"[{v:.4f}, {a:.4f}, {d:.4f}]"
            )
            emo.extend(turn.annotations[0])
            emo.extend(turn.annotations[1])
            emo.append("")
            trans.append(f"{turn.utt_id} [{start:08.4f}-{end:08.4f}]: {turn.clip.text}")
        (base / "EmoEvaluation" / f"{dialog}.txt").write_text(
            "\n".join(emo) + "\n", encoding="utf-8"
        )
        (base / "transcriptions" / f"{dialog}.txt").write_text(
            "\n".join(trans) + "\n", encoding="utf-8"
        )


def _write_libri_text(out_dir: Path, utts: List[LibriUtterance]) -> None:
    by_chapter: Dict[Tuple[str, str, str], List[LibriUtterance]] = {}
    for u in utts:
        by_chapter.setdefault((u.split, u.speaker, u.chapter), []).append(u)
    for (split, spk, chapter), items in by_chapter.items():
        folder = out_dir / LIBRI_ROOT / split / spk / chapter
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"{u.utt_id} {u.words}" for u in items]
        (folder / f"{spk}-{chapter}.trans.txt").write_text(
            "\n".join(lines) + "\n", encoding="utf-8"
        )


def _folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def generate(
    *,
    out_dir: Path,
    size: str = "small",
    seed: int = 0,
    scale: float = 1.0,
    corpora: Sequence[str] = ("librispeech", "iemocap"),
    workers: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, dict]:
    """Writes the synthetic corpora under ``out_dir``.

    Arguments
    ---------
    out_dir : Path
        Output folder; gets ``LibriSpeech/`` and/or ``IEMOCAP_full_release/``.
    size : str
        A key of :data:`SIZES`.
    seed : int
        Seed of all random choices; same seed and options give identical files.
    scale : float
        Multiplies utterances per speaker/chapter and turns per dialog.
    corpora : sequence of str
        ``librispeech`` and/or ``iemocap``.
    workers : int, optional
        Processes (default: all CPUs for 200+ clips, else 1). The files do not
        depend on it.
    overwrite : bool
        Replace a corpus folder generated with other options.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        Per corpus: the generation record also written to
        ``out_dir/synth_<corpus>.json`` (clips, hours, megabytes, seconds,
        clips per second, or ``"skipped": True``).
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    unknown = set(corpora) - {"librispeech", "iemocap"}
    if unknown or not corpora:
        raise ValueError(f"corpora must be librispeech and/or iemocap, got {list(corpora)}")
    dims = SIZES[size].scaled(scale)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = {}
    for corpus in ("librispeech", "iemocap"):
        if corpus not in corpora:
            continue
        root = out_dir / (LIBRI_ROOT if corpus == "librispeech" else IEMOCAP_ROOT)
        info_path = out_dir / f"synth_{corpus}.json"
        options = {
            "generator_version": GENERATOR_VERSION,
            "size": size,
            "scale": scale,
            "seed": seed,
            "dimensions": asdict(dims),
        }
        previous = json.loads(info_path.read_text()) if info_path.is_file() else None
        if (
            previous
            and previous.get("complete")
            and previous.get("options") == options
            and root.is_dir()
        ):
            logger.info("%s already generated in %s with these options: skipping", corpus, root)
            print(f"{corpus}: already generated in {root} with these options, skipping")
            reports[corpus] = dict(previous, skipped=True)
            continue
        if root.exists():
            # Only ever delete a folder this function made (never a real corpus).
            if previous is None:
                raise FileExistsError(
                    f"{root} exists but was not generated by qieemo synth (no {info_path}); "
                    "choose another --out or remove it yourself"
                )
            if previous.get("complete") and not overwrite:
                raise FileExistsError(
                    f"{root} was generated with other options (see {info_path}); "
                    "pass overwrite=True / --overwrite to replace it"
                )
            shutil.rmtree(root)
        info_path.write_text(json.dumps({"options": options, "complete": False}, indent=2) + "\n")
        started = time.perf_counter()
        if corpus == "librispeech":
            utts = plan_librispeech(size=dims, seed=seed)
            clips = [u.clip for u in utts]
        else:
            turns = plan_iemocap(size=dims, seed=seed)
            clips = [t.clip for t in turns]
        if workers is not None:
            n_workers = max(1, workers)
        else:
            n_workers = (os.cpu_count() or 1) if len(clips) >= 200 else 1
        lengths = _render_all(out_dir, clips, n_workers, progress, corpus)
        if corpus == "librispeech":
            _write_libri_text(out_dir, utts)
        else:
            _write_iemocap_text(out_dir, turns, lengths)
        seconds = time.perf_counter() - started
        hours = sum(lengths) / SAMPLE_RATE / 3600
        report = {
            "options": options,
            "complete": True,
            "clips": len(clips),
            "hours": round(hours, 4),
            "megabytes": round(_folder_megabytes(root), 2),
            "seconds": round(seconds, 2),
            "clips_per_second": round(len(clips) / seconds, 1),
            "workers": n_workers,
        }
        if corpus == "librispeech":
            report["per_split"] = {s: sum(u.split == s for u in utts) for s in LIBRI_SPLITS}
        else:
            report["labels"] = {lab: sum(t.label == lab for t in turns) for lab in LABELS}
        info_path.write_text(json.dumps(report, indent=2) + "\n")
        print(
            f"{corpus}: {len(clips)} clips, {hours:.2f} h, {report['megabytes']:.1f} MB in "
            f"{seconds:.1f} s ({report['clips_per_second']:.1f} clips/s, {n_workers} worker(s)) -> {root}"
        )
        reports[corpus] = report
    return reports


# --------------------------------------------------------------------------
# ``qieemo synth``
# --------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``qieemo synth``."""
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="small",
        help="tiny: seconds, for tests; small: the demo (default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply utterances per speaker and turns per dialog (default 1)",
    )
    parser.add_argument(
        "--only", choices=("librispeech", "iemocap"), help="generate one corpus only"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: all CPUs for 200+ clips)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace corpora generated with other options"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Runs ``qieemo synth``; returns the exit code."""
    corpora = (args.only,) if args.only else ("librispeech", "iemocap")
    try:
        generate(
            out_dir=args.out,
            size=args.size,
            seed=args.seed,
            scale=args.scale,
            corpora=corpora,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (FileExistsError, ValueError) as error:
        print(f"qieemo synth: error: {error}")
        return 1
    return 0
