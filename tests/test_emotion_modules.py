"""Stage-2 building blocks: the emotion head, audio reading, custom manifests, fold tables, probe."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from qieemo_sb.audio import AudioError, load_audio
from qieemo_sb.backbones import load_backbone
from qieemo_sb.encoders.output import EncoderOutput
from qieemo_sb.data.manifest import ManifestError, prepare_manifest_folds
from qieemo_sb.folds import summarize_folds, write_fold_results
from qieemo_sb.modules.classifier import EmotionClassifier
from qieemo_sb.modules.cma import CrossModalAttention
from qieemo_sb.modules.emotion_head import EmotionHead
from qieemo_sb.modules.mmf import MultiBlockFusion
from qieemo_sb.modules.regularization import RandomTimeCrop, WeightAverage
from qieemo_sb.modules.standardization import FrameStandardization
from qieemo_sb.pretrained import check_exported_folder, load_normalizer_strict
from qieemo_sb.probe import train_probe


def make_head(cma=True, blocks=(7, 8, 9, 10, 11, 12), d_emo=16, standardize=False):
    mmf = MultiBlockFusion(d_model=64, blocks=blocks, d_emo=d_emo, conv_channels=[4],
                           time_strides=[1], feature_strides=[2], dropout=0.0, standardize=standardize)
    return EmotionHead(
        mmf=mmf,
        cma=CrossModalAttention(query_size=d_emo, key_size=64, d_att=d_emo,
                                standardize_ppg=standardize) if cma else None,
        classifier=EmotionClassifier(input_size=d_emo, n_classes=4, hidden_size=32, dropout=0.0),
    ).eval()


@pytest.mark.parametrize("cma, blocks, standardize", [
    (True, (7, 8, 9, 10, 11, 12), False), (False, (7, 8, 9, 10, 11, 12), False), (True, (12,), False),
    (True, (7, 8, 9, 10, 11, 12), True)])
def test_head_on_a_padded_batch_matches_one_by_one(cma, blocks, standardize):
    """Full Qieemo and the two head ablations ignore padding end to end."""
    encoder = load_backbone("efficient_conformer_tiny")["encoder"].eval()
    head = make_head(cma=cma, blocks=blocks, standardize=standardize)
    feats = torch.randn(3, 260, 80)
    rel_lens = torch.tensor([1.0, 0.55, 0.3])
    with torch.no_grad():
        batched = head(encoder(feats, rel_lens))
        for row in range(3):
            frames = int(round(rel_lens[row].item() * 260))
            single = head(encoder(feats[row:row + 1, :frames], torch.ones(1)))
            torch.testing.assert_close(batched.logits[row], single.logits[0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(batched.embedding[row], single.embedding[0], atol=1e-4, rtol=1e-4)
    assert batched.logits.shape == (3, 4) and batched.embedding.shape == (3, 16)


def test_standardization_reads_valid_frames_only_and_keeps_running_statistics():
    """Training standardises over the batch's valid frames (padding neither counts nor
    changes), evaluation with the running statistics; a clip-independent offset and scale
    of the block, which a barely trained encoder adds, is removed."""
    torch.manual_seed(0)
    norm = FrameStandardization(num_features=4, momentum=1.0)  # running stats = the last batch's
    x = 3.0 + 0.01 * torch.randn(2, 7, 4)
    lengths = torch.tensor([7, 4])
    padded = x.clone()
    padded[1, 4:] = 1e3  # garbage on padded frames
    out = norm.train()(padded, lengths)
    valid = torch.cat([x[0], x[1, :4]])
    expected = (valid - valid.mean(0)) / torch.sqrt(valid.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(torch.cat([out[0], out[1, :4]]), expected, atol=1e-3, rtol=1e-3)
    assert out[1, 4:].eq(0).all()
    torch.testing.assert_close(norm.norm.running_mean, valid.mean(0))
    norm.eval()
    kept = norm.norm.running_mean.clone()
    stats = kept, torch.sqrt(norm.norm.running_var + 1e-5)
    torch.testing.assert_close(norm(padded, lengths)[1, :4], (x[1, :4] - stats[0]) / stats[1],
                               atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(norm(x[1:, :4], torch.tensor([4]))[0], norm(padded, lengths)[1, :4])
    assert torch.equal(norm.norm.running_mean, kept)  # evaluation leaves the statistics


def test_head_rejects_a_classifier_of_the_wrong_width():
    mmf = MultiBlockFusion(d_model=64, d_emo=16, conv_channels=[4], time_strides=[1], feature_strides=[2])
    with pytest.raises(ValueError, match="reads 32 features but MMF's d_emo gives 16"):
        EmotionHead(mmf=mmf, classifier=EmotionClassifier(input_size=32, n_classes=4))
    with pytest.raises(ValueError, match="CMA's d_att gives 8"):
        EmotionHead(mmf=mmf, cma=CrossModalAttention(query_size=16, key_size=64, d_att=8),
                    classifier=EmotionClassifier(input_size=16, n_classes=4))


def test_cma_changes_the_prediction_and_gets_gradients():
    encoder = load_backbone("efficient_conformer_tiny")["encoder"].eval()
    head = make_head(cma=True)
    with torch.no_grad():
        encoded = encoder(torch.randn(2, 200, 80), torch.tensor([1.0, 0.8]))
    head(encoded).logits.sum().backward()
    for name in ("query", "key", "value"):
        assert getattr(head.cma, name).weight.grad.abs().sum() > 0
    assert head.mmf.block_logits.grad.abs().sum() > 0


def test_residual_cma_adds_the_emotion_features_to_the_attention_output():
    torch.manual_seed(0)
    plain = CrossModalAttention(query_size=8, key_size=16, d_att=8)
    residual = CrossModalAttention(query_size=8, key_size=16, d_att=8, residual=True)
    residual.load_state_dict(plain.state_dict())
    emotion, ppg = torch.randn(2, 5, 8), torch.randn(2, 7, 16)
    lengths, ppg_lengths = torch.tensor([5, 3]), torch.tensor([7, 4])
    expected = plain(emotion, lengths, ppg, ppg_lengths)[0] + emotion
    expected[1, 3:] = 0
    assert torch.allclose(residual(emotion, lengths, ppg, ppg_lengths)[0], expected)
    with pytest.raises(ValueError, match="query_size must equal d_att"):
        CrossModalAttention(query_size=8, key_size=16, d_att=4, residual=True)


def test_random_crop_cuts_the_same_time_span_in_blocks_of_every_rate():
    torch.manual_seed(0)
    # Block 2 has half the frame rate of block 1; frame values are their times.
    times = torch.arange(40.0)
    hidden = [times[None, :, None].repeat(3, 1, 2), times[None, ::2, None].repeat(3, 1, 2), None]
    lengths = [torch.tensor([40, 30, 10]), torch.tensor([20, 15, 5]), torch.tensor([20, 15, 5])]
    for _ in range(20):
        out = RandomTimeCrop(share=0.5)(EncoderOutput(hidden, lengths, [1, 2, 2]))
        assert out.hidden_states[2] is None and out.lengths[2].tolist() == [20, 15, 5]
        assert out.lengths[1].tolist() == [10, 8, 2]  # round(0.5 * length) of the slowest block
        assert out.lengths[0].tolist() == [20, 16, 4]
        for row in range(3):
            fine = out.hidden_states[0][row, : out.lengths[0][row], 0]
            coarse = out.hidden_states[1][row, : out.lengths[1][row], 0]
            assert torch.equal(fine, fine[0] + torch.arange(len(fine)))  # one contiguous stretch
            assert fine[-1] < lengths[0][row] and coarse[-1] < lengths[0][row]
            assert coarse[0] == fine[0] and torch.equal(coarse, fine[::2])  # the same span of time
            assert out.hidden_states[0][row, out.lengths[0][row]:].abs().sum() == 0  # padding zero
    with pytest.raises(ValueError, match="share must be in"):
        RandomTimeCrop(share=0.0)


def test_weight_average_follows_the_exponential_average_and_keeps_the_keys():
    model = make_head(cma=True)
    average = WeightAverage(model, decay=0.9)
    expected = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        encoded = EncoderOutput([torch.randn(2, 6, 64)] * 12, [torch.tensor([6, 4])] * 12, [4] * 12)
        model(encoded).logits.sum().backward()
        optimizer.step()
        average.update(model)
        for name, p in model.named_parameters():
            expected[name] = 0.9 * expected[name] + 0.1 * p.detach()
    for name, p in average.averaged.named_parameters():
        assert torch.allclose(p, expected[name], atol=1e-6), name
        assert not p.requires_grad
    assert list(average.averaged.state_dict()) == list(model.state_dict())


def test_load_audio_downmixes_resamples_and_names_bad_files(tmp_path):
    t = np.arange(48000) / 48000
    tone = 0.3 * np.sin(2 * np.pi * 300 * t)
    sf.write(tmp_path / "stereo48k.wav", np.stack([tone, tone], axis=1), 48000)
    sf.write(tmp_path / "mono16k.flac", tone[::3], 16000)
    stereo, mono = load_audio(tmp_path / "stereo48k.wav"), load_audio(tmp_path / "mono16k.flac")
    assert stereo.shape == mono.shape == (16000,)
    assert torch.allclose(stereo[100:-100], mono[100:-100], atol=2e-3)

    sf.write(tmp_path / "empty.wav", np.zeros((0,)), 16000)
    (tmp_path / "text.wav").write_text("not audio")
    nan = tone.copy()
    nan[5] = np.nan
    sf.write(tmp_path / "nan.wav", nan.astype(np.float32), 16000, subtype="FLOAT")
    for name, message in (("empty.wav", "no audio samples"), ("text.wav", "cannot read audio"),
                          ("nan.wav", "NaN or infinite"), ("missing.wav", "cannot read audio")):
        with pytest.raises(AudioError, match=message) as error:
            load_audio(tmp_path / name)
        assert name in str(error.value)


@pytest.fixture
def custom_clips(tmp_path):
    """Twelve short clips of three speakers with three labels of one's own."""
    rows = []
    for i in range(12):
        sf.write(tmp_path / f"clip{i}.wav", 0.01 * np.ones(8000 + 800 * i), 16000)
        rows.append({"wav": f"clip{i}.wav", "emo": ["calm", "joy", "anger"][i % 3], "speaker": f"s{i % 3}"})
    return tmp_path, rows


def write_csv(path, rows, fields):
    lines = [",".join(fields)] + [",".join(str(r[f]) for f in fields) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_custom_manifest_speakers_are_dealt_to_folds(custom_clips):
    folder, rows = custom_clips
    manifest = write_csv(folder / "data.csv", rows, ["wav", "emo", "speaker"])
    summary = prepare_manifest_folds(manifest=manifest, save_folder=folder / "out",
                                     labels=["calm", "joy", "anger"], folds=[1, 2, 3], valid_ratio=0.25)
    assert summary["folds"]["1"] == {"train": 6, "valid": 2, "test": 4}
    for fold in (1, 2, 3):
        parts = {s: json.loads((folder / "out" / f"fold_{fold}" / f"{s}.json").read_text())
                 for s in ("train", "valid", "test")}
        test_speakers = {e["speaker"] for e in parts["test"].values()}
        train_speakers = {e["speaker"] for s in ("train", "valid") for e in parts[s].values()}
        assert len(test_speakers) == 1 and not test_speakers & train_speakers
        entry = parts["test"][next(iter(parts["test"]))]
        assert entry["wav"].startswith(str(folder)) and entry["duration"] >= 0.5


def test_custom_manifest_json_split_field_is_used_as_given(custom_clips):
    folder, rows = custom_clips
    entries = {f"utt{i}": {**row, "split": ["train", "train", "valid", "test"][i % 4], "duration": 1.0}
               for i, row in enumerate(rows)}
    (folder / "data.json").write_text(json.dumps(entries))
    summary = prepare_manifest_folds(manifest=folder / "data.json", save_folder=folder / "out",
                                     labels=["calm", "joy", "anger"], folds=[1])
    assert summary["folds"]["1"] == {"train": 6, "valid": 3, "test": 3}
    test = json.loads((folder / "out" / "fold_1" / "test.json").read_text())
    assert sorted(test) == ["utt11", "utt3", "utt7"]


def test_custom_manifest_errors_name_the_file_and_row(custom_clips):
    folder, rows = custom_clips
    labels = ["calm", "joy", "anger"]
    manifest = write_csv(folder / "data.csv", rows, ["wav", "emo", "speaker"])
    with pytest.raises(ManifestError, match=r"labels \['anger'\] are not in labels") as error:
        prepare_manifest_folds(manifest=manifest, save_folder=folder / "o", labels=["calm", "joy"])
    assert "data.csv" in str(error.value) and "--labels '[anger, calm, joy]'" in str(error.value)

    broken = [dict(r) for r in rows]
    broken[4]["wav"] = "gone.wav"
    with pytest.raises(ManifestError, match=r"data.csv, row 5: wav file not found: .*gone.wav"):
        prepare_manifest_folds(manifest=write_csv(folder / "data.csv", broken, ["wav", "emo", "speaker"]),
                               save_folder=folder / "o", labels=labels)
    with pytest.raises(ManifestError, match="needs a 'split', 'fold' or 'speaker' field"):
        prepare_manifest_folds(manifest=write_csv(folder / "nospk.csv", rows, ["wav", "emo"]),
                               save_folder=folder / "o", labels=labels)
    with pytest.raises(ManifestError, match="row 1: the 'emo' field is missing"):
        prepare_manifest_folds(manifest=write_csv(folder / "noemo.csv", rows, ["wav", "speaker"]),
                               save_folder=folder / "o", labels=labels)


def test_fold_tables_pool_and_average(tmp_path):
    labels = ["neu", "hap", "sad", "ang"]
    fold_predictions = {1: ([0, 1, 2, 3], [0, 1, 2, 2]), 2: ([0, 0, 1, 3, 3, 2], [0, 0, 1, 3, 3, 2])}
    for fold, (targets, predictions) in fold_predictions.items():
        write_fold_results(tmp_path / f"fold_{fold}", ids=[f"{fold}_{i}" for i in range(len(targets))],
                           targets=targets, predictions=predictions,
                           probabilities=[[0.25] * 4] * len(targets), labels=labels,
                           run_facts={"epoch": 3, "seconds": 10})
    summary = summarize_folds(tmp_path, folds=[1, 2], title="unit")
    assert summary["folds"]["1"]["wa"] == 0.75 and summary["folds"]["2"]["wa"] == 1.0
    assert summary["mean"]["wa"] == pytest.approx(0.875)
    assert summary["std"]["wa"] == pytest.approx(np.std([0.75, 1.0], ddof=1))
    assert summary["pooled"]["wa"] == pytest.approx(9 / 10)
    assert summary["pooled"]["confusion"][3] == [0, 0, 1, 2]
    table = (tmp_path / "results.md").read_text()
    assert "| 1 | 4 | 75.00 |" in table and "87.50 +- 17.68" in table and "| pooled | 10 | 90.00 |" in table
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    predictions = (tmp_path / "fold_1" / "test_predictions.csv").read_text().splitlines()
    assert predictions[0] == "id,target,prediction,p_neu,p_hap,p_sad,p_ang"
    assert predictions[4].startswith("1_3,ang,sad,")
    with pytest.raises(FileNotFoundError, match="fold 3 has not finished"):
        summarize_folds(tmp_path, folds=[1, 2, 3], title="unit")


def test_probe_learns_a_separable_feature():
    torch.manual_seed(0)
    x = torch.randn(300, 12)
    y = (x[:, 3] > 0).long() + 2 * (x[:, 7] > 0).long()
    scores = train_probe(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:],
                         n_classes=4, hidden_size=32, epochs=150, lr=0.01)
    assert scores["wa"] >= 0.8 and 1 <= scores["best_epoch"] <= 150


def test_pretrained_folder_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="normalizer.ckpt, encoder.ckpt missing"):
        check_exported_folder(tmp_path)
    (tmp_path / "pretrained").mkdir()
    for name in ("normalizer.ckpt", "encoder.ckpt"):
        (tmp_path / "pretrained" / name).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="the stage-1 run's export is .*pretrained"):
        check_exported_folder(tmp_path)
    torch.save({"count": 0, "glob_mean": torch.empty(0), "glob_std": torch.empty(0)}, tmp_path / "n.ckpt")
    normalizer = load_backbone("efficient_conformer_tiny")["normalize"]
    with pytest.raises(ValueError, match="n.ckpt: the normalizer statistics are empty"):
        load_normalizer_strict(normalizer, tmp_path / "n.ckpt")
    torch.save({"mean": 1}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match=r"other.ckpt is not a global normalizer's statistics"):
        load_normalizer_strict(normalizer, tmp_path / "other.ckpt")
