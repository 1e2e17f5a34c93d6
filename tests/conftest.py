"""Shared pytest set-up: deterministic, 2-thread torch for every test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def corpus_tiny(tmp_path_factory):
    """The tiny synthetic LibriSpeech + IEMOCAP corpora (seed 0), made once per
    test session; tests that alter data copy them first."""
    from qieemo_sb.data.synthetic import generate

    out = tmp_path_factory.mktemp("corpus_tiny")
    generate(out_dir=out, size="tiny", seed=0, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def stage1(corpus_tiny, tmp_path_factory):
    """Tiny stage-1 exports of both backbones (debug runs on the tiny LibriSpeech)."""
    from recipe_runs import ASR_RECIPE, run

    exports = {}
    for name in ("efficient_conformer_tiny", "conformer_tiny"):
        output = tmp_path_factory.mktemp(name)
        run("train.py", f"hparams/{name}.yaml", "--data_folder", corpus_tiny / "LibriSpeech",
            "--output_folder", output, "--device", "cpu", "--debug", "--output_neurons", 60,
            cwd=ASR_RECIPE)
        exports[name] = output / "pretrained"
    return exports


@pytest.fixture(scope="session")
def learned_fold(stage1, tmp_path_factory):
    """Fold 1 of qieemo_tiny on the small synthetic IEMOCAP (780 turns): a model
    that has learned something, for the learning test and the inference tests
    that need one. The recipe's first 3 epochs (the encoder frozen for the
    first): its 5-epoch run keeps epoch 3 too, the best validation UA."""
    from qieemo_sb.data.synthetic import generate
    from recipe_runs import emotion_args, run

    corpus = tmp_path_factory.mktemp("iemocap_small")
    generate(out_dir=corpus, size="small", corpora=["iemocap"], seed=0, progress=False)
    experiment = tmp_path_factory.mktemp("learned_fold")
    run("train.py", "hparams/qieemo_tiny.yaml",
        *emotion_args(corpus / "IEMOCAP_full_release", stage1["efficient_conformer_tiny"], experiment, "--fold", 1,
                     "--number_of_epochs", 3))
    return experiment / "fold_1"
