"""Stage-1 and stage-2 training throughput: one process, torchrun DDP, and bf16 autocast.

Each setting trains the tiny recipes for ``--epochs`` epochs on the same
synthetic corpus (``qieemo synth``; made here when ``--corpus`` is not given)
and reads the training time of the last epoch from train_log.txt
("train seconds"): utterances per second = training utterances / seconds.
Settings (on CPU, ``--threads`` cores in all):

- ``1 proc fp32``: ``python train.py`` with ``--threads`` threads;
- ``N proc fp32 (gloo)``: ``torchrun --nproc_per_node=N`` with
  ``threads / N`` threads each;
- ``1 proc bf16``: ``--precision bf16`` (CPU autocast).

The ratios against ``1 proc fp32`` are measured in the same run. On a GPU
machine pass ``--device cuda`` (one process per GPU, NCCL; fp16 as well).

Usage::

    python benchmarks/distributed_training.py --threads 2
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASR = ROOT / "recipes" / "LibriSpeech" / "ASR"
EMOTION = ROOT / "recipes" / "IEMOCAP" / "Qieemo"


def last_train_seconds(train_log: Path) -> float:
    seconds = re.findall(r"train seconds: ([0-9.e+-]+)", train_log.read_text())
    if not seconds:
        raise RuntimeError(f"{train_log}: no 'train seconds' in the epoch lines")
    return float(seconds[-1])


def run(command, cwd, threads, processes, device):
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes))}
    if processes > 1:
        backend = "gloo" if device == "cpu" else "nccl"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", *command[1:], "--distributed_backend", backend]
    start = time.time()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all (split over processes)")
    parser.add_argument("--processes", type=int, default=2, help="torchrun processes of the DDP setting")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is timed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--corpus", type=Path, help="a `qieemo synth` folder (default: made here)")
    parser.add_argument("--scale", type=float, default=0.12, help="size of the made corpus (of --size small)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="ddp_bench_")))
    args = parser.parse_args()

    corpus = args.corpus
    if corpus is None:
        from qieemo_sb.data.synthetic import generate

        corpus = args.out / "corpus"
        generate(out_dir=corpus, size="small", scale=args.scale, seed=0, progress=False)
    low_precision = "bf16" if args.device == "cpu" else "fp16"
    settings = [("1 proc fp32", 1, "fp32"), (f"{args.processes} proc fp32", args.processes, "fp32"),
                (f"1 proc {low_precision}", 1, low_precision)]
    common = ["--device", args.device, "--number_of_epochs", str(args.epochs)]
    results = {}
    pretrained = None
    for name, processes, precision in settings:
        out = args.out / name.replace(" ", "_")
        asr_command = [sys.executable, "train.py", "hparams/efficient_conformer_tiny.yaml",
                       "--data_folder", str(corpus / "LibriSpeech"), "--output_folder", str(out / "asr"),
                       "--output_neurons", "60", "--precision", precision, *common]
        run(asr_command, ASR, args.threads, processes, args.device)
        # Stage 2 of every setting starts from the same stage-1 encoder (the first setting's).
        pretrained = pretrained or out / "asr" / "pretrained"
        emotion_command = [sys.executable, "train.py", "hparams/qieemo_tiny.yaml",
                           "--data_folder", str(corpus / "IEMOCAP_full_release"), "--pretrained_asr", str(pretrained),
                           "--experiment_folder", str(out / "emotion"), "--fold", "1", "--freeze_encoder_epochs", "0", "--encoder_cache", "null",
                           "--precision", precision, *common]
        run(emotion_command, EMOTION, args.threads, processes, args.device)
        asr_clips = len((out / "asr" / "manifests" / "train.csv").read_text().splitlines()) - 1
        emotion_clips = len(json.loads((out / "emotion" / "fold_1" / "manifests" / "fold_1" / "train.json").read_text()))
        results[name] = {
            "stage 1 utt/s": asr_clips / last_train_seconds(out / "asr" / "train_log.txt"),
            "stage 2 utt/s": emotion_clips / last_train_seconds(out / "emotion" / "fold_1" / "train_log.txt"),
        }
        print(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in results[name].items()), flush=True)

    reference = results["1 proc fp32"]
    print(f"\n{args.device}, {args.threads} threads in all, {args.epochs} epochs (last timed); corpus {corpus}")
    print("| setting | stage 1 utt/s | x | stage 2 utt/s | x |\n|---|---|---|---|---|")
    for name, figures in results.items():
        print(f"| {name} | {figures['stage 1 utt/s']:.1f} | {figures['stage 1 utt/s'] / reference['stage 1 utt/s']:.2f} "
              f"| {figures['stage 2 utt/s']:.1f} | {figures['stage 2 utt/s'] / reference['stage 2 utt/s']:.2f} |")


if __name__ == "__main__":
    main()
