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

from qieemo_sb.data.synthetic.plans import SIZES, CorpusSize, plan_iemocap, plan_librispeech
from qieemo_sb.data.synthetic.vocabulary import KEPT_EMOTIONAL, LABELS, class_words, neutral_words
from qieemo_sb.data.synthetic.writer import generate

__all__ = [
    "SIZES", "CorpusSize", "KEPT_EMOTIONAL", "LABELS", "class_words", "generate", "neutral_words",
    "plan_iemocap", "plan_librispeech",
]
