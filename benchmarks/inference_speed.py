"""``classify_file`` latency and peak memory: the Qieemo backbones against wav2vec2-base.

Each model classifies a 5 s and a 30 s wav file the way a user would: read
the file, fbank, encoder, head, softmax. The Qieemo classifiers are the full
recipe YAMLs (``hparams/qieemo.yaml`` and ``qieemo_backbone2.yaml``) with
random weights, through :class:`qieemo_sb.inference.QieemoClassifier`, and
backbone 3 (``qieemo_whisper.yaml`` on a whisper-base-sized Whisper with
random weights) with Whisper's 30 s inputs and with ``real_length``; the
reference is transformers' ``Wav2Vec2Model`` with its default config (the
wav2vec2-base of SpeechBrain's IEMOCAP recipe, random weights) with mean
pooling and a linear layer, fed by the same file reader, under
``torch.inference_mode`` as the Qieemo classifier.

Every model runs in its own process (so peak RSS is its own), and the
reference in one more, started first and kept for the whole run. They take
turns: ``--calls`` consecutive calls of the reference on the 5 s clip, as
many of the model, then one model call on the 30 s clip; ``--turns`` turns
per model, after two untimed calls of each clip. Within a turn a process
runs as it would serving requests (what it leaves in the CPU caches helps its
next call, as in real use), and a shared machine's slow stretches, which
last seconds, fall on the calls of a turn alike: the speed-up is the median
over turns of (reference median / model median) on the 5 s clip, printed
with the middle half of the turns' speed-ups, and "30 s / 5 s" the median
over turns of the model's 30 s time over its 5 s median in the same turn.
Times are medians over all calls. Also timed: the backbones with
``--max-chunk`` (``classify_file`` encoding long clips in chunks), exported to
ONNX and run by onnxruntime (float32 and int8 weights; ``--no-onnx``: not),
and with ``--timeline-minutes``, ``classify_timeline`` on long recordings, in one pass
and per window, each in a fresh process with its peak memory (bounded memory:
it must not grow with the length). ``--precision int8`` leaves out the
Whisper backbone (it has no conformer feed-forward modules to quantize).

Usage::

    pip install -e ".[bench]"
    python benchmarks/inference_speed.py --threads 2
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from encoder_speed import device_description, timing_parser

RECIPE_HPARAMS = Path(__file__).resolve().parents[1] / "recipes" / "IEMOCAP" / "Qieemo" / "hparams"
CONFORMERS = {"backbone 1 (efficient_conformer)": "qieemo.yaml", "backbone 2 (conformer)": "qieemo_backbone2.yaml"}
#: backbone 3 at whisper-base size (random weights, saved to a temporary Hugging Face folder)
WHISPERS = {"backbone 3 (whisper-base size)": False, "backbone 3 (whisper-base size), real length": True}
BACKBONES = [*CONFORMERS, *WHISPERS]
WHISPER_BASE = {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "encoder_ffn_dim": 2048,
                "decoder_layers": 1, "decoder_attention_heads": 8, "decoder_ffn_dim": 2048, "num_mel_bins": 80}
REFERENCE = "wav2vec2-base (reference)"
LABELS = ["neu", "hap", "sad", "ang"]


def qieemo_classifier(hparams_file: str, device: str, kernels: str, max_chunk=None, overrides=None,
                      precision: str = "fp32"):
    """The recipe's full-size model with random weights, as a QieemoClassifier."""
    from qieemo_sb.hparams_files import load_hparams
    from qieemo_sb.inference import QieemoClassifier

    hparams = load_hparams(RECIPE_HPARAMS / hparams_file,
                           {"pretrained_asr": "unused", "data_folder": "unused", **(overrides or {})})
    if hparams["normalize"].count == 0:
        with torch.no_grad():  # random statistics for the random normalizer
            hparams["normalize"].train()(hparams["compute_features"](torch.randn(1, 16000)), torch.ones(1))
    return QieemoClassifier.from_training_hparams(hparams, run_opts={"device": device}, max_chunk=max_chunk,
                                                  kernels=None if kernels == "none" else kernels,
                                                  precision=precision)


def save_whisper_base(folder: Path) -> Path:
    """A whisper-base-sized Whisper with random weights, in Hugging Face format."""
    from transformers import WhisperConfig, WhisperModel

    WhisperModel(WhisperConfig(**WHISPER_BASE)).save_pretrained(folder)
    return folder


class OnnxRun:
    """A backbone's classifier exported to ONNX, run by onnxruntime (``precision`` fp32 or int8)."""

    def __init__(self, classifier, precision: str, threads: int):
        from qieemo_sb.onnx_export import OnnxClassifier, export_onnx

        self.folder = tempfile.TemporaryDirectory(prefix="inference_speed_onnx_")  # removed with the process
        export_onnx(classifier, self.folder.name, int8=precision == "int8")
        self.runner = OnnxClassifier(self.folder.name, int8=precision == "int8", threads=threads)
        self.exported = classifier  # for its parameter count

    def classify_file(self, path):
        return self.runner.classify_file(path)

    def parameters(self):
        return self.exported.parameters()


def build_model(args):
    if args.model == REFERENCE:
        return Wav2Vec2Classifier(args.device)
    if args.child_onnx:
        plain = qieemo_classifier(CONFORMERS[args.model], "cpu", "none")
        return OnnxRun(plain, args.child_onnx, args.threads)
    if args.model in WHISPERS:
        backbone = {"whisper_source": args.whisper_folder, "real_length": WHISPERS[args.model]}
        return qieemo_classifier("qieemo_whisper.yaml", args.device, args.kernels, args.child_max_chunk,
                                 {"backbone": backbone}, precision=args.precision)
    return qieemo_classifier(CONFORMERS[args.model], args.device, args.kernels, args.child_max_chunk,
                             precision=args.precision)


class Wav2Vec2Classifier(torch.nn.Module):
    """wav2vec2-base -> mean over frames -> linear: the reference's classify_file."""

    def __init__(self, device: str):
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        super().__init__()
        self.wav2vec2 = Wav2Vec2Model(Wav2Vec2Config())
        self.output = torch.nn.Linear(768, len(LABELS))
        self.device = device
        self.to(device).eval()

    def classify_file(self, path):
        from qieemo_sb.audio import load_audio

        wav = load_audio(path, sample_rate=16000).unsqueeze(0).to(self.device)
        with torch.inference_mode():  # as QieemoClassifier
            hidden = self.wav2vec2(wav).last_hidden_state.mean(dim=1)
            out_prob = torch.log_softmax(self.output(hidden), dim=-1)
        score, index = out_prob.max(dim=-1)
        return out_prob, score, index, [LABELS[i] for i in index.tolist()]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve_model(args):
    """The child process: builds one model, then answers the parent line by line.

    ``time N PATH``: the seconds of N consecutive ``classify_file`` calls as
    a JSON list (two untimed calls first, the first time a path comes);
    ``timeline MODE PATH``: ``classify_timeline`` (``one_pass`` or ``per_window``) time, windows and peak RSS as
    JSON; ``stats``: parameters and peak RSS as JSON.
    """
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    warm = set()
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, path = line.strip().partition(" ")
        if command == "time":
            calls, _, path = path.partition(" ")
            for _ in range(0 if path in warm else 2):
                model.classify_file(path)
            warm.add(path)
            seconds = []
            for _ in range(int(calls)):
                sync()
                start = time.perf_counter()
                model.classify_file(path)
                sync()
                seconds.append(time.perf_counter() - start)
            print(json.dumps(seconds), flush=True)
        elif command == "timeline":
            mode, _, path = path.partition(" ")
            start = time.perf_counter()
            segments = model.classify_timeline(path, one_pass=mode == "one_pass")
            print(json.dumps({"seconds": time.perf_counter() - start, "windows": len(segments),
                              "peak_rss_mb": peak_rss_mb()}), flush=True)
        elif command == "stats":
            print(json.dumps({"params": sum(p.numel() for p in model.parameters()),
                              "peak_rss_mb": peak_rss_mb()}), flush=True)
        else:
            raise ValueError(f"unknown request {line!r}")


class Worker:
    """A model in its own process (:func:`serve_model`), timed on request."""

    def __init__(self, model: str, args, max_chunk=None, onnx=None):
        command = [sys.executable, __file__, "--child", model, "--threads", str(args.threads),
                   "--device", args.device, "--kernels", args.kernels, "--precision", args.precision,
                   "--whisper-folder", str(args.whisper_folder)]
        if max_chunk:
            command += ["--child-max-chunk", str(max_chunk)]
        if onnx:
            command += ["--child-onnx", onnx]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read_line()  # "ready": the model is built

    def _read_line(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark process {self.process.args[3]!r} died (its stderr is above)")
        return line.strip()

    def _answer(self, request: str) -> str:
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        return self._read_line()

    def times(self, clip: Path, calls: int) -> list:
        """Seconds of ``calls`` consecutive ``classify_file(clip)``."""
        return json.loads(self._answer(f"time {calls} {clip}"))

    def json(self, request: str) -> dict:
        return json.loads(self._answer(request))

    def close(self) -> dict:
        stats = self.json("stats")
        self.process.stdin.close()
        self.process.wait()
        return stats


def turns_of(model: Worker, reference: Worker, clips: dict, turns: int, calls: int) -> list:
    """``turns`` turns: ``calls`` calls of the reference on the first clip, as many of the
    model, then one model call on each longer clip; each turn is a dict clip -> seconds
    (the reference's under ``REFERENCE``)."""
    short, *longer = clips
    measured = []
    for _ in range(turns):
        turn = {REFERENCE: reference.times(clips[short], calls), short: model.times(clips[short], calls)}
        turn.update({d: model.times(clips[d], 1) for d in longer})
        measured.append(turn)
    return measured


def write_clip(path: Path, seconds: float) -> Path:
    """Speech-like test signal: noise shaped by a 4 Hz syllable envelope."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    soundfile.write(path, (0.1 * envelope * rng.standard_normal(t.shape)).astype("float32"), 16000)
    return path


def main():
    parser = timing_parser(__doc__.split("\n\n")[0], repeats=False)
    parser.add_argument("--turns", type=int, default=9, help="turns of the reference and of each model")
    parser.add_argument("--calls", type=int, default=3, help="consecutive classify_file calls per turn")
    parser.add_argument("--max-chunk", type=float, default=7.0,
                        help="also time the backbones with classify_file's max_chunk (seconds); 0: no")
    parser.add_argument("--timeline-minutes", type=float, nargs="*", default=[],
                        help="also time classify_timeline (backbone 1) on recordings this long")
    parser.add_argument("--child", choices=[*BACKBONES, REFERENCE], dest="model", help=argparse.SUPPRESS)
    parser.add_argument("--no-onnx", action="store_true", help="do not time the ONNX exports")
    parser.add_argument("--child-max-chunk", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-onnx", choices=["fp32", "int8"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--whisper-folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model:
        serve_model(args)
        return
    if args.turns < 2 or args.calls < 1:
        parser.error("--turns must be at least 2 (the middle half of the turns' speed-ups) and --calls at least 1")

    temporary = tempfile.TemporaryDirectory(prefix="inference_speed_")  # removed at exit
    folder = Path(temporary.name)
    args.whisper_folder = save_whisper_base(folder / "whisper_base")
    clips = {f"{d:g}": write_clip(folder / f"clip_{d:g}s.wav", d) for d in args.durations}
    short, long = f"{args.durations[0]:g}", f"{args.durations[-1]:g}"
    where = f"{device_description(args.device, args.threads, args.kernels)}, Qieemo in {args.precision}"
    print(f"torch {torch.__version__}, device: {where}; {args.turns} turns per model of {args.calls} "
          f"reference and {args.calls} model calls on the {short} s clip, then one on each longer clip")
    # precision int8 quantizes conformer feed-forward modules: Whisper has none.
    runs = {name: (name, None, None) for name in BACKBONES if not (args.precision == "int8" and name in WHISPERS)}
    if args.max_chunk:
        runs.update({f"{name}, max_chunk {args.max_chunk:g} s": (name, args.max_chunk, None) for name in CONFORMERS})
    if not args.no_onnx:
        runs.update({f"{name}, ONNX {precision} (onnxruntime)": (name, None, precision)
                     for name in CONFORMERS for precision in ("fp32", "int8")})

    reference = Worker(REFERENCE, args)
    results, reference_turns = {}, []
    for label, (name, chunk, onnx) in runs.items():
        model = Worker(name, args, max_chunk=chunk, onnx=onnx)
        turns = turns_of(model, reference, clips, args.turns, args.calls)
        short_medians = [statistics.median(turn[short]) for turn in turns]
        results[label] = {
            "seconds": {d: [s for turn in turns for s in turn[d]] for d in clips},
            "speed_ups": [statistics.median(turn[REFERENCE]) / m for turn, m in zip(turns, short_medians)],
            "long_ratios": [turn[long][0] / m for turn, m in zip(turns, short_medians)],
            **model.close(),
        }
        reference_turns += [s for turn in turns for s in turn[REFERENCE]]
    reference_seconds = {short: reference_turns}
    reference_seconds.update({d: reference.times(clip, args.turns) for d, clip in clips.items() if d != short})
    reference_stats = reference.close()

    print(f"speed-up = wav2vec2-base time / model time on the {short} s clip, and {long} s / {short} s: "
          "medians over turns (with the middle half of the turns' speed-ups); times are medians over calls")
    print("| model | params | " + " | ".join(f"{d} s clip (ms)" for d in clips)
          + f" | speed-up {short} s | middle half | {long} s / {short} s | peak RSS (MB) |")
    print("|" + "---|" * (6 + len(clips)))
    for label, result in [*results.items(), (REFERENCE, {"seconds": reference_seconds, **reference_stats})]:
        median = {d: statistics.median(result["seconds"][d]) for d in clips}
        if label == REFERENCE:
            speed_up, long_ratio = "1.00x | ", median[long] / median[short]
        else:
            quartiles = statistics.quantiles(result["speed_ups"], n=4, method="inclusive")
            speed_up = f"{statistics.median(result['speed_ups']):.2f}x | {quartiles[0]:.2f}-{quartiles[2]:.2f}"
            long_ratio = statistics.median(result["long_ratios"])
        print(f"| {label} | {result['params'] / 1e6:.1f}M | "
              + " | ".join(f"{median[d] * 1000:.1f}" for d in clips)
              + f" | {speed_up} | {long_ratio:.2f} | {result['peak_rss_mb']:.0f} |")

    for minutes in args.timeline_minutes:
        path = write_clip(folder / f"recording_{minutes:g}min.wav", minutes * 60)
        for mode in ("one_pass", "per_window"):
            model = Worker(next(iter(BACKBONES)), args)  # a fresh process: its own peak RSS
            timeline = model.json(f"timeline {mode} {path}")
            model.close()
            print(f"classify_timeline ({mode}), backbone 1, {minutes:g} min recording: {timeline['windows']} windows "
                  f"in {timeline['seconds']:.1f} s ({minutes * 60 / timeline['seconds']:.0f}x real time), "
                  f"peak RSS {timeline['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
