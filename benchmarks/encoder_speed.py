"""Forward time of both full-size Qieemo encoders against wav2vec2-base.

Each model goes from a 16 kHz waveform to the outputs of all its blocks:
fbank + normalization + conformer encoder for the Qieemo backbones (random
weights; speed does not depend on them) converted by
``optimize_for_inference`` (``--kernels``), and transformers' ``Wav2Vec2Model``
with its default config (the wav2vec2-base architecture of SpeechBrain's
IEMOCAP recipe, random weights) for the reference. Everything is measured in
the same run, in eval mode under ``torch.inference_mode``; the script prints
the median over repeats and each backbone's speed-up over wav2vec2-base.

Usage::

    pip install -e ".[bench]"
    python benchmarks/encoder_speed.py --threads 2
"""

import argparse
import platform
import statistics
import time

import torch

from qieemo_sb.backbones import load_backbone
from qieemo_sb.cpu_inference import (
    KERNELS,
    PRECISIONS,
    bfloat16_is_fast,
    cpu_vendor,
    optimize_for_inference,
    resolve_kernels,
)

SAMPLE_RATE = 16000


def median_seconds(function, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``function()`` over ``repeats`` runs after warm-up."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def qieemo_forward(name: str, device: torch.device, kernels: str, precision: str = "fp32"):
    """Returns ``run(wav)`` for a packaged backbone: wav -> all block outputs."""
    backbone = load_backbone(name)
    compute_features, normalize = backbone["compute_features"], backbone["normalize"]
    encoder = backbone["encoder"].to(device).eval()
    if kernels != "none":
        optimize_for_inference(encoder, kernels=kernels, precision=precision)
    elif precision != "fp32":
        raise SystemExit(f"--precision {precision} needs --kernels other than none")
    # The global normalizer has no statistics before it has seen data.
    normalize.to(device).train()
    with torch.no_grad():
        warm = torch.randn(1, SAMPLE_RATE, device=device)
        normalize(compute_features(warm), torch.ones(1, device=device))
    normalize.eval()

    def run(wav):
        lengths = torch.ones(wav.shape[0], device=device)
        feats = normalize(compute_features(wav), lengths)
        return encoder(feats, lengths)

    return run, sum(p.numel() for p in encoder.parameters())


def wav2vec2_forward(device: torch.device):
    """Returns ``run(wav)`` for a randomly initialised wav2vec2-base."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    model = Wav2Vec2Model(Wav2Vec2Config()).to(device).eval()

    def run(wav):
        return model(wav, output_hidden_states=True).hidden_states

    return run, sum(p.numel() for p in model.parameters())


def device_description(device: str, threads: int, kernels: str) -> str:
    """The GPU's name, or the CPU (architecture, maker, torch's kernel capability), its
    threads, which kernel the Qieemo models' linear products take there and whether
    torch has bfloat16 kernels for it."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    kernel = "plain modules" if kernels == "none" else f"{resolve_kernels(kernels)} (kernels={kernels})"
    return (f"{platform.machine()} {cpu_vendor() or 'unknown maker'} "
            f"({torch.backends.cpu.get_cpu_capability()}), {threads} threads, Qieemo's products: {kernel}, "
            f"bfloat16 kernels: {'yes' if bfloat16_is_fast(torch.device('cpu')) else 'no'}")


def timing_parser(description: str, repeats: bool = True) -> argparse.ArgumentParser:
    """Options every speed script takes: threads, clip durations, device (and repeats)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--durations", type=float, nargs="+", default=[5.0, 30.0])
    if repeats:
        parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--kernels", choices=[*KERNELS, "none"], default="auto",
                        help="optimize_for_inference's kernels for the Qieemo models (none: plain modules)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="the Qieemo models' linear products in float32, in bfloat16, or with the "
                             "feed-forward ones in int8 (optimize_for_inference's precision)")
    return parser


def main():
    parser = timing_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    models = {
        "backbone 1 (efficient_conformer)": qieemo_forward("efficient_conformer", device, args.kernels, args.precision),
        "backbone 2 (conformer)": qieemo_forward("conformer", device, args.kernels, args.precision),
        "wav2vec2-base (reference)": wav2vec2_forward(device),
    }
    print(f"torch {torch.__version__}, device: {device_description(args.device, args.threads, args.kernels)}, "
          f"Qieemo in {args.precision}, "
          f"median of {args.repeats}")
    timings = {}
    with torch.inference_mode():
        for duration in args.durations:
            wav = torch.randn(1, int(duration * SAMPLE_RATE), device=device) * 0.1
            for name, (run, _) in models.items():
                def timed():
                    run(wav)
                    sync()

                timings[name, duration] = median_seconds(timed, args.repeats)

    reference = "wav2vec2-base (reference)"
    header = "| model | params | " + " | ".join(
        f"{d:g} s clip (ms) | speed-up {d:g} s" for d in args.durations
    ) + " |"
    print(header)
    print("|" + "---|" * (2 + 2 * len(args.durations)))
    for name, (_, params) in models.items():
        cells = []
        for duration in args.durations:
            seconds = timings[name, duration]
            cells.append(f"{seconds * 1000:.1f}")
            cells.append(f"{timings[reference, duration] / seconds:.2f}x")
        print(f"| {name} | {params / 1e6:.1f}M | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
