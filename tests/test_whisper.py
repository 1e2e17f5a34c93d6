"""Backbone 3 (Whisper): features, the encoder contract, both length modes, a fold, export."""

import json
import math

import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

from qieemo_sb.backbones import load_backbone
from qieemo_sb.encoders.whisper import WhisperEncoder, WhisperFeatures
from recipe_runs import run

N_BLOCKS = 4


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    """A tiny random Whisper in Hugging Face format (what a user's local folder holds)."""
    torch.manual_seed(1234)  # not the per-test seed: a fresh random init must differ from it
    config = WhisperConfig(
        d_model=32, encoder_layers=N_BLOCKS, encoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
    )
    folder = tmp_path_factory.mktemp("tiny_whisper")
    WhisperModel(config).save_pretrained(folder)
    return folder


def speechlike(seconds: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    return 0.1 * torch.sin(2 * math.pi * 180 * t) * torch.rand(t.shape, generator=generator)


def test_features_are_whisper_feature_extractor_s(whisper_dir):
    extractor = WhisperFeatureExtractor()
    clips = [speechlike(3.0, seed=1), speechlike(1.234, seed=2)]
    batch = torch.zeros(2, clips[0].numel())
    for row, clip in enumerate(clips):
        batch[row, : clip.numel()] = clip
    ours = WhisperFeatures(n_mels=80, pad_to_30s=True)(batch)
    for row, clip in enumerate(clips):
        reference = extractor(clip.numpy(), sampling_rate=16000, return_tensors="pt").input_features[0]
        torch.testing.assert_close(ours[row].T, reference, atol=1e-5, rtol=0)
    real = WhisperFeatures(n_mels=80, pad_to_30s=False)(batch)
    assert real.shape == (2, 300, 80)
    torch.testing.assert_close(real, ours[:, :300])


@pytest.mark.parametrize("real_length", [False, True])
def test_yaml_contract_lengths_and_padded_batch(whisper_dir, real_length):
    backbone = load_backbone("whisper", {"whisper_source": str(whisper_dir), "real_length": real_length})
    features, normalize = backbone["compute_features"], backbone["normalize"].eval()
    encoder = backbone["encoder"].eval()
    assert backbone["num_blocks"] == encoder.num_blocks == N_BLOCKS and backbone["d_model"] == 32
    durations = [2.37, 1.0, 0.5]
    clips = [speechlike(seconds, seed=i) for i, seconds in enumerate(durations)]
    batch = torch.zeros(len(clips), clips[0].numel())
    for row, clip in enumerate(clips):
        batch[row, : clip.numel()] = clip
    wav_lens = torch.tensor([clip.numel() for clip in clips]) / batch.shape[1]

    from qieemo_sb.features import fbank_with_lengths

    with torch.no_grad():
        feats, feat_lens = fbank_with_lengths(features, normalize, batch, wav_lens)
        out = encoder(feats, feat_lens)
        expected = [math.ceil(int(seconds * 16000) // 160 / 2) for seconds in durations]  # 50 per second
        assert len(out.hidden_states) == len(out.lengths) == N_BLOCKS
        for hidden, lengths in zip(out.hidden_states, out.lengths):
            assert lengths.tolist() == expected == [119, 50, 25]
            assert hidden.shape == (3, max(expected), 32)
        for row, clip in enumerate(clips):
            alone_feats, alone_lens = fbank_with_lengths(features, normalize, clip.unsqueeze(0), torch.ones(1))
            alone = encoder(alone_feats, alone_lens)
            for block in range(N_BLOCKS):
                valid = expected[row]
                torch.testing.assert_close(out.hidden_states[block][row, :valid], alone.hidden_states[block][0],
                                           atol=1e-5, rtol=1e-4)
                assert out.hidden_states[block][row, valid:].abs().sum() == 0


def test_thirty_second_mode_is_hugging_face_s_encoder(whisper_dir):
    encoder = WhisperEncoder(source=str(whisper_dir)).eval()
    reference = WhisperModel.from_pretrained(whisper_dir).get_encoder().eval()
    feats = WhisperFeatures(n_mels=80)(speechlike(4.0).unsqueeze(0))
    with torch.no_grad():
        ours = encoder(feats, torch.ones(1))
        theirs = reference(feats.transpose(1, 2), output_hidden_states=True)
    for block in range(N_BLOCKS - 1):
        torch.testing.assert_close(ours.hidden_states[block], theirs.hidden_states[block + 1])
    torch.testing.assert_close(ours.hidden_states[-1], theirs.last_hidden_state)


def test_clips_beyond_thirty_seconds_and_mismatched_modes(whisper_dir):
    encoder = WhisperEncoder(source=str(whisper_dir)).eval()
    feats = WhisperFeatures(n_mels=80)(speechlike(31.0).unsqueeze(0))
    assert feats.shape[1] == 3000
    with torch.no_grad():
        assert encoder(feats, torch.ones(1)).lengths[0].tolist() == [1500]
    with pytest.raises(ValueError, match="3000 feature frames"):
        encoder(WhisperFeatures(n_mels=80, pad_to_30s=False)(speechlike(2.0).unsqueeze(0)), torch.ones(1))
    with pytest.raises(ValueError, match="exactly one of source"):
        WhisperEncoder()
    random_weights = WhisperEncoder(source=str(whisper_dir), pretrained=False)
    assert not torch.equal(random_weights.whisper.conv1.weight, encoder.whisper.conv1.weight)


def test_a_fold_trains_and_exports_with_whisper(whisper_dir, corpus_tiny, tmp_path):
    """One fold (1 epoch) of qieemo_whisper.yaml, then export and classify (the inference folder works too)."""
    from qieemo_sb.export import export_emotion_model
    from qieemo_sb.inference import QieemoClassifier

    experiment = tmp_path / "whisper_run"
    result = run("train.py", "hparams/qieemo_whisper.yaml",
                 "--data_folder", corpus_tiny / "IEMOCAP_full_release",
                 "--backbone", f"{{whisper_source: {whisper_dir}, real_length: True}}",
                 "--experiment_folder", experiment, "--device", "cpu", "--fold", 2, "--number_of_epochs", 1)
    fold = experiment / "fold_2"
    metrics = json.loads((fold / "test_metrics.json").read_text())
    assert sum(metrics["support"]) == 9, result.output[-2000:]

    model = export_emotion_model(fold, tmp_path / "model")
    exported = (model / "hyperparams.yaml").read_text()
    assert str(whisper_dir) not in exported and "config:" in exported
    classifier = QieemoClassifier.from_hparams(source=str(model), run_opts={"device": "cpu"})
    assert isinstance(classifier.mods.encoder, WhisperEncoder) and classifier.mods.encoder.real_length
    assert json.loads((model / "export.json").read_text())["mmf_blocks"] == [1, 2, 3, 4]  # every block of 4
    weights = torch.load(model / "encoder.ckpt", map_location="cpu")
    loaded = classifier.mods.encoder.state_dict()
    assert weights.keys() == loaded.keys() and all(torch.equal(weights[k], loaded[k]) for k in weights)
    out_prob, score, index, labels = classifier.classify_batch(speechlike(1.5).unsqueeze(0))
    assert out_prob.shape == (1, 4) and torch.isfinite(out_prob).all() and labels[0] in classifier.labels


def whisper_recipe_args(whisper_dir, corpus_tiny, experiment, *extra):
    """Options of the emotion recipe's scripts for qieemo_whisper.yaml on the tiny corpus (no stage-1 folder)."""
    return ["hparams/qieemo_whisper.yaml", "--data_folder", corpus_tiny / "IEMOCAP_full_release",
            "--backbone", f"{{whisper_source: {whisper_dir}, real_length: True}}",
            "--experiment_folder", experiment, "--device", "cpu", *extra]


def test_layer_probe_of_whisper_writes_table_i(whisper_dir, corpus_tiny, tmp_path):
    """probe.py on qieemo_whisper.yaml: one row per Whisper block, and a second run reads every
    utterance's features from the cache."""
    args = whisper_recipe_args(whisper_dir, corpus_tiny, tmp_path, "--folds", "[1, 2]", "--probe_epochs", 10)
    first = run("probe.py", *args)
    probe = tmp_path / "probe"
    utterances = set()
    for split in ("train", "valid", "test"):
        utterances |= set(json.loads((probe / "manifests" / "fold_1" / f"{split}.json").read_text()))
    features = torch.load(probe / "block_features.pt")["features"]
    assert set(features) == utterances and next(iter(features.values())).shape == (N_BLOCKS, 32)
    assert f"0 from the cache, {len(utterances)} computed" in first.output, first.output[-3000:]

    results = json.loads((probe / "probe_results.json").read_text())
    assert sorted(results["blocks"], key=int) == [str(b) for b in range(1, N_BLOCKS + 1)]
    for block in results["blocks"].values():
        assert sorted(block["folds"]) == ["1", "2"]
        for scores in [block["mean"], *block["folds"].values()]:
            assert all(0.0 <= scores[k] <= 1.0 for k in ("wa", "ua", "wf1")), scores
    table = (probe / "probe_results.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + N_BLOCKS
    assert (probe / "probe_wa.png").stat().st_size > 1000

    stamp = (probe / "block_features.pt").stat().st_mtime_ns
    second = run("probe.py", *args)
    assert f"{len(utterances)} from the cache, 0 computed" in second.output, second.output[-3000:]
    assert (probe / "block_features.pt").stat().st_mtime_ns == stamp
    assert json.loads((probe / "probe_results.json").read_text()) == results  # seeded probes, same features


def test_run_folds_with_whisper_writes_cross_fold_results(whisper_dir, corpus_tiny, tmp_path):
    """run_folds.py needs no stage-1 folder with qieemo_whisper.yaml (one fold of 1 epoch: train.py
    itself is tested above)."""
    run("run_folds.py", *whisper_recipe_args(whisper_dir, corpus_tiny, tmp_path,
                                             "--folds", "[1]", "--number_of_epochs", 1))
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["folds"]) == ["1"] and results["title"] == "qieemo_whisper"
    assert sum(results["pooled"]["support"]) == 9  # the held-out session
    assert (tmp_path / "results.md").is_file() and (tmp_path / "confusion.png").is_file()
