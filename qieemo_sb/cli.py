"""The ``qieemo`` command line.

Each subcommand lives in its own module, which provides ``add_arguments(parser)``
and ``run(args) -> int``; :data:`SUBCOMMANDS` maps the name to the module. Keep
module-level imports of those modules light (no torch), so ``qieemo --help``
stays fast.

Example
-------
>>> main(["--version"])  # doctest: +ELLIPSIS
qieemo ...
0
"""

import argparse
import importlib
import sys
from typing import List, Optional

from qieemo_sb import __version__

#: subcommand name -> (module providing add_arguments/run, one-line help)
SUBCOMMANDS = {
    "demo": ("qieemo_sb.demo", "the whole pipeline on the synthetic corpus: ASR, 5 emotion folds, export"),
    "reproduce": ("qieemo_sb.reproduce", "the paper's Tables I and II in miniature on the synthetic corpus"),
    "synth": ("qieemo_sb.data.synthetic.cli", "generate the synthetic LibriSpeech and IEMOCAP corpora"),
    "export": ("qieemo_sb.export", "turn a trained emotion fold into a self-contained inference folder"),
    "predict": ("qieemo_sb.predict", "classify audio files with an exported model"),
    "evaluate": ("qieemo_sb.evaluate", "score an exported model on a labelled manifest (cross-corpus tests)"),
}


def build_parser() -> argparse.ArgumentParser:
    """Returns the parser of ``qieemo`` with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="qieemo",
        description=(
            "Qieemo: speech emotion recognition from a pretrained conformer "
            "ASR encoder (SpeechBrain recipes and tools)."
        ),
    )
    parser.add_argument(
        "--version", action="store_true", help="print the version and exit"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``qieemo`` console command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(f"qieemo {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
