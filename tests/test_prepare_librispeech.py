"""LibriSpeech preparation on the tiny synthetic corpus: manifests, errors, re-runs."""

import csv
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from qieemo_sb.data.librispeech import LibriSpeechFormatError, prepare_librispeech
from qieemo_sb.data.synthetic import SIZES, plan_librispeech

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train-clean-100", "dev-clean", "test-clean")


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def libri_copy(corpus_tiny, tmp_path):
    target = tmp_path / "LibriSpeech"
    shutil.copytree(corpus_tiny / "LibriSpeech", target)
    return target


def test_manifests_match_the_corpus(corpus_tiny, tmp_path):
    summary = prepare_librispeech(data_folder=str(corpus_tiny), save_folder=str(tmp_path))
    plan = {u.utt_id: u for u in plan_librispeech(size=SIZES["tiny"], seed=0)}
    expected = {"train-clean-100": 24, "dev-clean": 6, "test-clean": 6}
    for split in SPLITS:
        with open(tmp_path / f"{split}.csv", newline="") as handle:
            assert next(csv.reader(handle)) == ["ID", "duration", "wav", "spk_id", "wrd"]
        rows = read(tmp_path / f"{split}.csv")
        assert len(rows) == expected[split] == summary["splits"][split]["rows"]
        assert {r["ID"] for r in rows} == {u for u, p in plan.items() if p.split == split}
        for r in rows:
            planned = plan[r["ID"]]
            assert r["wrd"] == planned.words
            assert r["spk_id"] == f"{planned.speaker}-{planned.chapter}"
            assert Path(r["wav"]).is_absolute()
            assert Path(r["wav"]) == (corpus_tiny / planned.clip.path).resolve()
            assert float(r["duration"]) == pytest.approx(sf.info(r["wav"]).frames / 16000, abs=1e-4)
        ids = [tuple(int(x) for x in r["ID"].split("-")) for r in rows]
        assert ids == sorted(ids)


def test_select_and_merge(corpus_tiny, tmp_path):
    prepare_librispeech(
        data_folder=str(corpus_tiny / "LibriSpeech"), save_folder=str(tmp_path), tr_splits=["train-clean-100"],
        dev_splits=["dev-clean"], te_splits=[], select_n_sentences=[10, 4],
        merge_lst=["train-clean-100", "dev-clean"], merge_name="train.csv",
    )  # fmt: skip
    assert len(read(tmp_path / "train-clean-100.csv")) == 10
    assert len(read(tmp_path / "dev-clean.csv")) == 4
    assert not (tmp_path / "test-clean.csv").exists()
    merged = read(tmp_path / "train.csv")
    assert [r["ID"] for r in merged] == [
        r["ID"] for r in read(tmp_path / "train-clean-100.csv")
    ] + [r["ID"] for r in read(tmp_path / "dev-clean.csv")]


def test_malformed_transcript_line_names_file_and_line(libri_copy, tmp_path):
    trans = sorted((libri_copy / "dev-clean").glob("*/*/*.trans.txt"))[0]
    lines = trans.read_text().splitlines()
    lines[1] = lines[1].split(" ", 1)[0] + " " + lines[1].split(" ", 1)[1].lower()
    trans.write_text("\n".join(lines) + "\n")
    with pytest.raises(LibriSpeechFormatError, match=rf"^{re.escape(str(trans))}:2: expected"):
        prepare_librispeech(data_folder=str(libri_copy), save_folder=str(tmp_path / "out"))
    lines[1] = "1-2-0001 WRONG CHAPTER"
    trans.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        LibriSpeechFormatError, match=rf"{re.escape(str(trans))}:2: utterance 1-2-0001 is not of"
    ):
        prepare_librispeech(data_folder=str(libri_copy), save_folder=str(tmp_path / "out"))


def test_missing_audio_is_an_error_or_a_counted_skip(libri_copy, tmp_path):
    flac = sorted((libri_copy / "test-clean").rglob("*.flac"))[2]
    flac.unlink()
    trans = next(flac.parent.glob("*.trans.txt"))
    with pytest.raises(
        FileNotFoundError, match=rf"{re.escape(str(trans))}:3: audio of {flac.stem} not found"
    ):
        prepare_librispeech(data_folder=str(libri_copy), save_folder=str(tmp_path / "a"))
    summary = prepare_librispeech(
        data_folder=str(libri_copy), save_folder=str(tmp_path / "b"), missing_audio="skip"
    )
    assert summary["splits"]["test-clean"]["skipped_missing_audio"] == [str(flac)]
    assert len(read(tmp_path / "b" / "test-clean.csv")) == 5
    with pytest.raises(FileNotFoundError, match=re.escape(str(libri_copy / "dev-other"))):
        prepare_librispeech(
            data_folder=str(libri_copy), save_folder=str(tmp_path / "c"), dev_splits=["dev-other"]
        )


def test_rerun_reuses_only_with_the_same_options_and_data(libri_copy, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="qieemo_sb.data.librispeech")
    save = tmp_path / "out"
    kwargs = dict(
        data_folder=str(libri_copy),
        save_folder=str(save),
        merge_lst=["train-clean-100"],
        merge_name="train.csv",
    )
    prepare_librispeech(**kwargs)
    stamp = (save / "dev-clean.csv").stat().st_mtime_ns
    caplog.clear()
    prepare_librispeech(**kwargs)
    assert "reusing" in caplog.text and (save / "dev-clean.csv").stat().st_mtime_ns == stamp
    caplog.clear()
    prepare_librispeech(data_folder=str(libri_copy), save_folder=str(save), select_n_sentences=2)
    assert "reusing" not in caplog.text
    assert [len(read(save / f"{s}.csv")) for s in SPLITS] == [2, 2, 2]
    assert not (save / "train.csv").exists()  # the earlier run's merged file is gone
    trans = sorted((libri_copy / "dev-clean").glob("*/*/*.trans.txt"))[0]
    trans.write_text(trans.read_text().replace(" THE ", " A ", 1))
    caplog.clear()
    prepare_librispeech(data_folder=str(libri_copy), save_folder=str(save), select_n_sentences=2)
    assert "reusing" not in caplog.text


def test_recipe_prepare_script(corpus_tiny, tmp_path):
    script = REPO / "recipes" / "LibriSpeech" / "ASR" / "librispeech_prepare.py"
    result = subprocess.run(
        [sys.executable, str(script), "--data_folder", str(corpus_tiny), "--save_folder", str(tmp_path),
         "--te_splits", "--merge_lst", "train-clean-100", "--merge_name", "train.csv"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == [
        "dev-clean.csv",
        "train-clean-100.csv",
        "train.csv",
    ]
    assert "train-clean-100: 24 utterances" in result.stdout
