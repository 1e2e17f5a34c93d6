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
