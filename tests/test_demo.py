"""``qieemo demo --size tiny``: the whole pipeline, every file its summary names, Ctrl-C and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from qieemo_sb.demo import DEMO_SIZES, EXPERIMENTS, DemoPaths, find_recipes, run_demo, summary_files
from recipe_runs import ROOT

LABELS = ["neu", "hap", "sad", "ang"]


def demo_command(out):
    return [sys.executable, "-m", "qieemo_sb.cli", "demo", "--size", "tiny", "--out", str(out), "--no-progress"]


def test_tiny_demo_interrupted_then_continued_produces_every_file_it_names(tmp_path):
    out = tmp_path / "demo"
    paths = DemoPaths(out)
    # Ctrl-C (SIGINT to the whole process group, as a terminal sends it) once
    # stage 2 has finished a fold of the first experiment.
    first = subprocess.Popen(
        demo_command(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        # A shell without job control starts background jobs with SIGINT ignored, and that is inherited:
        # give the demo a terminal's default, whatever started pytest.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 600
    while not (paths.experiment("qieemo") / "fold_1" / "test_metrics.json").is_file():
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.time() < deadline, "stage 2 never started"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGINT)
    interrupted_output = first.communicate(timeout=120)[0]
    assert first.returncode == 130, interrupted_output[-3000:]
    assert "run the same command again to continue" in interrupted_output
    asr_checkpoint = paths.pretrained / "encoder.ckpt"
    asr_written = asr_checkpoint.stat().st_mtime_ns
    fold_1_written = (paths.experiment("qieemo") / "fold_1" / "test_metrics.json").stat().st_mtime_ns

    second = subprocess.run(demo_command(out), capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    output = second.stdout
    assert "stage 1 finished earlier" in output and "fold 1: finished earlier" in output
    assert asr_checkpoint.stat().st_mtime_ns == asr_written
    assert (paths.experiment("qieemo") / "fold_1" / "test_metrics.json").stat().st_mtime_ns == fold_1_written

    # Every file the summary names exists and is printed.
    for name, path in summary_files(paths).items():
        assert path.exists(), f"{name}: {path} missing"
        assert str(path) in output, name
    assert (paths.model / "export.json").is_file() and (paths.model / "custom_interface.py").is_file()

    rates = json.loads(paths.error_rates.read_text())
    for moment in ("before", "after"):
        assert set(rates[moment]) == {"dev-clean", "test-clean"}
        for figures in rates[moment].values():
            assert 0 <= figures["CER"] <= 100 and figures["WER"] >= 0
    assert set(rates["after_test_search"]) == {"test-clean"}

    folds = DEMO_SIZES["tiny"].folds
    for name in EXPERIMENTS:
        summary = json.loads((paths.experiment(name) / "results.json").read_text())
        assert sorted(summary["folds"], key=int) == [str(k) for k in folds]
        assert f"| {name} | {len(folds)} | " in output
    results = paths.results.read_text()
    assert "WER before" in results and f"| qieemo | {len(folds)} |" in results
    assert f"| no_pretraining | {len(folds)} |" in results

    predictions = json.loads(paths.held_out.read_text())
    assert [p["target"] for p in predictions] == LABELS
    for prediction in predictions:
        assert prediction["id"].startswith("Ses01")  # session 1: fold 1's held-out session
        assert prediction["prediction"] in LABELS
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert prediction["id"] in output

    # A third run has nothing left to do.
    third = subprocess.run(demo_command(out), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and third.stdout.count("finished earlier") == 1 + len(EXPERIMENTS) * len(folds)
    assert ": done in" not in third.stdout


def test_demo_refuses_an_unknown_size(tmp_path):
    from qieemo_sb.demo import run_demo

    with pytest.raises(ValueError, match="unknown demo size 'huge'"):
        run_demo(tmp_path, size="huge")


def test_demo_finds_the_recipes_from_inside_the_checkout_only(tmp_path):
    assert find_recipes(ROOT / "recipes" / "IEMOCAP" / "Qieemo" / "hparams") == ROOT / "recipes"
    with pytest.raises(FileNotFoundError, match="run the demo inside the source checkout, or give its recipes"):
        find_recipes(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"--recipes .*: no LibriSpeech/ASR/train.py in it"):
        run_demo(tmp_path / "out", size="tiny", recipes=tmp_path)
