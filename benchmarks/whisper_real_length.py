"""Whisper on 30 s inputs vs on the real frames: hidden-state difference and time.

Backbone 3 runs Whisper's encoder the way it was trained (every clip padded
to 30 s, the outputs cut to the real frames) or, with ``real_length``, on the
real frames only. This script encodes the same clips both ways and prints,
per block, how far the real-length hidden states are from the 30 s ones on
the valid frames (relative L2 distance, and cosine similarity of the
mean-pooled block outputs, which is what MMF and the probes see), then the
``classify``-path encoder time of a 5 s clip both ways.

The figures only mean something for trained weights and real speech::

    python benchmarks/whisper_real_length.py --whisper-source openai/whisper-base --audio clips/*.wav

Without ``--whisper-source`` it uses a whisper-base-sized model with random
weights; without ``--audio``, the tiny synthetic IEMOCAP (eSpeak speech).
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from qieemo_sb.audio import load_audio
from qieemo_sb.encoders.whisper import WhisperEncoder, WhisperFeatures
from qieemo_sb.features import fbank_with_lengths


def encoders(source: str):
    """real_length -> (encoder, its features), built once."""
    models = {}
    for real_length in (False, True):
        encoder = WhisperEncoder(source=source, real_length=real_length).eval()
        models[real_length] = (encoder, WhisperFeatures(n_mels=encoder.n_mels, pad_to_30s=not real_length))
    return models


def encode(model, wav: torch.Tensor):
    """Every block's output on the clip's real frames (as the classifier computes them)."""
    encoder, features = model
    with torch.inference_mode():
        feats, feat_lens = fbank_with_lengths(features, lambda x, lengths: x, wav.unsqueeze(0), torch.ones(1))
        return encoder(feats, feat_lens).hidden_states


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--whisper-source", help="local Hugging Face folder or hub id (default: random whisper-base size)")
    parser.add_argument("--audio", nargs="*", type=Path, help="clips (default: the tiny synthetic IEMOCAP)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="whisper_real_length_"))
    source = args.whisper_source
    if source is None:
        from inference_speed import save_whisper_base

        torch.manual_seed(0)
        source = str(save_whisper_base(folder / "whisper_base"))
    audio = args.audio
    if not audio:
        from qieemo_sb.data.synthetic import generate

        generate(out_dir=folder, size="tiny", corpora=("iemocap",), progress=False)
        audio = sorted(folder.glob("IEMOCAP_full_release/Session*/sentences/wav/*/*.wav"))
    models = encoders(source)
    distances, cosines, durations = None, None, []
    for path in audio:
        wav = load_audio(path, sample_rate=16000)
        durations.append(wav.numel() / 16000)
        padded, real = encode(models[False], wav), encode(models[True], wav)
        if distances is None:
            distances, cosines = [[] for _ in padded], [[] for _ in padded]
        for block, (a, b) in enumerate(zip(padded, real)):
            distances[block].append(float((b - a).norm() / a.norm()))
            cosines[block].append(float(torch.cosine_similarity(a.mean(1), b.mean(1)).item()))
    print(f"model: {source if args.whisper_source else 'whisper-base size, random weights'}; "
          f"{len(audio)} clips, {min(durations):.1f}-{max(durations):.1f} s")
    print("| block | relative L2 distance (median, max) | cosine of mean-pooled outputs (median, min) |")
    print("|---|---|---|")
    for block, (d, c) in enumerate(zip(distances, cosines), start=1):
        print(f"| {block} | {statistics.median(d):.4f}, {max(d):.4f} | {statistics.median(c):.4f}, {min(c):.4f} |")

    wav = torch.randn(5 * 16000) * 0.1
    times = {}
    for mode, model in models.items():
        encode(model, wav)
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            encode(model, wav)
            runs.append(time.perf_counter() - start)
        times[mode] = statistics.median(runs)
    print(f"5 s clip, features + encoder, {args.threads} threads: 30 s inputs {times[False] * 1000:.1f} ms, "
          f"real length {times[True] * 1000:.1f} ms ({times[False] / times[True]:.1f}x faster)")


if __name__ == "__main__":
    main()
