#!/usr/bin/env python3
"""Prepares IEMOCAP for the Qieemo emotion recipe.

A thin entry point over :mod:`qieemo_sb.data.iemocap` (rules and output format
are documented there): 4 classes (neu, hap with exc merged, sad, ang),
speaker from the utterance name, five leave-one-session-out folds in
``<save_folder>/fold_<k>/{train,valid,test}.json``, a validation split
(default: a seeded random 20% of the training utterances; ``--valid_mode
speaker``: one held-out speaker) and ``summary.txt`` / ``summary.json`` with
the counts per session and class. The real release and the synthetic corpus
made by ``qieemo synth`` take the same code path.

Usage::

    python iemocap_prepare.py --data_folder /path/to/IEMOCAP_full_release \
        --save_folder results/iemocap_prepare

From a SpeechBrain ``train.py``::

    from iemocap_prepare import prepare_iemocap
    run_on_main(prepare_iemocap, kwargs={
        "data_folder": hparams["data_folder"], "save_folder": hparams["save_folder"],
        "valid_mode": hparams["valid_mode"], "seed": hparams["seed"]})
"""

import sys

from qieemo_sb.data.iemocap import main, prepare_iemocap

__all__ = ["prepare_iemocap", "main"]

if __name__ == "__main__":
    sys.exit(main())
