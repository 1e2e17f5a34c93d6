"""The synthetic corpora: layouts, determinism, and the emotion-carrying rules."""

import collections
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qieemo_sb import cli
from qieemo_sb.data import espeak
from qieemo_sb.data.espeak import EspeakSynthesizer, Prosody
from qieemo_sb.data.iemocap import parse_label_line
from qieemo_sb.data.synthetic import plans, vocabulary, writer

TINY = plans.SIZES["tiny"]
KEPT_4 = {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang"}


def _digest(folder: Path):
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_plans_are_deterministic_and_depend_on_the_seed():
    assert plans.plan_iemocap(size=TINY, seed=0) == plans.plan_iemocap(size=TINY, seed=0)
    assert plans.plan_librispeech(size=TINY, seed=0) == plans.plan_librispeech(size=TINY, seed=0)
    texts0 = [t.clip.text for t in plans.plan_iemocap(size=TINY, seed=0)]
    texts1 = [t.clip.text for t in plans.plan_iemocap(size=TINY, seed=1)]
    assert texts0 != texts1


def test_tiny_plan_counts():
    libri = plans.plan_librispeech(size=TINY, seed=0)
    assert collections.Counter(u.split for u in libri) == {
        "train-clean-100": 24, "dev-clean": 6, "test-clean": 6,
    }  # fmt: skip
    turns = plans.plan_iemocap(size=TINY, seed=0)
    assert collections.Counter(t.label for t in turns) == {
        "neu": 15, "ang": 10, "sad": 10, "hap": 5, "exc": 5, "xxx": 5, "fru": 5,
        "sur": 2, "fea": 1, "oth": 1, "dis": 1,
    }  # fmt: skip
    for s in range(1, 6):
        kept = collections.Counter(
            KEPT_4[t.label] for t in turns if t.session == s and t.label in KEPT_4
        )
        assert kept == {"neu": 3, "hap": 2, "sad": 2, "ang": 2}


def test_scale_multiplies_utterances_not_speakers():
    big = TINY.scaled(2.0)
    turns = plans.plan_iemocap(size=big, seed=0)
    assert len(turns) == 2 * len(plans.plan_iemocap(size=TINY, seed=0))
    libri = plans.plan_librispeech(size=big, seed=0)
    assert len({u.speaker for u in libri}) == len(
        {u.speaker for u in plans.plan_librispeech(size=TINY, seed=0)}
    )
    assert len(libri) == 2 * 36


def test_librispeech_layout(corpus_tiny):
    root = corpus_tiny / "LibriSpeech"
    plan = plans.plan_librispeech(size=TINY, seed=0)
    assert sorted(p.name for p in root.iterdir()) == sorted(plans.LIBRI_SPLITS)
    assert len(list(root.rglob("*.flac"))) == len(plan)
    speakers = collections.defaultdict(set)
    for u in plan:
        flac = corpus_tiny / u.clip.path
        assert flac.parent == root / u.split / u.speaker / u.chapter
        info = sf.info(str(flac))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert info.frames > 8000
        speakers[u.split].add(u.speaker)
    assert not speakers["train-clean-100"] & (speakers["dev-clean"] | speakers["test-clean"])
    assert not speakers["dev-clean"] & speakers["test-clean"]
    lines = {}
    for trans in root.rglob("*.trans.txt"):
        spk, chapter = trans.parent.parent.name, trans.parent.name
        assert trans.name == f"{spk}-{chapter}.trans.txt"
        for line in trans.read_text().splitlines():
            utt, words = line.split(" ", 1)
            assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", words)
            lines[utt] = words
    assert lines == {u.utt_id: u.words for u in plan}


def test_every_speaker_has_its_own_voice():
    actors, libri = plans._speakers(plans.SIZES["small"], 0)
    speakers = list(actors.values()) + [s for split in libri.values() for s in split]
    assert len({s.voice for s in speakers}) == len(speakers)
    for sid, actor in actors.items():
        assert actor.gender == sid[-1]
        assert actor.voice.split("+")[1] in (
            espeak.FEMALE_VARIANTS if sid[-1] == "F" else espeak.MALE_VARIANTS
        )


def test_iemocap_layout(corpus_tiny):
    root = corpus_tiny / "IEMOCAP_full_release"
    plan = plans.plan_iemocap(size=TINY, seed=0)
    assert sorted(p.name for p in root.iterdir()) == [f"Session{s}" for s in range(1, 6)]
    dialogs = {t.dialog for t in plan}
    assert {"Ses01F_impro01", "Ses02M_script01_1", "Ses03M_impro05a"} <= dialogs
    voices = collections.defaultdict(set)
    for t in plan:
        voices[(t.session, t.gender)].add(t.clip.voice)
    assert sorted(voices) == [(s, g) for s in range(1, 6) for g in "FM"]
    assert all(len(v) == 1 for v in voices.values())
    assert len(set().union(*voices.values())) == 10
    by_id = {t.utt_id: t for t in plan}
    seen = set()
    for label_file in root.glob("Session*/dialog/EmoEvaluation/*.txt"):
        session = int(label_file.parts[-4][-1])
        lines = label_file.read_text().splitlines()
        assert lines[0] == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
        assert lines[1] == ""
        assert any(re.match(r"C-E\d:\t\w+;", line) for line in lines)
        assert any(re.match(r"A-E\d:\tval \d; act \d; dom  \d;\t\(", line) for line in lines)
        previous_end = 0.0
        for n, line in enumerate(lines, start=1):
            turn = parse_label_line(line, path=str(label_file), line_no=n)
            if turn is None:
                continue
            assert lines[n - 2] == ""  # a blank line before every turn
            planned = by_id[turn.utt_id]
            assert (planned.label, planned.dialog, planned.session) == (
                turn.label,
                label_file.stem,
                session,
            )
            wav = (
                root
                / f"Session{session}"
                / "sentences"
                / "wav"
                / label_file.stem
                / f"{turn.utt_id}.wav"
            )
            info = sf.info(str(wav))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert turn.end - turn.start == pytest.approx(info.frames / 16000, abs=2e-4)
            assert turn.start > previous_end
            previous_end = turn.end
            seen.add(turn.utt_id)
        transcript = label_file.parent.parent / "transcriptions" / label_file.name
        for line in transcript.read_text().splitlines():
            m = re.fullmatch(r"(\S+) \[(\d{3}\.\d{4})-(\d{3}\.\d{4})\]: (.+)", line)
            assert m, line
            assert m.group(4) == by_id[m.group(1)].clip.text
    assert seen == set(by_id)
    assert {t.label for t in plan} == set(vocabulary.LABELS)


def test_ses03m_impro05a_holds_turns_of_both_actors():
    turns = [t for t in plans.plan_iemocap(size=TINY, seed=0) if t.dialog == "Ses03M_impro05a"]
    assert {t.gender for t in turns} == {"F", "M"}
    assert all(t.utt_id.startswith("Ses03M_impro05a_" + t.gender) for t in turns)


def test_emotion_carriers_follow_the_documented_rules():
    turns = plans.plan_iemocap(size=plans.SIZES["small"], seed=0)
    emotional = [t for t in turns if t.label in vocabulary.KEPT_EMOTIONAL]
    modes = collections.Counter(t.mode for t in emotional)
    n = len(emotional)
    assert set(modes) == {"both", "prosody", "wording"}
    # cycle (both, prosody, wording, both) per session and label: +-1 each
    assert abs(modes["both"] - n / 2) <= 20 and abs(modes["prosody"] - n / 4) <= 20
    assert abs(modes["wording"] - n / 4) <= 20
    neutral = vocabulary.neutral_words()
    for slot, items in vocabulary.EMOTION_SLOTS.items():
        for item in items:
            assert {w.lower() for w in re.findall(r"[A-Za-z']+", item)} - neutral, (slot, item)
    all_class_words = set().union(*(vocabulary.class_words(c) for c in vocabulary.EMOTION_TEMPLATES))
    for t in turns:
        words = {w.lower() for w in re.findall(r"[A-Za-z']+", t.clip.text)}
        if t.wording_class == "neu":
            assert not words & all_class_words, t.clip.text
        else:
            assert words & vocabulary.class_words(t.wording_class), t.clip.text
        if t.label in vocabulary.KEPT_EMOTIONAL:
            assert (t.wording_class == t.label) == (t.mode in ("both", "wording"))
            assert (t.prosody_class == t.label) == (t.mode in ("both", "prosody"))
        if t.label in ("neu", "oth"):
            assert t.wording_class == t.prosody_class == "neu"
        if t.label == "xxx":
            assert t.wording_class != t.prosody_class

    def mean(cls, attr):
        return np.mean([getattr(t.clip.prosody, attr) for t in turns if t.prosody_class == cls])

    assert mean("sad", "rate") < mean("neu", "rate") < mean("hap", "rate") < mean("ang", "rate")
    assert (
        mean("sad", "volume")
        < mean("neu", "volume")
        < mean("hap", "volume")
        < mean("ang", "volume")
    )
    assert mean("sad", "pitch_range") < mean("neu", "pitch_range") < mean("hap", "pitch_range")
    assert mean("sad", "pitch") < mean("neu", "pitch") < mean("hap", "pitch") < mean("exc", "pitch")


def test_prosody_is_audible_in_the_files(corpus_tiny):
    """Loudness and speaking rate measured on the written wavs follow the class."""
    stats = collections.defaultdict(list)
    for t in plans.plan_iemocap(size=TINY, seed=0):
        wav, _ = sf.read(str(corpus_tiny / t.clip.path))
        speech = wav[np.abs(wav) > 0.01]
        n_words = len(re.findall(r"[A-Za-z']+", t.clip.text))
        stats[t.prosody_class].append((np.sqrt(np.mean(speech**2)), (len(wav) / 16000) / n_words))
    rms = {c: np.mean([s[0] for s in v]) for c, v in stats.items()}
    sec_per_word = {c: np.mean([s[1] for s in v]) for c, v in stats.items()}
    assert rms["ang"] > 1.3 * rms["neu"] > 1.3 * rms["sad"]
    assert sec_per_word["sad"] > 1.2 * sec_per_word["neu"] > 1.1 * sec_per_word["ang"]


def test_generation_is_deterministic(corpus_tiny, tmp_path):
    # Rendered after everything else in this process: eSpeak state must not leak.
    writer.generate(out_dir=tmp_path / "again", size="tiny", seed=0, workers=1, progress=False)
    for corpus in ("LibriSpeech", "IEMOCAP_full_release"):
        assert _digest(tmp_path / "again" / corpus) == _digest(corpus_tiny / corpus)
    writer.generate(
        out_dir=tmp_path / "other",
        size="tiny",
        seed=1,
        corpora=["iemocap"],
        workers=1,
        progress=False,
    )
    assert _digest(tmp_path / "other" / "IEMOCAP_full_release") != _digest(
        corpus_tiny / "IEMOCAP_full_release"
    )


def test_worker_processes_give_the_same_files(corpus_tiny, tmp_path):
    writer.generate(
        out_dir=tmp_path, size="tiny", seed=0, corpora=["iemocap"], workers=2, progress=False
    )
    assert _digest(tmp_path / "IEMOCAP_full_release") == _digest(
        corpus_tiny / "IEMOCAP_full_release"
    )


def test_cli_skips_same_options_and_refuses_others(tmp_path, capsys):
    out = str(tmp_path)
    base = ["synth", "--out", out, "--size", "tiny", "--only", "iemocap", "--no-progress"]
    assert cli.main(base) == 0
    assert "clips/s" in capsys.readouterr().out
    assert cli.main(base) == 0
    assert "already generated" in capsys.readouterr().out
    assert cli.main(base + ["--seed", "3"]) == 1
    assert "--overwrite" in capsys.readouterr().out
    assert cli.main(base + ["--seed", "3", "--overwrite"]) == 0
    info = (tmp_path / "synth_iemocap.json").read_text()
    assert '"seed": 3' in info and not (tmp_path / "LibriSpeech").exists()


def test_espeak_refuses_unknown_voices_and_prosody():
    synth = EspeakSynthesizer()
    assert synth._engine.reproducible  # the start-up probe of the fresh-library scheme
    with pytest.raises(ValueError, match="accent"):
        synth.synthesize("hello", voice="fr+m3")
    with pytest.raises(ValueError, match="variant"):
        synth.synthesize("hello", voice="en+klatt")
    with pytest.raises(ValueError, match="volume"):
        Prosody(volume=300)


def test_a_folder_not_made_by_synth_is_never_deleted(tmp_path):
    real = tmp_path / "LibriSpeech" / "train-clean-100"
    real.mkdir(parents=True)
    (real / "keep.txt").write_text("a real corpus")
    with pytest.raises(FileExistsError, match="not generated by qieemo synth"):
        writer.generate(
            out_dir=tmp_path, size="tiny", corpora=["librispeech"], overwrite=True, progress=False
        )
    assert (real / "keep.txt").read_text() == "a real corpus"
