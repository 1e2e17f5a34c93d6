"""IEMOCAP preparation on the tiny synthetic release: folds, splits, errors, re-runs."""

import collections
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qieemo_sb.data import iemocap
from qieemo_sb.data.iemocap import IemocapFormatError, prepare_iemocap
from qieemo_sb.data.synthetic import SIZES, plan_iemocap

REPO = Path(__file__).resolve().parents[1]
KEPT_4 = {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang"}
# Tiny corpus, seed 0: every session keeps 9 turns (neu 3, hap 2, sad 2, ang 2).
TINY_SESSION = {"neu": 3, "hap": 2, "sad": 2, "ang": 2}


@pytest.fixture(scope="module")
def plan():
    return plan_iemocap(size=SIZES["tiny"], seed=0)


@pytest.fixture(scope="module")
def prepared(corpus_tiny, tmp_path_factory):
    save = tmp_path_factory.mktemp("iemocap_prep")
    summary = prepare_iemocap(
        data_folder=str(corpus_tiny / "IEMOCAP_full_release"), save_folder=str(save)
    )
    return save, summary


@pytest.fixture
def release_copy(corpus_tiny, tmp_path):
    """A private copy of the tiny release that a test may damage."""
    target = tmp_path / "IEMOCAP_full_release"
    shutil.copytree(corpus_tiny / "IEMOCAP_full_release", target)
    return target


def load(save, fold, split):
    return json.loads((save / f"fold_{fold}" / f"{split}.json").read_text())


def classes(manifest):
    return dict(collections.Counter(e["emo"] for e in manifest.values()))


def test_folds_have_the_exact_expected_counts(prepared, plan):
    save, summary = prepared
    kept = {t.utt_id: t for t in plan if t.label in KEPT_4}
    for s in range(1, 6):
        planned = collections.Counter(KEPT_4[t.label] for t in kept.values() if t.session == s)
        assert planned == TINY_SESSION
    for k in range(1, 6):
        train, valid, test = (load(save, k, split) for split in ("train", "valid", "test"))
        assert (len(train), len(valid), len(test)) == (29, 7, 9)  # valid = round(0.2 * 36)
        assert set(test) == {u for u, t in kept.items() if t.session == k}
        assert classes(test) == TINY_SESSION
        assert set(train) | set(valid) == {u for u, t in kept.items() if t.session != k}
        assert not set(train) & set(valid)
        pool = collections.Counter(classes(train)) + collections.Counter(classes(valid))
        assert pool == {c: 4 * n for c, n in TINY_SESSION.items()}
        for split, manifest in (("train", train), ("valid", valid), ("test", test)):
            for utt, entry in manifest.items():
                assert entry["fold"] == k
                assert (entry["session"] == k) == (split == "test")
                assert Path(entry["wav"]).is_absolute() and Path(entry["wav"]).is_file()
                assert entry["wav"].endswith(
                    f"/Session{entry['session']}/sentences/wav/{entry['dialog']}/{utt}.wav"
                )
                assert entry["duration"] > 0.5
        assert summary["folds"][str(k)]["test"]["count"] == 9
    assert summary["classes_per_session"] == {str(s): TINY_SESSION for s in range(1, 6)}
    assert summary["kept"] == 45 and summary["turns"] == 60
    assert summary["dropped_per_label"] == {
        "xxx": 5,
        "fru": 5,
        "sur": 2,
        "fea": 1,
        "oth": 1,
        "dis": 1,
    }
    assert summary["full_release"]["status"] == "not-full-release"
    assert "Not the IEMOCAP full release" in (save / "summary.txt").read_text()


def test_exc_merges_into_hap_and_dropped_labels_are_left_out(prepared, plan):
    save, _ = prepared
    entries = {**load(save, 1, "train"), **load(save, 1, "valid"), **load(save, 1, "test")}
    by_id = {t.utt_id: t for t in plan}
    assert {e["label"] for e in entries.values()} == {"neu", "hap", "exc", "sad", "ang"}
    for utt, entry in entries.items():
        assert entry["label"] == by_id[utt].label
        assert entry["emo"] == KEPT_4[entry["label"]]
    dropped = {t.utt_id for t in plan if t.label not in KEPT_4}
    assert len(dropped) == 15 and not dropped & set(entries)


def test_speaker_comes_from_the_utterance_name(prepared, plan):
    save, _ = prepared
    entries = {**load(save, 3, "test")}
    impro05a = {u: e for u, e in entries.items() if e["dialog"] == "Ses03M_impro05a"}
    planned = [t for t in plan if t.dialog == "Ses03M_impro05a" and t.label in KEPT_4]
    assert set(impro05a) == {t.utt_id for t in planned}
    assert {e["speaker"] for u, e in impro05a.items() if u.split("_")[-1].startswith("F")} == {
        "Ses03F"
    }
    assert any(e["speaker"] == "Ses03F" for e in impro05a.values())
    for fold in range(1, 6):
        for utt, entry in load(save, fold, "test").items():
            assert entry["speaker"] == f"Ses0{fold}" + utt.rsplit("_", 1)[1][0]
            assert entry["gender"] == entry["speaker"][-1]


def test_held_out_speaker_validation(corpus_tiny, tmp_path, plan):
    summary = prepare_iemocap(
        data_folder=str(corpus_tiny), save_folder=str(tmp_path), valid_mode="speaker"
    )
    for k in range(1, 6):
        held_out = iemocap.valid_speaker(k)
        expected = {
            t.utt_id for t in plan if t.label in KEPT_4 and f"Ses0{t.session}{t.gender}" == held_out
        }
        valid, train = load(tmp_path, k, "valid"), load(tmp_path, k, "train")
        assert set(valid) == expected and expected
        assert held_out not in {e["speaker"] for e in train.values()}
        assert len(train) + len(valid) == 36
    assert "fold 1: Ses02F" in summary["validation_rule"]


def test_malformed_label_line_names_file_and_line(release_copy, tmp_path):
    label_file = release_copy / "Session2" / "dialog" / "EmoEvaluation" / "Ses02M_script01_1.txt"
    lines = label_file.read_text().splitlines()
    n = next(i for i, line in enumerate(lines) if line.startswith("["))
    lines[n] = lines[n].replace(" - ", " to ")
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        IemocapFormatError, match=rf"^{re.escape(str(label_file))}:{n + 1}: cannot parse turn line"
    ):
        prepare_iemocap(data_folder=str(release_copy), save_folder=str(tmp_path / "out"))
    lines[n] = "this line is garbage"
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        IemocapFormatError, match=rf"{re.escape(str(label_file))}:{n + 1}: not a header"
    ):
        prepare_iemocap(data_folder=str(release_copy), save_folder=str(tmp_path / "out"))


def test_missing_wav_is_an_error_or_a_counted_skip(release_copy, tmp_path, plan):
    victim = next(t for t in plan if t.session == 4 and t.label == "sad")
    wav = release_copy / "Session4" / "sentences" / "wav" / victim.dialog / f"{victim.utt_id}.wav"
    wav.unlink()
    label_file = release_copy / "Session4" / "dialog" / "EmoEvaluation" / f"{victim.dialog}.txt"
    line_no = 1 + next(
        i for i, line in enumerate(label_file.read_text().splitlines()) if victim.utt_id in line
    )
    with pytest.raises(
        FileNotFoundError, match=rf"{re.escape(str(label_file))}:{line_no}: wav of {victim.utt_id}"
    ):
        prepare_iemocap(data_folder=str(release_copy), save_folder=str(tmp_path / "a"))
    summary = prepare_iemocap(
        data_folder=str(release_copy), save_folder=str(tmp_path / "b"), missing_wav="skip"
    )
    assert summary["skipped_missing_wav"] == [str(wav)]
    assert summary["classes_per_session"]["4"] == dict(TINY_SESSION, sad=1)
    assert (
        victim.utt_id not in load(tmp_path / "b", 4, "test")
        and len(load(tmp_path / "b", 4, "test")) == 8
    )


def test_missing_folder_and_empty_session_are_errors(release_copy, tmp_path):
    emo_dir = release_copy / "Session5" / "dialog" / "EmoEvaluation"
    for label_file in emo_dir.glob("*.txt"):
        text = label_file.read_text()
        label_file.write_text(re.sub(r"\t(neu|hap|exc|sad|ang)\t\[", "\txxx\t[", text))
    with pytest.raises(
        IemocapFormatError, match=rf"{re.escape(str(emo_dir))}: Session5 has no utterance"
    ):
        prepare_iemocap(data_folder=str(release_copy), save_folder=str(tmp_path / "out"))
    shutil.rmtree(release_copy / "Session4")
    with pytest.raises(FileNotFoundError, match=re.escape(str(release_copy / "Session4"))):
        prepare_iemocap(data_folder=str(release_copy), save_folder=str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="not found"):
        prepare_iemocap(data_folder=str(tmp_path / "nowhere"), save_folder=str(tmp_path / "out"))


def test_rerun_reuses_only_with_the_same_options_and_data(release_copy, tmp_path, caplog):
    save = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="qieemo_sb.data.iemocap")
    prepare_iemocap(data_folder=str(release_copy), save_folder=str(save), seed=1)
    first_valid = load(save, 2, "valid")
    stamp = (save / "fold_2" / "valid.json").stat().st_mtime_ns
    caplog.clear()
    prepare_iemocap(data_folder=str(release_copy), save_folder=str(save), seed=1)
    assert "reusing" in caplog.text
    assert (save / "fold_2" / "valid.json").stat().st_mtime_ns == stamp
    caplog.clear()
    prepare_iemocap(data_folder=str(release_copy), save_folder=str(save), seed=2)
    assert "reusing" not in caplog.text
    second_valid = load(save, 2, "valid")
    assert len(second_valid) == len(first_valid) == 7 and set(second_valid) != set(first_valid)
    assert json.loads((save / "prepare_options.json").read_text())["options"]["seed"] == 2
    # fewer folds: the other fold folders of the earlier run are gone
    prepare_iemocap(data_folder=str(release_copy), save_folder=str(save), seed=2, folds=[1, 2])
    assert sorted(p.name for p in save.glob("fold_*")) == ["fold_1", "fold_2"]
    # changed data with the same options: rewritten
    label_file = next((release_copy / "Session1" / "dialog" / "EmoEvaluation").glob("*.txt"))
    text = label_file.read_text()
    relabelled = re.sub(r"\tneu\t\[", "\tfru\t[", text, count=1)
    assert relabelled != text
    label_file.write_text(relabelled)
    caplog.clear()
    summary = prepare_iemocap(
        data_folder=str(release_copy), save_folder=str(save), seed=2, folds=[1, 2]
    )
    assert "reusing" not in caplog.text
    assert summary["classes_per_session"]["1"]["neu"] == TINY_SESSION["neu"] - 1


def test_hidden_label_copies_are_ignored_and_counted(release_copy, tmp_path):
    emo_dir = release_copy / "Session1" / "dialog" / "EmoEvaluation"
    (emo_dir / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05binary resource fork")
    (emo_dir / "Categorical").mkdir()
    (emo_dir / "Categorical" / "Ses01F_impro01_e1_cat.txt").write_text(
        "Ses01F_impro01_F000 :Neutral state; ()\n"
    )
    summary = prepare_iemocap(data_folder=str(release_copy), save_folder=str(tmp_path))
    assert summary["ignored_files"] == [str(emo_dir / "._Ses01F_impro01.txt")]
    assert summary["kept"] == 45


def _published_counts():
    rows = dict(iemocap.FULL_RELEASE["sessions"])
    cols = dict(iemocap.FULL_RELEASE["classes"])
    table = {s: {c: 0 for c in iemocap.CLASSES} for s in rows}
    for s in rows:  # north-west corner fill: row and column sums as published
        for c in iemocap.CLASSES:
            take = min(rows[s], cols[c])
            table[s][c] += take
            rows[s] -= take
            cols[c] -= take
    return table


def test_full_release_counts_are_checked():
    table = _published_counts()
    status, statement = iemocap.full_release_check(classes_per_session=table, turns=10039)
    assert status == "full-release" and "Matches" in statement
    table[3]["sad"] -= 1
    status, statement = iemocap.full_release_check(classes_per_session=table, turns=10038)
    assert status == "full-release-differs"
    assert "DIFFER" in statement and "5530 utterances" in statement and "1150" in statement


def test_label_line_parsing():
    line = "[140.2250 - 145.6000]\tSes01F_impro05_F019\tang\t[1.5000, 4.0000, 4.5000]\n"
    parsed = iemocap.parse_label_line(line, path="f.txt", line_no=3)
    assert (parsed.utt_id, parsed.label, parsed.start, parsed.vad) == (
        "Ses01F_impro05_F019",
        "ang",
        140.225,
        (1.5, 4.0, 4.5),
    )
    for other in (
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]",
        "",
        "C-E1:\tAnger;\t()",
        "A-F1:\tval 1; act 5; dom  5;\t()",
        "C-M2:\tFrustration; Anger;\t(annoyed)",
    ):
        assert iemocap.parse_label_line(other) is None
    with pytest.raises(IemocapFormatError, match="f.txt:9: unknown emotion label 'joy'"):
        iemocap.parse_label_line(
            "[1.0 - 2.0]\tSes01F_impro05_F019\tjoy\t[1, 2, 3]", path="f.txt", line_no=9
        )


def test_recipe_prepare_script(corpus_tiny, tmp_path):
    script = REPO / "recipes" / "IEMOCAP" / "Qieemo" / "iemocap_prepare.py"
    result = subprocess.run(
        [sys.executable, str(script), "--data_folder", str(corpus_tiny), "--save_folder", str(tmp_path),
         "--valid_mode", "speaker", "--folds", "2"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "fold 2: train" in result.stdout and "Not the IEMOCAP full release" in result.stdout
    assert sorted(p.name for p in tmp_path.glob("fold_*")) == ["fold_2"]
    bad = subprocess.run(
        [
            sys.executable,
            str(script),
            "--data_folder",
            str(tmp_path / "none"),
            "--save_folder",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "not found" in bad.stderr
