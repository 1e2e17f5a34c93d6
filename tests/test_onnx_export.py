"""ONNX export: the graph equals PyTorch on padded batches, int8 agrees, the runner and the CLI."""

import json

import numpy as np
import onnx
import pytest
import torch

from qieemo_sb.encoders.attention import RelPositionSelfAttention
from qieemo_sb.export import export_emotion_model
from qieemo_sb.inference import QieemoClassifier
from qieemo_sb.onnx_export import ExportSelfAttention, OnnxClassifier, export_onnx, module_scopes, pad_features
from recipe_runs import ROOT, run
from speechbrain.nnet.attention import RelPosEncXL
from test_inference import brain_predictions


@pytest.fixture(scope="module")
def onnx_model(learned_fold, tmp_path_factory):
    """The learned fold exported with ``--onnx``."""
    return export_emotion_model(learned_fold, tmp_path_factory.mktemp("onnx_export") / "model", onnx=True)


@pytest.fixture(scope="module")
def held_out(learned_fold):
    """The held-out session's wav files."""
    return [wav for wav, _, _ in brain_predictions(learned_fold).values()]


def test_export_attention_equals_the_training_attention():
    """All query rows at once with a padded-column shift == query blocks with the strided view."""
    torch.manual_seed(0)
    trained = RelPositionSelfAttention(embed_dim=32, num_heads=4, query_block=3).eval()
    exported = RelPositionSelfAttention(embed_dim=32, num_heads=4).eval()
    exported.load_state_dict(trained.state_dict())
    exported.__class__ = ExportSelfAttention
    x = torch.randn(2, 10, 32)
    padding = torch.arange(10)[None, :] >= torch.tensor([10, 6])[:, None]
    pos_embs = RelPosEncXL(32).make_pe(12)
    with torch.no_grad():
        for mask in (None, padding):
            torch.testing.assert_close(exported(x, pos_embs, key_padding_mask=mask),
                                       trained(x, pos_embs, key_padding_mask=mask), atol=1e-5, rtol=1e-5)


def test_onnx_graph_equals_pytorch_on_padded_batches(onnx_model, held_out):
    assert {"features.onnx", "model.onnx", "model.int8.onnx", "onnx.json"} <= {p.name for p in onnx_model.iterdir()}
    spec = json.loads((onnx_model / "onnx.json").read_text())
    classifier = QieemoClassifier.from_hparams(source=str(onnx_model), run_opts={"device": "cpu"})
    assert spec["labels"] == classifier.labels and spec["sample_rate"] == 16000
    runner = OnnxClassifier(onnx_model)
    assert [i.name for i in runner.session.get_inputs()] == ["feats", "lengths"]
    wavs = [classifier.load_audio(path) for path in held_out]
    # Batches of 1, 3 and all clips, each padded to its longest: every row as the clip alone in PyTorch.
    for batch in (wavs[:1], wavs[2:5], wavs):
        with torch.no_grad():
            feats = pad_features([classifier.mods.compute_features(wav.unsqueeze(0))[0].numpy() for wav in batch])
        log_probs, embedding = runner.run_features(*feats)
        assert log_probs.shape == (len(batch), 4) and embedding.shape[0] == len(batch)
        for row, wav in enumerate(batch):
            want = classifier.classify_batch(wav.unsqueeze(0))[0][0].numpy()
            np.testing.assert_allclose(log_probs[row], want, atol=1e-4, rtol=0)
            np.testing.assert_allclose(embedding[row], classifier.encode_batch(wav.unsqueeze(0))[0].numpy(),
                                       atol=1e-4, rtol=0)


def test_int8_graph_agrees_with_float32(onnx_model, held_out):
    full, int8 = OnnxClassifier(onnx_model), OnnxClassifier(onnx_model, int8=True)
    agree, largest, clear_changed = 0, 0.0, 0
    for path in held_out:
        (want, want_label), (have, have_label) = full.classify_file(path), int8.classify_file(path)
        agree += want_label == have_label
        largest = max(largest, float(np.abs(np.exp(want) - np.exp(have)).max()))
        second, first = np.sort(np.exp(want).ravel())[-2:]
        clear_changed += want_label != have_label and first - second > 0.1
    print(f"int8: {agree}/{len(held_out)} labels as float32, max |p difference| {largest:.4f}")
    # Labels may move only where float32 hesitates between two classes (the tiny model trained
    # here has such clips, more or fewer with the CPU's rounding); the probabilities stay close.
    assert clear_changed == 0 and agree >= 0.9 * len(held_out) and largest < 0.1
    # The encoder's products are int8; convolutions and the head's products stay float32.
    graph = onnx.load(str(onnx_model / "model.int8.onnx")).graph
    assert onnx.TensorProto.INT8 in {init.data_type for init in graph.initializer}
    ops = [node.op_type for node in graph.node]
    assert "ConvInteger" not in ops and "Conv" in ops
    float_graph = onnx.load(str(onnx_model / "model.onnx")).graph
    weights = {init.name for init in float_graph.initializer}
    encoder_products = [node for node in float_graph.node if node.op_type == "MatMul"
                        and "encoder" in module_scopes(node) and node.input[1] in weights]
    float_products = [node for node in float_graph.node if node.op_type in ("MatMul", "Gemm")]
    assert ops.count("MatMulInteger") == len(encoder_products) > 0
    # Every other product (attention scores, the head's layers, its Gemms as MatMul + Add) stays float.
    assert ops.count("MatMul") + ops.count("Gemm") == len(float_products) - len(encoder_products)


def test_predict_onnx_matches_pytorch_and_refuses_what_it_cannot_do(onnx_model, held_out, learned_fold, tmp_path):
    clips = held_out[:2]
    onnx_lines = run("-m", "qieemo_sb.cli", "predict", onnx_model, *clips, "--onnx", "--json", cwd=ROOT).stdout
    torch_lines = run("-m", "qieemo_sb.cli", "predict", onnx_model, *clips, "--json", cwd=ROOT).stdout
    for have, want in zip(onnx_lines.splitlines(), torch_lines.splitlines()):
        have, want = json.loads(have), json.loads(want)
        assert have["label"] == want["label"]
        for label, p in want["probabilities"].items():
            assert have["probabilities"][label] == pytest.approx(p, abs=1e-3)
    # --precision int8 without --onnx: PyTorch's int8 products.
    int8_line = json.loads(run("-m", "qieemo_sb.cli", "predict", onnx_model, clips[0], "--precision", "int8",
                               "--json", cwd=ROOT).stdout)
    assert int8_line["label"] in int8_line["probabilities"]
    assert sum(int8_line["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    for options, message in ((["--onnx", "--precision", "bf16"], "--precision bf16 runs in PyTorch"),
                             (["--onnx", "--timeline"], "--timeline runs in PyTorch")):
        result = run("-m", "qieemo_sb.cli", "predict", onnx_model, clips[0], *options, cwd=ROOT, check=False)
        assert result.returncode == 2 and message in result.stderr
    plain = export_emotion_model(learned_fold, tmp_path / "plain")
    result = run("-m", "qieemo_sb.cli", "predict", plain, clips[0], "--onnx", cwd=ROOT, check=False)
    assert result.returncode == 2 and "model.onnx not found: export with `qieemo export --onnx`" in result.stderr


def test_export_needs_the_plain_conformer_modules(onnx_model, tmp_path):
    optimized = QieemoClassifier.from_hparams(source=str(onnx_model), run_opts={"device": "cpu"}, kernels="default")
    with pytest.raises(ValueError, match="load the classifier with kernels=None"):
        export_onnx(optimized, tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_readme_snippet_runs_without_pytorch_and_agrees(onnx_model, held_out, capsys):
    """The README's onnxruntime-only snippet (features.onnx too) gives PyTorch's labels."""
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("<!-- onnx-snippet -->\n```python\n", 1)[1].split("```", 1)[0]
    assignment = 'folder, files = "models/qieemo_fold1", ["clip.wav", "other.wav"]'
    assert assignment in snippet and "torch" not in snippet
    files = held_out[:6]
    namespace = {}
    exec(snippet.replace(assignment, f"folder, files = {str(onnx_model)!r}, {[str(f) for f in files]!r}"), namespace)
    classifier = QieemoClassifier.from_hparams(source=str(onnx_model), run_opts={"device": "cpu"})
    want = [classifier.classify_file(str(f)) for f in files]
    assert capsys.readouterr().out.strip() == str([label[0] for *_, label in want])
    np.testing.assert_allclose(namespace["log_probs"], torch.cat([out[0] for out in want]).numpy(), atol=1e-3, rtol=0)
