"""``classify_timeline`` in one pass against per window: label agreement and speed.

An exported model classifies the windows of each recording both ways; the
script prints, per recording and in all, how many windows get the same label,
the largest probability difference, how often the per-window labels are
their most common one (what a constant answer would agree), and each mode's
time. ``--concatenate OUT.wav`` first joins the given clips (mono, 16 kHz,
0.5 s of silence between them) into one recording, to score a timeline over
turns of real speech.

Usage::

    python benchmarks/timeline_agreement.py MODEL_DIR clips/*.wav --concatenate joined.wav --threads 2
"""

import argparse
import collections
import time

import numpy as np
import soundfile
import torch

from qieemo_sb.audio import load_audio


def concatenate(paths, out_path, sample_rate=16000, gap=0.5):
    """Joins the clips (mono, ``sample_rate``) with ``gap`` seconds of silence; returns ``out_path``."""
    silence = np.zeros(int(gap * sample_rate), dtype="float32")
    pieces = []
    for path in paths:
        pieces += [load_audio(path, sample_rate=sample_rate).numpy(), silence]
    soundfile.write(out_path, np.concatenate(pieces), sample_rate)
    return out_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("audio", nargs="+")
    parser.add_argument("--concatenate", metavar="OUT_WAV", help="join the clips into this recording first")
    parser.add_argument("--window", type=float, default=None)
    parser.add_argument("--hop", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from qieemo_sb.inference import QieemoClassifier

    classifier = QieemoClassifier.from_hparams(source=args.model_dir, run_opts={"device": "cpu"})
    recordings = [concatenate(args.audio, args.concatenate)] if args.concatenate else args.audio
    agree = windows = 0
    largest = 0.0
    seconds = {"one pass": 0.0, "per window": 0.0}
    per_window_labels = []
    audio_seconds = 0.0
    for path in recordings:
        timelines = {}
        for mode in seconds:
            start = time.perf_counter()
            timelines[mode] = classifier.classify_timeline(path, window=args.window, hop=args.hop,
                                                           per_window=mode == "per window")
            seconds[mode] += time.perf_counter() - start
        audio_seconds += soundfile.info(str(path)).duration
        pairs = list(zip(timelines["one pass"], timelines["per window"]))
        same = sum(a.label == b.label for a, b in pairs)
        difference = max(abs(a.probabilities[k] - b.probabilities[k]) for a, b in pairs for k in a.probabilities)
        agree, windows, largest = agree + same, windows + len(pairs), max(largest, difference)
        per_window_labels += [b.label for _, b in pairs]
        print(f"{path}: {same}/{len(pairs)} windows agree, max |p difference| {difference:.3f}")
    most_common, count = collections.Counter(per_window_labels).most_common(1)[0]
    print(f"all: {agree}/{windows} windows agree ({100 * agree / windows:.1f} %), max |p difference| {largest:.3f}; "
          f"per-window labels {dict(collections.Counter(per_window_labels))} (the most common, {most_common}, "
          f"{100 * count / windows:.1f} %)")
    print(f"{audio_seconds:.1f} s of audio, {args.threads} threads: " + ", ".join(
        f"{mode} {s:.2f} s ({audio_seconds / s:.0f}x real time)" for mode, s in seconds.items()))


if __name__ == "__main__":
    main()
