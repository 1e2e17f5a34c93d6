"""torchrun (2 CPU processes, gloo) for both recipes, mixed precision, and recipes run from a copied folder."""

import csv
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from qieemo_sb.distributed import EvaluationShard, gather_lists, mean_over_processes
from recipe_runs import ASR_RECIPE, RECIPE, ROOT, emotion_args, run, torchrun

METRICS = ("wa", "ua", "wf1", "macro_f1", "confusion")


@pytest.mark.parametrize("num_items", [0, 1, 7, 8])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_evaluation_shards_cover_each_item_once(num_items, world_size):
    shards = [list(EvaluationShard(num_items, rank=r, world_size=world_size)) for r in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(num_items))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_single_process_helpers_are_the_identity():
    assert gather_lists((1, 2)) == [1, 2]
    assert mean_over_processes(2.5, count=3) == 2.5
    with pytest.raises(ValueError, match="rank 2 is not in"):
        EvaluationShard(4, rank=2, world_size=2)


def asr_args(corpus, output, *extra):
    return ["hparams/efficient_conformer_tiny.yaml", "--data_folder", corpus / "LibriSpeech",
            "--output_folder", output, "--output_neurons", 60, *extra]


def test_asr_recipe_under_torchrun(corpus_tiny, tmp_path):
    output = tmp_path / "asr"
    torchrun("train.py", *asr_args(corpus_tiny, output, "--number_of_epochs", 1,
                                   "--error_rates_before_after", True), cwd=ASR_RECIPE)
    assert len(list((output / "save").glob("CKPT+*"))) == 1
    assert not list(output.rglob("*.tmp")) and not list((output / "save").glob(".partial-*"))
    test_clips = len((output / "manifests" / "test-clean.csv").read_text().splitlines()) - 1
    scored = (output / "wer_test-clean.txt").read_text()
    assert f"Scored {test_clips} sentences" in scored  # both processes' shares, each clip once
    rates = json.loads((output / "error_rates.json").read_text())
    assert set(rates["before"]) == set(rates["after"]) == {"dev-clean", "test-clean"}
    log = (output / "train_log.txt").read_text().splitlines()
    assert len(log) == 2 and log[0].startswith("epoch: 1") and "test WER" in log[1]
    assert (output / "pretrained" / "encoder.ckpt").is_file()


def test_asr_recipe_resumes_after_all_processes_are_killed(corpus_tiny, tmp_path):
    output = tmp_path / "asr"
    # One clip per step: epoch 1 lasts seconds after its first checkpoint, so the kill lands inside it.
    args = asr_args(corpus_tiny, output, "--number_of_epochs", 2, "--ckpt_interval_steps", 1, "--max_batch_ex", 1,
                    "--device", "cpu", "--distributed_backend", "gloo")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
         *map(str, args)], cwd=ASR_RECIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and launcher.poll() is None:
        if any((c / "brain.ckpt").is_file() for c in (output / "save").glob("CKPT+*")):
            break
        time.sleep(0.05)
    assert launcher.poll() is None, "the run ended before it could be interrupted"
    # torchrun starts each rank in a session of its own: kill the ranks by parent, then the launcher.
    ranks = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    assert len(ranks) == 2
    subprocess.run(["kill", "-KILL", *ranks, str(launcher.pid)], check=True)
    launcher.wait()
    log = output / "train_log.txt"
    assert not log.exists() or not log.read_text().strip(), "the kill came after epoch 1 had ended"

    result = torchrun("train.py", *args, cwd=ASR_RECIPE)
    assert "Loading a checkpoint from" in result.output
    epochs = [line.split(",")[0] for line in (output / "train_log.txt").read_text().splitlines()
              if line.startswith("epoch:")]
    assert epochs == ["epoch: 1", "epoch: 2"]  # each epoch once: no restart from zero
    assert (output / "pretrained" / "encoder.ckpt").is_file()


def read_predictions(fold_folder):
    with open(fold_folder / "test_predictions.csv", newline="") as handle:
        return {row.pop("id"): row for row in csv.DictReader(handle)}


def test_emotion_fold_under_torchrun_scores_as_one_process(stage1, corpus_tiny, tmp_path):
    args = ["hparams/qieemo_tiny.yaml",
            *emotion_args(corpus_tiny / "IEMOCAP_full_release", stage1["efficient_conformer_tiny"], tmp_path,
                          "--number_of_epochs", 2, "--fold", 1)]
    torchrun("train.py", *args)
    fold = tmp_path / "fold_1"
    assert len(list((fold / "save").glob("CKPT+*"))) == 1
    distributed = json.loads((fold / "test_metrics.json").read_text())
    distributed_predictions = read_predictions(fold)
    test_clips = len(json.loads((fold / "manifests" / "fold_1" / "test.json").read_text()))
    assert len(distributed_predictions) == sum(distributed["support"]) == test_clips

    # One process, the same checkpoint: training is over, so it only tests.
    run("train.py", *args)
    single = json.loads((fold / "test_metrics.json").read_text())
    assert {k: distributed[k] for k in METRICS} == {k: single[k] for k in METRICS}
    single_predictions = read_predictions(fold)
    assert distributed_predictions.keys() == single_predictions.keys()
    for utt, row in single_predictions.items():
        assert row["prediction"] == distributed_predictions[utt]["prediction"]
        for column in row:
            if column.startswith("p_"):
                assert abs(float(row[column]) - float(distributed_predictions[utt][column])) <= 2e-5


def test_fold_runner_and_probe_under_torchrun(stage1, corpus_tiny, tmp_path):
    data = corpus_tiny / "IEMOCAP_full_release"
    args = ["hparams/qieemo_tiny.yaml", *emotion_args(data, stage1["efficient_conformer_tiny"], tmp_path,
                                                        "--number_of_epochs", 1, "--folds", "[1, 2]")]
    output = torchrun("run_folds.py", *args).stdout
    assert output.count("fold 2: training") == 1 and output.count("| **mean** |") == 1
    summary = json.loads((tmp_path / "results.json").read_text())
    assert sorted(summary["folds"]) == ["1", "2"] and int(sum(summary["pooled"]["support"])) == 18

    torchrun("probe.py", *args, "--probe_epochs", 5)
    features = torch.load(tmp_path / "probe" / "block_features.pt")["features"]
    assert len(features) == 45  # both processes' shares, gathered
    single = tmp_path / "single"
    run("probe.py", "hparams/qieemo_tiny.yaml",
        *emotion_args(data, stage1["efficient_conformer_tiny"], single, "--probe_epochs", 5, "--folds", "[1, 2]"))
    reference = torch.load(single / "probe" / "block_features.pt")["features"]
    assert features.keys() == reference.keys()
    assert max((features[u] - reference[u]).abs().max().item() for u in reference) < 1e-4


@pytest.mark.parametrize("recipe", ["asr", "emotion"])
def test_bf16_training(recipe, stage1, corpus_tiny, tmp_path):
    """--precision bf16 (CPU autocast): finite losses, the run completes and tests."""
    if recipe == "asr":
        run("train.py", *asr_args(corpus_tiny, tmp_path, "--debug", "--device", "cpu", "--precision", "bf16"),
            cwd=ASR_RECIPE)
        log = (tmp_path / "train_log.txt").read_text()
    else:
        run("train.py", "hparams/qieemo_tiny.yaml",
            *emotion_args(corpus_tiny / "IEMOCAP_full_release", stage1["efficient_conformer_tiny"], tmp_path,
                          "--number_of_epochs", 2, "--fold", 1, "--precision", "bf16"))
        log = (tmp_path / "fold_1" / "train_log.txt").read_text()
    assert not re.search(r"\b(nan|inf)\b", log), log
    assert "test loss" in log


def test_recipe_folder_copied_elsewhere_runs(stage1, corpus_tiny, tmp_path):
    """The backbone YAMLs come from the installed package, not from a path into the checkout."""
    copy = tmp_path / "my_recipe"
    shutil.copytree(RECIPE, copy, ignore=shutil.ignore_patterns("results", "__pycache__"))
    run("probe.py", "hparams/qieemo_tiny.yaml",
        *emotion_args(corpus_tiny / "IEMOCAP_full_release", stage1["efficient_conformer_tiny"], tmp_path / "run",
                      "--probe_epochs", 2, "--folds", "[1]"), cwd=copy)
    assert (tmp_path / "run" / "probe" / "probe_results.json").is_file()


def test_wheel_carries_the_backbone_yamls(tmp_path):
    """``pip install .`` (not editable) gets the YAMLs the recipes include."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "qieemo_sb", source / "qieemo_sb", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("qieemo_sb-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"qieemo_sb/hparams/backbones/{p.name}" for p in (ROOT / "qieemo_sb/hparams/backbones").glob("*.yaml")}
    assert len(expected) == 5 and expected <= names
