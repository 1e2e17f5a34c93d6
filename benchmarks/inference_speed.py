"""``classify_file`` latency and peak memory: the Qieemo backbones against wav2vec2-base.

Each model classifies a 5 s and a 30 s wav file the way a user would: read
the file, fbank, encoder, head, softmax. The Qieemo classifiers are the full
recipe YAMLs (``hparams/qieemo.yaml`` and ``qieemo_backbone2.yaml``) with
random weights, through :class:`qieemo_sb.inference.QieemoClassifier`, and
backbone 3 (``qieemo_whisper.yaml`` on a whisper-base-sized Whisper with
random weights) with Whisper's 30 s inputs and with ``real_length``; the
reference is transformers' ``Wav2Vec2Model`` with its default config (the
wav2vec2-base of SpeechBrain's IEMOCAP recipe, random weights) with mean
pooling and a linear layer, fed by the same file reader. Each model runs in
its own process (so peak RSS is its own), once per round: ``--rounds``
runs every model in turn, round after round, so that a slow stretch of a
shared machine falls on all of them alike. The script prints, per model, the
best of its rounds' medians over repeats, its speed-up over wav2vec2-base on
the 5 s clip (and that speed-up within each round, against the reference run
of the same round) and its 30 s / 5 s time ratio, for whole-clip encoding and
with ``--max-chunk``
(``classify_file`` encoding long clips in chunks). ``--timeline-minutes`` also times
``classify_timeline`` on long recordings and prints peak memory per length
(bounded memory: it must not grow with the length).

Usage::

    pip install -e ".[bench]"
    python benchmarks/inference_speed.py --threads 2
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from encoder_speed import median_seconds, timing_parser

RECIPE_HPARAMS = Path(__file__).resolve().parents[1] / "recipes" / "IEMOCAP" / "Qieemo" / "hparams"
CONFORMERS = {"backbone 1 (efficient_conformer)": "qieemo.yaml", "backbone 2 (conformer)": "qieemo_backbone2.yaml"}
#: backbone 3 at whisper-base size (random weights, saved to a temporary Hugging Face folder)
WHISPERS = {"backbone 3 (whisper-base size)": False, "backbone 3 (whisper-base size), real length": True}
BACKBONES = [*CONFORMERS, *WHISPERS]
WHISPER_BASE = {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "encoder_ffn_dim": 2048,
                "decoder_layers": 1, "decoder_attention_heads": 8, "decoder_ffn_dim": 2048, "num_mel_bins": 80}
REFERENCE = "wav2vec2-base (reference)"
LABELS = ["neu", "hap", "sad", "ang"]


def qieemo_classifier(hparams_file: str, device: str, max_chunk=None, overrides=None):
    """The recipe's full-size model with random weights, as a QieemoClassifier."""
    from qieemo_sb.hparams_files import load_hparams
    from qieemo_sb.inference import QieemoClassifier

    hparams = load_hparams(RECIPE_HPARAMS / hparams_file,
                           {"pretrained_asr": "unused", "data_folder": "unused", **(overrides or {})})
    if hparams["normalize"].count == 0:
        with torch.no_grad():  # random statistics for the random normalizer
            hparams["normalize"].train()(hparams["compute_features"](torch.randn(1, 16000)), torch.ones(1))
    return QieemoClassifier.from_training_hparams(hparams, run_opts={"device": device}, max_chunk=max_chunk)


def save_whisper_base(folder: Path) -> Path:
    """A whisper-base-sized Whisper with random weights, in Hugging Face format."""
    from transformers import WhisperConfig, WhisperModel

    WhisperModel(WhisperConfig(**WHISPER_BASE)).save_pretrained(folder)
    return folder


def build_model(args):
    if args.model == REFERENCE:
        return Wav2Vec2Classifier(args.device)
    if args.model in WHISPERS:
        backbone = {"whisper_source": args.whisper_folder, "real_length": WHISPERS[args.model]}
        return qieemo_classifier("qieemo_whisper.yaml", args.device, args.child_max_chunk, {"backbone": backbone})
    return qieemo_classifier(CONFORMERS[args.model], args.device, args.child_max_chunk)


class Wav2Vec2Classifier(torch.nn.Module):
    """wav2vec2-base -> mean over frames -> linear: the reference's classify_file."""

    def __init__(self, device: str):
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        super().__init__()
        self.wav2vec2 = Wav2Vec2Model(Wav2Vec2Config())
        self.output = torch.nn.Linear(768, len(LABELS))
        self.device = device
        self.to(device).eval()

    @torch.no_grad()
    def classify_file(self, path):
        from qieemo_sb.audio import load_audio

        wav = load_audio(path, sample_rate=16000).unsqueeze(0).to(self.device)
        hidden = self.wav2vec2(wav).last_hidden_state.mean(dim=1)
        out_prob = torch.log_softmax(self.output(hidden), dim=-1)
        score, index = out_prob.max(dim=-1)
        return out_prob, score, index, [LABELS[i] for i in index.tolist()]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_model(args) -> dict:
    """Runs in the child process: one model, every clip."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    params = sum(p.numel() for p in model.parameters())
    result = {"params": params, "seconds": {}, "peak_rss_mb": {}}
    for clip in args.clips:
        duration = soundfile.info(clip).duration

        def timed():
            model.classify_file(clip)
            sync()

        result["seconds"][f"{duration:g}"] = median_seconds(timed, args.repeats)
        result["peak_rss_mb"][f"{duration:g}"] = peak_rss_mb()
    if args.timeline_file:
        start = time.perf_counter()
        segments = model.classify_timeline(args.timeline_file)
        result["timeline"] = {"seconds": time.perf_counter() - start, "windows": len(segments),
                              "peak_rss_mb": peak_rss_mb()}
    return result


def child(model: str, clips, args, max_chunk=None, timeline_file=None) -> dict:
    command = [sys.executable, __file__, "--child", model, "--threads", str(args.threads),
               "--repeats", str(args.repeats), "--device", args.device, "--clips", *map(str, clips),
               "--whisper-folder", str(args.whisper_folder)]
    if max_chunk:
        command += ["--child-max-chunk", str(max_chunk)]
    if timeline_file:
        command += ["--timeline-file", str(timeline_file)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def write_clip(path: Path, seconds: float) -> Path:
    """Speech-like test signal: noise shaped by a 4 Hz syllable envelope."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    soundfile.write(path, (0.1 * envelope * rng.standard_normal(t.shape)).astype("float32"), 16000)
    return path


def main():
    parser = timing_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--max-chunk", type=float, default=7.0,
                        help="also time the backbones with classify_file's max_chunk (seconds)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of every model, interleaved; the best round counts")
    parser.add_argument("--timeline-minutes", type=float, nargs="*", default=[],
                        help="also time classify_timeline (backbone 1) on recordings this long")
    parser.add_argument("--child", choices=[*BACKBONES, REFERENCE], dest="model", help=argparse.SUPPRESS)
    parser.add_argument("--child-max-chunk", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--clips", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--timeline-file", help=argparse.SUPPRESS)
    parser.add_argument("--whisper-folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model:
        print(json.dumps(measure_model(args)))
        return

    folder = Path(tempfile.mkdtemp(prefix="inference_speed_"))
    args.whisper_folder = save_whisper_base(folder / "whisper_base")
    clips = [write_clip(folder / f"clip_{d:g}s.wav", d) for d in args.durations]
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else (
        f"{platform.processor() or platform.machine()}, {args.threads} threads")
    print(f"torch {torch.__version__}, device: {where}, classify_file median of {args.repeats}")
    runs = {name: (name, None) for name in [*BACKBONES, REFERENCE]}
    if args.max_chunk:
        runs.update({f"{name}, max_chunk {args.max_chunk:g} s": (name, args.max_chunk) for name in CONFORMERS})
    rounds = [{label: child(name, clips, args, max_chunk=chunk) for label, (name, chunk) in runs.items()}
              for _ in range(args.rounds)]

    short, long = f"{args.durations[0]:g}", f"{args.durations[-1]:g}"
    best = {label: {d: min(r[label]["seconds"][d] for r in rounds) for d in rounds[0][label]["seconds"]}
            for label in runs}
    print(f"best of {args.rounds} rounds; speed-up = wav2vec2-base time / model time on the {short} s clip")
    print(f"| model | params | " + " | ".join(f"{d:g} s clip (ms)" for d in args.durations)
          + f" | speed-up {short} s | per round | {long} s / {short} s | peak RSS (MB) |")
    print("|" + "---|" * (6 + len(args.durations)))
    for label in runs:
        times = best[label]
        per_round = ", ".join(f"{r[REFERENCE]['seconds'][short] / r[label]['seconds'][short]:.2f}" for r in rounds)
        print(f"| {label} | {rounds[0][label]['params'] / 1e6:.1f}M | "
              + " | ".join(f"{times[f'{d:g}'] * 1000:.1f}" for d in args.durations)
              + f" | {best[REFERENCE][short] / times[short]:.2f}x | {per_round} | {times[long] / times[short]:.2f} | "
              f"{max(max(r[label]['peak_rss_mb'].values()) for r in rounds):.0f} |")

    for minutes in args.timeline_minutes:
        path = write_clip(folder / f"recording_{minutes:g}min.wav", minutes * 60)
        timeline = child(next(iter(BACKBONES)), clips[:1], args, timeline_file=path)["timeline"]
        print(f"classify_timeline, backbone 1, {minutes:g} min recording: {timeline['windows']} windows "
              f"in {timeline['seconds']:.1f} s, peak RSS {timeline['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
