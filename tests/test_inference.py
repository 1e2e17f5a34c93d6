"""Inference: export, foreign_class in a fresh process, bad audio, rates, timeline, CLI."""

import csv
import math
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from qieemo_sb.audio import AudioError
from qieemo_sb.cpu_inference import INFERENCE_FORMS, resolve_kernels
from qieemo_sb.cpu_inference import _ONEDNN_LINEAR as ONEDNN_LINEAR_OP
from qieemo_sb.export import export_emotion_model
from qieemo_sb.inference import QieemoClassifier
from qieemo_sb.metrics import embedding_collapse
from qieemo_sb.features import fbank_with_lengths
from recipe_runs import ROOT, emotion_args, run

FOREIGN_CLASS_SCRIPT = """
import json, sys
from speechbrain.inference.interfaces import foreign_class
clf = foreign_class(source=sys.argv[1], pymodule_file="custom_interface.py", classname="QieemoClassifier")
out = {}
for path in sys.argv[2:]:
    out_prob, score, index, text_lab = clf.classify_file(path)
    out[path] = {"label": text_lab[0], "index": int(index[0]), "score": float(score[0]),
                 "probabilities": out_prob.exp()[0].tolist()}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def trained_fold(stage1, corpus_tiny, tmp_path_factory):
    """Fold 2 of qieemo_tiny, 3 epochs on the tiny synthetic IEMOCAP."""
    experiment = tmp_path_factory.mktemp("emotion_run")
    run("train.py", "hparams/qieemo_tiny.yaml",
        *emotion_args(corpus_tiny / "IEMOCAP_full_release", stage1["efficient_conformer_tiny"], experiment,
                      "--fold", 2, "--number_of_epochs", 3))
    return experiment / "fold_2"


@pytest.fixture(scope="module")
def model_dir(trained_fold, tmp_path_factory):
    return export_emotion_model(trained_fold, tmp_path_factory.mktemp("export") / "model")


@pytest.fixture(scope="module")
def classifier(model_dir):
    return QieemoClassifier.from_hparams(source=str(model_dir), run_opts={"device": "cpu"})


def brain_predictions(fold, with_targets=False):
    """id -> (wav, predicted label, probabilities[, target]) of the Brain's test pass."""
    manifest = json.loads((fold / "manifests" / fold.name / "test.json").read_text())
    with open(fold / "test_predictions.csv") as stream:
        rows = list(csv.DictReader(stream))
    labels = [key[2:] for key in rows[0] if key.startswith("p_")]
    return {row["id"]: (manifest[row["id"]]["wav"], row["prediction"], [float(row[f"p_{k}"]) for k in labels])
            + ((row["target"],) if with_targets else ()) for row in rows}


def test_foreign_class_in_a_fresh_process_matches_the_training_brain(trained_fold, model_dir, tmp_path):
    # Another place, as after an upload: nothing may point back to the run.
    moved = tmp_path / "hub_copy"
    shutil.copytree(model_dir, moved)
    for name in ("hyperparams.yaml", "custom_interface.py", "export.json", "README.md"):
        text = (moved / name).read_text()
        assert str(trained_fold.parent) not in text and str(model_dir) not in text, name
    assert sorted(p.name for p in moved.iterdir()) == [
        "README.md", "custom_interface.py", "encoder.ckpt", "export.json", "head.ckpt",
        "hyperparams.yaml", "label_encoder.txt", "normalizer.ckpt"]

    expected = brain_predictions(trained_fold)
    wavs = [wav for wav, _, _ in expected.values()]
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = run("-c", FOREIGN_CLASS_SCRIPT, moved, *wavs, cwd=work,
                 env={"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    got = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert len(got) == len(expected) == 9
    for wav, label, probabilities in expected.values():
        assert got[wav]["label"] == label, wav
        # The CSV keeps 5 decimals; padding in the Brain's batches changes nothing.
        np.testing.assert_allclose(got[wav]["probabilities"], probabilities, atol=2e-5)
        assert got[wav]["score"] == pytest.approx(np.log(max(got[wav]["probabilities"])), abs=1e-5)


def test_export_json_and_labels(model_dir, trained_fold):
    facts = json.loads((model_dir / "export.json").read_text())
    metrics = json.loads((trained_fold / "test_metrics.json").read_text())
    assert facts["labels"] == ["neu", "hap", "sad", "ang"] and facts["test"]["wa"] == metrics["wa"]
    assert facts["checkpoint"]["kept_by"] == "best validation UA" and facts["mmf_blocks"] == [7, 8, 9, 10, 11, 12]
    assert (model_dir / "label_encoder.txt").read_text().startswith("'neu' => 0\n'hap' => 1\n")
    # Labels that do not fit the trained classifier are refused.
    with pytest.raises(ValueError, match=r"the labels \['neu', 'sad', 'ang'\] are 3 classes but the classifier has 4"):
        QieemoClassifier.from_hparams(source=str(model_dir), overrides={"labels": ["neu", "sad", "ang"]})


def test_padded_batch_gives_what_each_clip_gives_alone(classifier):
    torch.manual_seed(0)
    lengths = [16000, 11111, 23456, 4000]
    wavs = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        wavs[row, :n] = 0.1 * torch.randn(n)
    wav_lens = torch.tensor(lengths) / max(lengths)
    out_prob, score, index, text_lab = classifier.classify_batch(wavs, wav_lens)
    embeddings = classifier.encode_batch(wavs, wav_lens)
    assert out_prob.shape == (4, 4) and score.shape == index.shape == (4,) and embeddings.shape == (4, 64)
    for row, n in enumerate(lengths):
        alone = classifier.classify_batch(wavs[row:row + 1, :n])
        torch.testing.assert_close(out_prob[row], alone[0][0], atol=1e-5, rtol=0)
        assert text_lab[row] == alone[3][0]
        torch.testing.assert_close(embeddings[row], classifier.encode_batch(wavs[row, :n])[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out_prob.exp().sum(-1), torch.ones(4))
    # Ordinary tensors (not inference-mode ones): a downstream model can train on them.
    probe = torch.nn.Linear(64, 2)
    probe(embeddings).sum().backward()
    assert probe.weight.grad is not None and not embeddings.requires_grad


def test_long_clip_in_chunks_is_the_weighted_mean_of_its_chunks(classifier, tmp_path):
    samples = 0.1 * torch.randn(40000)  # 2.5 s
    path = tmp_path / "clip.wav"
    sf.write(path, samples.numpy(), 16000, subtype="FLOAT")
    whole = classifier.classify_file(path)
    torch.testing.assert_close(whole[0], classifier.classify_batch(samples)[0])
    classifier.hparams.max_chunk = 1.0
    try:
        chunked = classifier.classify_file(path)
    finally:
        classifier.hparams.max_chunk = None
    pieces = [samples[:13334], samples[13334:26668], samples[26668:]]  # 3 equal chunks of <= 1 s
    embedding = sum(len(piece) / 40000 * classifier.encode_batch(piece) for piece in pieces)
    expected = torch.log_softmax(classifier.mods.head.classifier(embedding), dim=-1)
    torch.testing.assert_close(chunked[0], expected, atol=1e-5, rtol=0)
    assert not torch.allclose(chunked[0], whole[0], atol=1e-4)  # chunks lose cross-chunk context


def test_bad_audio_is_an_error_naming_the_file_and_silence_is_answered(classifier, tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype="float32"), 16000)
    short = tmp_path / "short.flac"
    sf.write(short, 0.1 * np.random.randn(3200), 16000)  # 0.2 s
    nan = tmp_path / "nan.wav"
    samples = 0.1 * np.random.randn(16000).astype("float32")
    samples[500] = np.nan
    sf.write(nan, samples, 16000, subtype="FLOAT")
    for path, reason in [(not_audio, "cannot read audio"), (empty, "no audio samples"),
                         (short, "shorter than the 0.25 s minimum"), (nan, "NaN or infinite")]:
        with pytest.raises(AudioError, match=reason) as error:
            classifier.classify_file(path)
        assert str(path) in str(error.value)
        with pytest.raises(AudioError, match=reason):
            classifier.classify_timeline(path)
    with pytest.raises(ValueError, match=r"rows \[1\] hold NaN"):
        classifier.classify_batch(torch.stack([torch.zeros(8000), torch.full((8000,), float("nan"))]))

    minimum = tmp_path / "minimum.wav"
    sf.write(minimum, 0.1 * np.random.randn(4000), 16000)  # exactly 0.25 s
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(32000), 16000)
    for path in (minimum, silence):
        out_prob, score, _, text_lab = classifier.classify_file(path)
        assert torch.isfinite(out_prob).all() and text_lab[0] in classifier.labels
        assert out_prob.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_any_rate_channels_and_format_give_the_same_answer(classifier, trained_fold, tmp_path):
    wav = next(iter(brain_predictions(trained_fold).values()))[0]
    mono, rate = sf.read(wav, dtype="float32")
    assert rate == 16000
    reference = classifier.classify_file(wav)
    high = torchaudio.functional.resample(torch.from_numpy(mono), 16000, 48000).numpy()
    variants = {"stereo_48k.wav": (np.stack([high, 0.5 * high], axis=1), 48000),
                "mono_16k.flac": (mono, 16000), "mono_22k.ogg": (
                    torchaudio.functional.resample(torch.from_numpy(mono), 16000, 22050).numpy(), 22050)}
    for name, (samples, sample_rate) in variants.items():
        sf.write(tmp_path / name, samples, sample_rate)
        out_prob, _, _, text_lab = classifier.classify_file(tmp_path / name)
        assert text_lab == reference[3], name
        # Stereo is averaged (0.75 x the mono level): fbank is level-dependent, so a margin.
        assert (out_prob.exp() - reference[0].exp()).abs().max() < 0.05, name


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_classifier_agrees_with_float32(learned_fold, tmp_path, precision):
    """precision='bf16' or 'int8' (through from_hparams): the same float32 weights, float32
    outputs, and the float32 model's labels on the held-out session of a model that learned."""
    model = export_emotion_model(learned_fold, tmp_path / "model")
    full = QieemoClassifier.from_hparams(source=str(model), run_opts={"device": "cpu"})
    reduced = QieemoClassifier.from_hparams(source=str(model), run_opts={"device": "cpu"}, precision=precision)
    assert {p.dtype for p in reduced.mods.parameters()} == {torch.float32}
    clips = [wav for wav, _, _ in brain_predictions(learned_fold).values()]
    agree, largest = 0, 0.0
    for wav in clips:
        want, have = full.classify_file(wav), reduced.classify_file(wav)
        assert have[0].dtype == torch.float32
        agree += want[3] == have[3]
        largest = max(largest, (want[0].exp() - have[0].exp()).abs().max().item())
    print(f"{precision}: {agree}/{len(clips)} labels as float32, max |p difference| {largest:.4f}")
    assert agree >= 0.95 * len(clips) and 0 < largest < 0.1
    with pytest.raises(ValueError, match="precision must be one of"):
        QieemoClassifier.from_hparams(source=str(model), run_opts={"device": "cpu"}, precision="fp8")
    with pytest.raises(ValueError, match="it needs kernels"):
        QieemoClassifier.from_hparams(source=str(model), run_opts={"device": "cpu"}, precision="bf16", kernels=None)


def test_learned_model_gives_each_clip_its_own_embedding(learned_fold, tmp_path):
    """Every held-out clip gets an embedding of its own (none zero, none equal to another's).

    Whether the encoder's last block still reads the audio is the stage-1 test's
    (tests/test_asr_recipe.py); this fold's stage 1 is a --debug run (2 epochs of 2 batches)."""
    classifier = QieemoClassifier.from_hparams(source=str(export_emotion_model(learned_fold, tmp_path / "model")),
                                               run_opts={"device": "cpu"})
    clips = [classifier.load_audio(wav) for wav, _, _ in brain_predictions(learned_fold).values()]
    embeddings = torch.cat([classifier.encode_batch(clip) for clip in clips])
    collapse = embedding_collapse(embeddings, tolerance=1e-3)
    assert collapse["duplicate_embeddings"] == 0 and collapse["zero_embeddings"] == 0, collapse


def test_timeline_of_two_concatenated_clips_shows_both(learned_fold, tmp_path):
    """Two turns of different emotions, each labelled so alone, by a model that learned (fold 1,
    small corpus), each window encoded alone: the first window is the first turn's label, the
    last the second's, with the second turn's probabilities alone."""
    classifier = QieemoClassifier.from_hparams(source=str(export_emotion_model(learned_fold, tmp_path / "model")),
                                               run_opts={"device": "cpu"})
    size = 32000  # 2 s of each turn
    clips = {}
    for wav, _, _, emotion in sorted(brain_predictions(learned_fold, with_targets=True).values()):
        samples, _ = sf.read(wav, dtype="float32")
        if emotion not in clips and len(samples) >= size:
            clip = torch.from_numpy(samples[:size])
            if classifier.classify_batch(clip)[3][0] == emotion:
                clips[emotion] = clip
    assert len(clips) >= 2, f"recognised classes: {sorted(clips)}"
    first, second = sorted(clips)[:2]
    path = tmp_path / "two_turns.wav"
    sf.write(path, torch.cat([clips[first], clips[second]]).numpy(), 16000)
    timeline = classifier.classify_timeline(path, window=2.0, hop=1.0)
    assert [(s.start, s.end) for s in timeline] == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]
    assert [timeline[0].label, timeline[-1].label] == [first, second]
    alone = classifier.classify_batch(clips[second])[0].exp()[0]
    np.testing.assert_allclose(list(timeline[-1].probabilities.values()), alone.tolist(), atol=1e-5)


def test_timeline_covers_the_file_reading_a_bounded_stretch_at_a_time(classifier, tmp_path, monkeypatch):
    """Both paths: the same windows, probabilities that sum to 1; per window one read of
    a window, in one pass one read per chunk and its context, never the whole file."""
    path = tmp_path / "long.wav"
    sf.write(path, 0.1 * np.random.randn(int(7.3 * 8000), 2), 8000)  # 7.3 s, 8 kHz stereo
    reads = []
    original_read = sf.SoundFile.read

    def recording_read(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return original_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", recording_read)
    windows = [(0.0, 3.0), (1.0, 4.0), (2.0, 5.0), (3.0, 6.0), (4.0, 7.0), (4.3, 7.3)]
    timeline = classifier.classify_timeline(path, window=3.0, hop=1.0, batch_size=2)
    assert [(s.start, s.end) for s in timeline] == windows
    assert reads == [24000] * 6  # one window per read, never the whole file
    assert all(abs(sum(s.probabilities.values()) - 1) < 1e-5 for s in timeline)
    reads.clear()
    # Chunks of 2 s with 0.48 s of context (the coarsest frame is 80 ms): 4 reads.
    timeline = classifier.classify_timeline(path, window=3.0, hop=1.0, batch_size=2, one_pass=True, chunk=2.0,
                                            context=0.5)
    assert [(s.start, s.end) for s in timeline] == windows
    assert reads == [19840, 23680, 23680, 14240]
    assert all(abs(sum(s.probabilities.values()) - 1) < 1e-5 for s in timeline)

    short = tmp_path / "short.wav"
    sf.write(short, 0.1 * np.random.randn(12000), 16000)
    for one_pass in (False, True):
        assert [(s.start, s.end) for s in classifier.classify_timeline(short, window=3.0, one_pass=one_pass)] \
            == [(0.0, 0.75)]
    with pytest.raises(ValueError, match="hop must be positive"):
        classifier.classify_timeline(short, hop=0)
    with pytest.raises(ValueError, match="chunk must be positive"):
        classifier.classify_timeline(short, chunk=0)


def test_one_pass_cuts_each_window_from_the_encoding_of_the_file(classifier, tmp_path, monkeypatch):
    """One chunk: each window's head input is the file's block outputs at the window's
    frames (the frame grid of every block); a window that is the whole file is classify_file."""
    from qieemo_sb.features import fbank_with_lengths

    samples = (0.1 * np.random.default_rng(0).standard_normal(5 * 16000)).astype("float32")
    path = tmp_path / "five_seconds.wav"
    sf.write(path, samples, 16000)
    with torch.inference_mode():
        whole = classifier.mods.encoder(*fbank_with_lengths(
            classifier.mods.compute_features, classifier.mods.normalize, torch.from_numpy(samples)[None], torch.ones(1)))
    seen = []
    head = classifier.mods.head
    monkeypatch.setattr(head, "forward", lambda encoder_out: seen.append(encoder_out) or type(head).forward(head, encoder_out))
    timeline = classifier.classify_timeline(path, window=2.0, hop=1.5, one_pass=True)
    assert [(s.start, s.end) for s in timeline] == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0)]
    (cut,) = seen
    for block, (hidden, lengths) in enumerate(zip(cut.hidden_states, cut.lengths)):
        period = 160 * whole.subsampling[block]  # samples per frame
        count = math.ceil(201 / whole.subsampling[block])  # a 2 s window's 201 fbank frames
        assert lengths.tolist() == [count] * 3
        for window, start in enumerate([0, 24000, 48000]):
            first = min(round(start / period), int(whole.lengths[block][0]) - count)
            # Float rounding only (two calls of the encoder), grown through twelve blocks.
            torch.testing.assert_close(hidden[window], whole.hidden_states[block][0, first:first + count],
                                       atol=1e-3, rtol=1e-3)
    monkeypatch.undo()
    (only,) = classifier.classify_timeline(path, window=5.0, one_pass=True)
    np.testing.assert_allclose(list(only.probabilities.values()), classifier.classify_file(path)[0].exp()[0].tolist(),
                               atol=1e-5)


def test_one_pass_memory_is_bounded_by_the_chunk_not_the_file(classifier, tmp_path, monkeypatch):
    from qieemo_sb.timeline import BlockFrames

    path = tmp_path / "minute.wav"
    sf.write(path, 0.1 * np.random.default_rng(1).standard_normal(60 * 16000).astype("float32"), 16000)
    held = []
    original_append = BlockFrames.append

    def recording_append(self, block_frames, starts):
        original_append(self, block_frames, starts)
        held.append(max((end - first) * period for first, end, period in zip(self.first, self.end, self.periods)))

    monkeypatch.setattr(BlockFrames, "append", recording_append)
    timeline = classifier.classify_timeline(path, window=3.0, hop=1.0, one_pass=True, chunk=4.0, context=1.0)
    assert len(timeline) == 58 and len(held) == 15  # 4 s chunks
    assert max(held) / 16000 <= 4.0 + 3.0 + 0.5  # a chunk, a window not classified yet, rounding


def qieemo(*args, cwd=None):
    return run("-m", "qieemo_sb.cli", *args, cwd=cwd or ROOT, check=False)


def test_predict_cli_lines_json_and_bad_files(model_dir, trained_fold, tmp_path):
    wavs = [wav for wav, _, _ in brain_predictions(trained_fold).values()][:3]
    expected = {wav: label for wav, label, _ in brain_predictions(trained_fold).values()}
    result = qieemo("predict", model_dir, *wavs)
    assert result.returncode == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split("\t")[:2] for line in lines] == [[wav, expected[wav]] for wav in wavs]
    assert all(line.split("\t")[2].startswith("neu=") for line in lines)

    missing = tmp_path / "missing.wav"
    result = qieemo("predict", model_dir, wavs[0], missing, wavs[1], "--json")
    assert result.returncode == 1 and f"{missing}: cannot read audio" in result.stderr
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["file"] for r in records] == [wavs[0], str(missing), wavs[1]]
    assert records[0]["label"] == expected[wavs[0]] and "error" in records[1]
    assert sum(records[2]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)

    result = qieemo("predict", model_dir, wavs[0], "--timeline", "--window", "1.0", "--hop", "0.5", "--json")
    assert result.returncode == 0, result.output
    timeline = json.loads(result.stdout)["timeline"]
    assert timeline[0]["start"] == 0.0 and timeline[0]["end"] == 1.0 and timeline[1]["start"] == 0.5
    result = qieemo("predict", model_dir, wavs[0], "--timeline", "--window", "1.0", "--hop", "0.5", "--json",
                    "--one-pass")
    assert [(w["start"], w["end"]) for w in json.loads(result.stdout)["timeline"]] == \
        [(w["start"], w["end"]) for w in timeline]


def test_export_refuses_what_it_should_not_overwrite(trained_fold, model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"experiment folder with folds \['fold_2'\]"):
        export_emotion_model(trained_fold.parent, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="must be a fold's output folder"):
        export_emotion_model(tmp_path, tmp_path / "out")

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError):
            export_emotion_model(trained_fold, precious, overwrite=overwrite)
    assert (precious / "thesis.tex").read_text() == "keep me"

    again = tmp_path / "again"
    shutil.copytree(model_dir, again)
    result = qieemo("export", trained_fold, again)
    assert result.returncode == 1 and "pass --overwrite" in result.stderr
    assert "max_chunk: null" in (again / "hyperparams.yaml").read_text()
    result = qieemo("export", trained_fold, again, "--overwrite", "--timeline-window", "2.5", "--max-chunk", "8")
    assert result.returncode == 0, result.output
    text = (again / "hyperparams.yaml").read_text()
    assert "timeline_window: 2.5" in text and "max_chunk: 8.0" in text
    assert sorted(p.name for p in again.parent.iterdir()) == ["again", "precious"]  # no staging left


def test_full_size_classifiers_build_from_the_recipe_yamls():
    from qieemo_sb.hparams_files import load_hparams

    for name, d_model in (("qieemo.yaml", 256), ("qieemo_backbone2.yaml", 256)):
        hparams = load_hparams(ROOT / "recipes/IEMOCAP/Qieemo/hparams" / name,
                               {"pretrained_asr": "unused", "data_folder": "unused"})
        with pytest.raises(ValueError, match="normalizer has no statistics"):
            QieemoClassifier.from_training_hparams(hparams)
        with torch.no_grad():
            hparams["normalize"].train()(hparams["compute_features"](torch.randn(1, 16000)), torch.ones(1))
        hparams["normalize"].eval()
        wav = torch.randn(1, 24000)
        modules = torch.nn.ModuleList([hparams[key] for key in ("encoder", "head")]).eval()
        state = {key: value.clone() for key, value in modules.state_dict().items()}
        with torch.no_grad():
            expected = hparams["head"](hparams["encoder"](*fbank_with_lengths(
                hparams["compute_features"], hparams["normalize"], wav, torch.ones(1)))).embedding
        classifier = QieemoClassifier.from_training_hparams(hparams, run_opts={"device": "cpu"})
        torch.testing.assert_close(classifier.encode_batch(wav), expected, atol=1e-5, rtol=1e-5)
        # Converted to the inference forms, linear weights in the layout of the
        # products' kernel: same values, same checkpoint.
        assert {type(m) for m in classifier.mods.modules()} >= set(INFERENCE_FORMS.values())
        linears = [m.weight for m in classifier.mods.modules() if isinstance(m, torch.nn.Linear)]
        assert len(linears) > 100
        onednn = resolve_kernels("auto") == "onednn"
        assert all(w.is_contiguous() if onednn else w.stride() == (1, w.shape[0]) for w in linears)
        converted = modules.state_dict()
        assert converted.keys() == state.keys()
        assert all(torch.equal(converted[key], value) for key, value in state.items())


@pytest.mark.parametrize("kernels", [None, "default", "onednn"])
def test_every_kernel_choice_predicts_what_the_brain_did(kernels, model_dir, trained_fold):
    """Plain modules (kernels=None) or converted ones with either product kernel, passed
    as a keyword through from_hparams: linear weights row-major for oneDNN's products,
    column-major for torch's, and the training Brain's predictions either way."""
    if kernels == "onednn" and not ONEDNN_LINEAR_OP:
        pytest.skip("needs a torch with oneDNN's linear op")
    built = QieemoClassifier.from_hparams(source=str(model_dir), run_opts={"device": "cpu"}, kernels=kernels)
    linears = [m.weight for m in built.mods.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) > 50
    if kernels is None:
        assert not any(isinstance(m, tuple(INFERENCE_FORMS.values())) for m in built.mods.modules())
    else:
        assert all(w.is_contiguous() == (kernels == "onednn") for w in linears)
    for wav, label, probabilities in brain_predictions(trained_fold).values():
        out_prob, _, _, text_lab = built.classify_file(wav)
        assert text_lab[0] == label, wav
        np.testing.assert_allclose(out_prob.exp()[0].tolist(), probabilities, atol=2e-5)
