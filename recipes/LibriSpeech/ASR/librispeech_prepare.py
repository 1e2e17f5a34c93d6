#!/usr/bin/env python3
"""Prepares the LibriSpeech manifests of the stage-1 ASR recipe.

A thin entry point over :mod:`qieemo_sb.data.librispeech` (rules and output
format are documented there): one SpeechBrain CSV per split with the columns
ID, duration, wav, spk_id, wrd. The real corpus and the synthetic one made by
``qieemo synth`` take the same code path.

Usage::

    python librispeech_prepare.py --data_folder /path/to/LibriSpeech \
        --save_folder results/librispeech_prepare

From a SpeechBrain ``train.py``::

    from librispeech_prepare import prepare_librispeech
    run_on_main(prepare_librispeech, kwargs={
        "data_folder": hparams["data_folder"], "save_folder": hparams["save_folder"],
        "tr_splits": hparams["train_splits"], "dev_splits": hparams["dev_splits"],
        "te_splits": hparams["test_splits"], "merge_lst": hparams["train_splits"],
        "merge_name": "train.csv", "skip_prep": hparams["skip_prep"]})
"""

import sys

from qieemo_sb.data.librispeech import main, prepare_librispeech

__all__ = ["prepare_librispeech", "main"]

if __name__ == "__main__":
    sys.exit(main())
