#!/usr/bin/env python3
"""Runs every fold of an emotion experiment, then writes the cross-fold tables.

    python run_folds.py hparams/qieemo.yaml --data_folder /path/IEMOCAP_full_release \
        --pretrained_asr /path/to/stage1/output/pretrained [any train.py option]

Each fold in ``folds`` (IEMOCAP: the 5 sessions) runs ``train.py`` with the
same arguments plus ``--fold k``, in its own process and output folder
``<experiment_folder>/fold_<k>``. A fold whose test_metrics.json exists is
finished and is not run again; an interrupted fold resumes from its last
checkpoint. Then ``<experiment_folder>`` gets results.json, results.md and
confusion.png (see qieemo_sb/folds.py).
"""

import logging
import subprocess
import sys
import time
from pathlib import Path

import speechbrain as sb

from qieemo_sb.folds import read_fold_results, results_table, summarize_folds
from qieemo_sb.hparams_files import load_hparams

logger = logging.getLogger(__name__)
TRAIN = Path(__file__).resolve().parent / "train.py"


def main(argv):
    if any(arg == "--fold" or arg.startswith("--fold=") for arg in argv):
        raise SystemExit("run_folds.py runs every fold in `folds`: give --folds [..] instead of --fold")
    hparams_file, _, overrides = sb.parse_arguments(argv)
    hparams = load_hparams(hparams_file, overrides)
    root = Path(hparams["experiment_folder"])
    for fold in hparams["folds"]:
        if read_fold_results(root / f"fold_{fold}") is not None:
            print(f"fold {fold}: finished earlier ({root / f'fold_{fold}'}), not run again", flush=True)
            continue
        print(f"fold {fold}: training ({root / f'fold_{fold}'})", flush=True)
        start = time.time()
        subprocess.run([sys.executable, str(TRAIN), *argv, "--fold", str(fold)], check=True)
        print(f"fold {fold}: done in {time.time() - start:.0f} s", flush=True)
    summary = summarize_folds(root, folds=hparams["folds"], title=hparams["experiment_name"])
    print(results_table(summary))
    print(f"tables: {root / 'results.md'}, {root / 'results.json'}; plot: {root / 'confusion.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
