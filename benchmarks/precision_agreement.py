"""Reduced precision and ONNX against float32 PyTorch: label agreement and probability differences.

Each clip is classified by the exported model in float32 PyTorch (the
reference) and in each mode: ``bf16`` and ``int8`` (PyTorch's
``precision``), ``onnx`` and ``onnx-int8`` (onnxruntime, ``model.onnx`` /
``model.int8.onnx``: needs ``qieemo export --onnx``). Printed per mode,
over all clips and per group of clips: how many labels equal the
reference's, the largest and the mean largest-per-clip |probability|
difference, and the share of the reference's most common label (what a
constant answer would agree).

Usage::

    python benchmarks/precision_agreement.py MODEL_DIR --clips synthetic='data/IEMOCAP_full_release/Session*/sentences/wav/*/*.wav' \\
        --clips real='../shared/data/real-speech/*.wav' --modes bf16 int8 onnx onnx-int8
"""

import argparse
import csv
import glob

import numpy as np
import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--clips", action="append", required=True, metavar="NAME=GLOB",
                        help="a group of clips (repeatable); a .csv manifest's wav column also works")
    parser.add_argument("--modes", nargs="+", choices=["bf16", "int8", "onnx", "onnx-int8"], default=["bf16"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from qieemo_sb.inference import QieemoClassifier

    groups = {}
    for entry in args.clips:
        name, pattern = entry.split("=", 1)
        if pattern.endswith(".csv"):
            with open(pattern, newline="") as handle:
                groups[name] = [row["wav"] for row in csv.DictReader(handle)]
        else:
            groups[name] = sorted(glob.glob(pattern))
        if not groups[name]:
            parser.error(f"--clips {entry}: no files")

    reference = QieemoClassifier.from_hparams(source=args.model_dir, run_opts={"device": "cpu"})
    runners = {}
    for mode in args.modes:
        if mode in ("bf16", "int8"):
            reduced = QieemoClassifier.from_hparams(source=args.model_dir, run_opts={"device": "cpu"}, precision=mode)
            runners[mode] = lambda wav, reduced=reduced: reduced.classify_batch(wav.unsqueeze(0))[0][0].numpy()
        else:
            from qieemo_sb.onnx_export import OnnxClassifier

            runner = OnnxClassifier(args.model_dir, int8=mode == "onnx-int8", threads=args.threads)
            runners[mode] = lambda wav, runner=runner: runner.run_features(*runner.features([wav.numpy()]))[0][0]

    results = {mode: {name: [] for name in groups} for mode in runners}
    for name, paths in groups.items():
        for path in paths:
            wav = reference.load_audio(path)
            want = np.exp(reference.classify_batch(wav.unsqueeze(0))[0][0].numpy())
            for mode, classify in runners.items():
                have = np.exp(classify(wav))
                results[mode][name].append((want.argmax() == have.argmax(), float(np.abs(want - have).max()),
                                            int(want.argmax())))

    print(f"model: {args.model_dir}")
    print("| mode | clips | same label | agreement | max abs p difference | mean of per-clip max | most common label |")
    print("|---|---|---|---|---|---|---|")
    for mode, by_group in results.items():
        rows = list(by_group.items()) + [("all", [r for rs in by_group.values() for r in rs])]
        for name, pairs in rows:
            same = sum(p[0] for p in pairs)
            diffs = [p[1] for p in pairs]
            common = max(np.bincount([p[2] for p in pairs])) / len(pairs)
            print(f"| {mode} | {name} ({len(pairs)}) | {same} | {100 * same / len(pairs):.2f} % "
                  f"| {max(diffs):.4f} | {np.mean(diffs):.4f} | {100 * common:.0f} % |")


if __name__ == "__main__":
    main()
