"""``qieemo predict MODEL_DIR FILE...``: classify audio files with an exported model.

One line per file: the file, the predicted class and every class's
probability. ``--json`` prints one JSON object per line instead (``file``,
``label``, ``probabilities``; ``timeline`` with ``--timeline``; ``error`` for a
file that could not be classified). ``--timeline`` classifies windows of
``--window`` seconds every ``--hop`` seconds (long recordings), each window
encoded alone (``--one-pass``: the file encoded once, windows cut from it).
``--precision bf16`` multiplies in bfloat16, ``int8`` the feed-forward
products in int8 (the others in bfloat16 or float32, whichever the CPU runs
faster); ``--onnx`` runs the exported ``model.onnx`` in onnxruntime
(``--precision int8``: ``model.int8.onnx``; no timeline). A bad
file is reported (naming it) and the others are still classified; the exit
code is then 1.

Example
-------
>>> format_probabilities({"neu": 0.1, "ang": 0.9})
'neu=0.100 ang=0.900'
"""

import argparse
import json
import sys
from typing import Dict

import numpy as np


def format_probabilities(probabilities: Dict[str, float]) -> str:
    """``{label: p}`` -> ``'label=p ...'`` with three decimals."""
    return " ".join(f"{label}={p:.3f}" for label, p in probabilities.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``qieemo predict``."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a folder written by `qieemo export` (or a hub id)")
    parser.add_argument("files", metavar="FILE", nargs="+", help="audio files (wav, flac, ogg; any rate, any channels)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--timeline", action="store_true", help="classify windows of each file (long recordings)")
    parser.add_argument("--window", type=float, default=None, help="timeline window, seconds (default: the model's)")
    parser.add_argument("--hop", type=float, default=None, help="timeline hop, seconds (default: the model's)")
    parser.add_argument("--one-pass", action="store_true",
                        help="timeline: encode the file once and cut the windows from it (faster, in context)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32",
                        help="float32; bfloat16 products (PyTorch); int8 feed-forward products, or with --onnx "
                             "model.int8.onnx")
    parser.add_argument("--onnx", action="store_true", help="run model.onnx in onnxruntime (export with --onnx)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args: argparse.Namespace) -> int:
    """Runs ``qieemo predict``; returns 0, or 1 if any file failed."""
    from qieemo_sb.audio import AudioError

    problem = None
    if args.onnx and args.precision == "bf16":
        problem = "--precision bf16 runs in PyTorch: drop --onnx"
    if args.onnx and args.timeline:
        problem = "--timeline runs in PyTorch: drop --onnx"
    if problem:
        print(f"qieemo predict: error: {problem}", file=sys.stderr)
        return 2
    if args.onnx:
        from qieemo_sb.onnx_export import OnnxClassifier

        try:
            classifier = OnnxClassifier(args.model_dir, int8=args.precision == "int8")
        except FileNotFoundError as error:
            print(f"qieemo predict: error: {error}", file=sys.stderr)
            return 2
    else:
        from qieemo_sb.inference import QieemoClassifier

        classifier = QieemoClassifier.from_hparams(source=args.model_dir, run_opts={"device": args.device},
                                                   precision=args.precision)
    failed = 0
    for path in args.files:
        try:
            if args.onnx:
                log_probs, label = classifier.classify_file(path)
                record = {"file": path, "label": label,
                          "probabilities": dict(zip(classifier.labels, np.exp(log_probs).tolist()))}
            elif args.timeline:
                segments = classifier.classify_timeline(path, window=args.window, hop=args.hop,
                                                         one_pass=args.one_pass)
                record = {"file": path, "timeline": [segment._asdict() for segment in segments]}
            else:
                out_prob, _, _, text_lab = classifier.classify_file(path)
                record = {"file": path, "label": text_lab[0],
                          "probabilities": dict(zip(classifier.labels, out_prob[0].exp().tolist()))}
        except (AudioError, ValueError) as error:
            failed += 1
            print(f"qieemo predict: error: {error}", file=sys.stderr)
            if args.json:
                print(json.dumps({"file": path, "error": str(error)}), flush=True)
            continue
        if args.json:
            print(json.dumps(record), flush=True)
        elif args.timeline:
            for segment in record["timeline"]:
                print(f"{path}\t{segment['start']:.2f}-{segment['end']:.2f}\t{segment['label']}\t"
                      f"{format_probabilities(segment['probabilities'])}", flush=True)
        else:
            print(f"{path}\t{record['label']}\t{format_probabilities(record['probabilities'])}", flush=True)
    return 1 if failed else 0
