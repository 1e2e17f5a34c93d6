"""Training-step time of the tiny encoders with and without dropout, on CPU.

One step is what stage 1 does to the encoder: fbank, normalization, the
encoder in training mode, a CTC loss on a linear head over the last block,
backward and an Adam update, on a batch of random 16 kHz audio (speed does
not depend on the values). Each dropout value is built from the same backbone
YAML with only ``dropout`` overridden; the variants take turns, and the
script prints the median time per step and the ratio to the first value.

Usage::

    python benchmarks/train_step.py --threads 2
    python benchmarks/train_step.py --backbone conformer_tiny --dropouts 0.1 0.0
"""

import argparse
import statistics
import time

import torch

from encoder_speed import device_description

from qieemo_sb.backbones import load_backbone

SAMPLE_RATE = 16000


def make_step(backbone: str, dropout: float, batch_seconds: list, vocabulary: int = 400):
    """A function running one training step of ``backbone`` with ``dropout``."""
    torch.manual_seed(0)
    parts = load_backbone(backbone, {"dropout": dropout})
    encoder, normalize, features = parts["encoder"], parts["normalize"], parts["compute_features"]
    head = torch.nn.Linear(encoder.d_model, vocabulary)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)
    samples = [int(s * SAMPLE_RATE) for s in batch_seconds]
    wavs = torch.zeros(len(samples), max(samples))
    for row, n in enumerate(samples):
        wavs[row, :n] = 0.1 * torch.randn(n)
    lengths = torch.tensor(samples, dtype=torch.float) / max(samples)
    targets = torch.randint(1, vocabulary, (len(samples), 20))
    target_lengths = torch.full((len(samples),), 20)
    encoder.train()
    normalize.train()

    def step():
        feats = normalize(features(wavs), lengths)
        out = encoder(feats, lengths)
        logp = head(out.hidden_states[-1]).log_softmax(-1).transpose(0, 1)
        loss = torch.nn.functional.ctc_loss(logp, targets, out.lengths[-1], target_lengths, zero_infinity=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficient_conformer_tiny", help="packaged backbone name")
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.1, 0.0])
    parser.add_argument("--batch-seconds", type=float, nargs="+", default=[7.2, 4.0, 3.9, 3.1],
                        help="clip durations of the batch (default: a 20 s batch of the synthetic corpus)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--turns", type=int, default=5, help="turns of each dropout value")
    parser.add_argument("--steps", type=int, default=4, help="steps timed per turn")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    steps = {p: make_step(args.backbone, p, args.batch_seconds) for p in args.dropouts}
    for step in steps.values():  # warm-up
        step(), step()
    times = {p: [] for p in steps}
    for _ in range(args.turns):
        for p, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[p].append((time.perf_counter() - start) / args.steps)

    print(f"torch {torch.__version__}, {device_description('cpu', args.threads, 'none')}, "
          f"{args.backbone}, batch of {len(args.batch_seconds)} clips ({sum(args.batch_seconds):.1f} s)")
    reference = statistics.median(times[args.dropouts[0]])
    for p, values in times.items():
        median = statistics.median(values)
        print(f"dropout {p}: {1000 * median:.0f} ms/step, {reference / median:.2f}x dropout {args.dropouts[0]}")


if __name__ == "__main__":
    main()
