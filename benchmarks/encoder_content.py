"""How much each block of a stage-1 encoder still depends on the audio.

For every clip, the encoder's block outputs for the clip are compared with
its outputs for the corpus-mean features (zeros after the normalizer) of the
same length: ``mean |h(clip) - h(mean)| / mean |h(clip)|`` per block. A
block that ignores its input (a function of the frame position only) scores
0; a freshly initialised encoder of the same backbone, measured in the same
run, is the reference. The script prints the median over the clips for each
block, for the initialised encoder and for each given stage-1 export.

Usage::

    python benchmarks/encoder_content.py --clips "data/LibriSpeech/dev-clean/*/*/*.flac" \\
        results/efficient_conformer_tiny/3407/pretrained [more pretrained folders]
"""

import argparse
import glob
import platform
import statistics
from pathlib import Path

import torch
from speechbrain.dataio.dataio import read_audio

from qieemo_sb.pretrained import load_exported_backbone, load_normalizer_strict, load_state_dict_strict


@torch.no_grad()
def content_per_block(backbone: dict, wavs) -> list:
    """Median over ``wavs`` of each block's relative difference between a clip and mean features."""
    encoder, normalize, features = backbone["encoder"], backbone["normalize"], backbone["compute_features"]
    encoder.eval(), normalize.eval()
    per_clip = []
    for wav in wavs:
        feats = normalize(features(wav[None]), torch.ones(1))
        speech = encoder(feats, torch.ones(1)).hidden_states
        mean = encoder(torch.zeros_like(feats), torch.ones(1)).hidden_states
        per_clip.append([float((s - m).abs().mean() / s.abs().mean()) for s, m in zip(speech, mean)])
    return [statistics.median(clip[block] for clip in per_clip) for block in range(len(per_clip[0]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pretrained", nargs="+", type=Path, help="stage-1 'pretrained' folders")
    parser.add_argument("--clips", required=True, help="glob of audio files (16 kHz)")
    parser.add_argument("--max-clips", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialised reference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = sorted(glob.glob(args.clips))[: args.max_clips]
    if not paths:
        raise SystemExit(f"no audio file matches {args.clips!r}")
    wavs = [read_audio(path) for path in paths]
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {len(wavs)} clips")

    rows, references = {}, set()
    for folder in args.pretrained:
        torch.manual_seed(args.seed)
        backbone = load_exported_backbone(folder)
        load_normalizer_strict(backbone["normalize"], folder / "normalizer.ckpt")
        backbone_yaml = (folder / "backbone.yaml").read_text()
        if backbone_yaml not in references:  # the initialised reference, once per backbone
            references.add(backbone_yaml)
            rows[f"initialised like {folder} (seed {args.seed})"] = content_per_block(backbone, wavs)
        load_state_dict_strict(backbone["encoder"], folder / "encoder.ckpt")
        rows[str(folder)] = content_per_block(backbone, wavs)
    blocks = len(next(iter(rows.values())))
    print("| encoder | " + " | ".join(f"block {b + 1}" for b in range(blocks)) + " |")
    print("|---" * (blocks + 1) + "|")
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.2g}" for v in values) + " |")


if __name__ == "__main__":
    main()
