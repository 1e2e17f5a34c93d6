"""``qieemo synth``: the command line of the synthetic corpora."""

import argparse
from pathlib import Path

from qieemo_sb.data.synthetic.plans import SIZES
from qieemo_sb.data.synthetic.writer import generate


# --------------------------------------------------------------------------
# ``qieemo synth``
# --------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``qieemo synth``."""
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="small",
        help="tiny: seconds, for tests; small: the demo (default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply utterances per speaker and turns per dialog (default 1)",
    )
    parser.add_argument(
        "--only", choices=("librispeech", "iemocap"), help="generate one corpus only"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: all CPUs for 200+ clips)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace corpora generated with other options"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Runs ``qieemo synth``; returns the exit code."""
    corpora = (args.only,) if args.only else ("librispeech", "iemocap")
    try:
        generate(
            out_dir=args.out,
            size=args.size,
            seed=args.seed,
            scale=args.scale,
            corpora=corpora,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (FileExistsError, ValueError) as error:
        print(f"qieemo synth: error: {error}")
        return 1
    return 0
