"""``classify_timeline`` in one pass against per window: label agreement and speed.

An exported model classifies the windows of each recording both ways; the
script prints, per recording and in all, how many windows get the same label,
the largest probability difference, how often the per-window labels are
their most common one (what a constant answer would agree), and each mode's
time. ``--concatenate OUT.wav`` first joins the given clips (mono, 16 kHz,
0.5 s of silence between them) into one recording, to score a timeline over
turns of real speech; with ``--labels MANIFEST`` (``wav``, ``emo``) each mode
is also scored against the label of the clip that fills most of each window
(windows mostly of one clip only). ``--shift-ms N`` also classifies each
recording window by window with its first N ms cut off and prints how many
windows keep their label when they move by N ms: how steady the per-window
labels themselves are, a yardstick for any other way of computing them.

Usage::

    python benchmarks/timeline_agreement.py MODEL_DIR clips/*.wav --concatenate joined.wav --threads 2 \
        [--labels manifest.csv] [--shift-ms 10]
"""

import argparse
import collections
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from qieemo_sb.audio import load_audio


def concatenate(paths, out_path, sample_rate=16000, gap=0.5):
    """Joins the clips (mono, ``sample_rate``) with ``gap`` seconds of silence; returns
    ``out_path`` and each clip's ``(path, start, end)`` in seconds."""
    silence = np.zeros(int(gap * sample_rate), dtype="float32")
    pieces, spans, start = [], [], 0
    for path in paths:
        wav = load_audio(path, sample_rate=sample_rate).numpy()
        spans.append((path, start / sample_rate, (start + len(wav)) / sample_rate))
        pieces += [wav, silence]
        start += len(wav) + len(silence)
    soundfile.write(out_path, np.concatenate(pieces), sample_rate)
    return out_path, spans


def window_truth(segment, spans, labels):
    """The label of the clip covering most of ``segment`` if it covers over half of it, else None."""
    overlap, path = max((min(end, segment.end) - max(start, segment.start), path) for path, start, end in spans)
    return labels.get(path) if overlap > 0.5 * (segment.end - segment.start) else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("audio", nargs="+")
    parser.add_argument("--concatenate", metavar="OUT_WAV", help="join the clips into this recording first")
    parser.add_argument("--window", type=float, default=None)
    parser.add_argument("--hop", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--labels", metavar="MANIFEST", help="with --concatenate: a csv with wav and emo columns")
    parser.add_argument("--shift-ms", type=float, default=0,
                        help="also compare the per-window labels with those of windows this much later")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from qieemo_sb.inference import QieemoClassifier

    classifier = QieemoClassifier.from_hparams(source=args.model_dir, run_opts={"device": "cpu"})
    recordings, spans = args.audio, []
    if args.concatenate:
        joined, spans = concatenate(args.audio, args.concatenate)
        recordings = [joined]
    labels = {}
    if args.labels:
        import csv

        with open(args.labels, newline="") as handle:
            labels = {row["wav"]: row["emo"] for row in csv.DictReader(handle)}
    correct = {"one pass": 0, "per window": 0}
    scored = 0
    agree = windows = 0
    largest = 0.0
    seconds = {"one pass": 0.0, "per window": 0.0}
    per_window_labels = []
    audio_seconds = 0.0
    steady = shifted_windows = 0
    scratch = tempfile.TemporaryDirectory(prefix="timeline_agreement_") if args.shift_ms else None
    for path in recordings:
        timelines = {}
        for mode in seconds:
            start = time.perf_counter()
            timelines[mode] = classifier.classify_timeline(path, window=args.window, hop=args.hop,
                                                           one_pass=mode == "one pass")
            seconds[mode] += time.perf_counter() - start
        audio_seconds += soundfile.info(str(path)).duration
        pairs = list(zip(timelines["one pass"], timelines["per window"]))
        same = sum(a.label == b.label for a, b in pairs)
        difference = max(abs(a.probabilities[k] - b.probabilities[k]) for a, b in pairs for k in a.probabilities)
        agree, windows, largest = agree + same, windows + len(pairs), max(largest, difference)
        per_window_labels += [b.label for _, b in pairs]
        if args.shift_ms:
            wav, rate = soundfile.read(str(path), dtype="float32")
            later = Path(scratch.name) / "shifted.wav"
            soundfile.write(later, wav[round(args.shift_ms * rate / 1000):], rate)
            moved = classifier.classify_timeline(later, window=args.window, hop=args.hop)
            steady += sum(a.label == b.label for a, b in zip(timelines["per window"], moved))
            shifted_windows += min(len(moved), len(pairs))
        for a, b in pairs:
            truth = window_truth(a, spans, labels) if labels else None
            if truth is not None:
                scored += 1
                correct["one pass"] += a.label == truth
                correct["per window"] += b.label == truth
        print(f"{path}: {same}/{len(pairs)} windows agree, max |p difference| {difference:.3f}")
    most_common, count = collections.Counter(per_window_labels).most_common(1)[0]
    print(f"all: {agree}/{windows} windows agree ({100 * agree / windows:.1f} %), max |p difference| {largest:.3f}; "
          f"per-window labels {dict(collections.Counter(per_window_labels))} (the most common, {most_common}, "
          f"{100 * count / windows:.1f} %)")
    if shifted_windows:
        print(f"per window, windows {args.shift_ms:g} ms later: {steady}/{shifted_windows} keep their label "
              f"({100 * steady / shifted_windows:.1f} %)")
    if scored:
        print(f"against the clip labels, {scored} windows mostly of one labelled clip: " + ", ".join(
            f"{mode} {100 * n / scored:.1f} % correct" for mode, n in correct.items()))
    print(f"{audio_seconds:.1f} s of audio, {args.threads} threads: " + ", ".join(
        f"{mode} {s:.2f} s ({audio_seconds / s:.0f}x real time)" for mode, s in seconds.items()))


if __name__ == "__main__":
    main()
