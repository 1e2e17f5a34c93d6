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

Under ``torchrun`` every process runs this script; each fold's train.py
then runs on all of them as one process group (see the README).
"""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, if_main_process

from qieemo_sb.distributed import end_process_group, environment_for_child_group
from qieemo_sb.folds import read_fold_results, results_table, summarize_folds
from qieemo_sb.hparams_files import load_hparams

logger = logging.getLogger(__name__)
TRAIN = Path(__file__).resolve().parent / "train.py"


def main(argv):
    if any(arg == "--fold" or arg.startswith("--fold=") for arg in argv):
        raise SystemExit("run_folds.py runs every fold in `folds`: give --folds [..] instead of --fold")
    hparams_file, _, overrides = sb.parse_arguments(argv)
    if "LOCAL_RANK" in os.environ:  # torchrun: a gloo group to agree on folds and ports
        torch.distributed.init_process_group("gloo")
    hparams = load_hparams(hparams_file, overrides)
    root = Path(hparams["experiment_folder"])
    for fold in hparams["folds"]:
        # Every process takes the main's view: a fold may finish between two reads.
        if ddp_broadcast(read_fold_results(root / f"fold_{fold}") is not None):
            log(f"fold {fold}: finished earlier ({root / f'fold_{fold}'}), not run again")
            continue
        log(f"fold {fold}: training ({root / f'fold_{fold}'})")
        start = time.time()
        subprocess.run([sys.executable, str(TRAIN), *argv, "--fold", str(fold)],
                       env=environment_for_child_group(), check=True)
        ddp_barrier()
        log(f"fold {fold}: done in {time.time() - start:.0f} s")
    if if_main_process():
        summary = summarize_folds(root, folds=hparams["folds"], title=hparams["experiment_name"])
        print(results_table(summary))
        print(f"tables: {root / 'results.md'}, {root / 'results.json'}; plot: {root / 'confusion.png'}")
    end_process_group()


def log(message):
    if if_main_process():
        print(message, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
