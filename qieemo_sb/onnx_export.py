"""ONNX export of a Qieemo classifier, and a runner that needs only onnxruntime and NumPy.

Two graphs, batch and time axes dynamic::

    features.onnx   wav        float32 [1, samples]        one clip at the model's rate
                    -> feats   float32 [1, frames, n_mels]  the model's fbank, not normalized
    model.onnx      feats      float32 [batch, frames, n_mels]   zero-padded
                    lengths    int64   [batch]                   valid frames of each row
                    -> log_probs float32 [batch, n_classes], embedding float32 [batch, dim]

``model.onnx`` holds the global normalizer, the encoder and the head (MMF,
CMA, classifier) and ignores padded frames. ``model.int8.onnx`` is the same
graph with int8 weights in the encoder's linear layers (onnxruntime's
dynamic quantization, per output channel: :func:`quantize_products`).
``onnx.json`` holds the labels and the sample rate.

Example
-------
>>> import torch
>>> from qieemo_sb.hparams_files import load_hparams
>>> from qieemo_sb.inference import QieemoClassifier
>>> two_blocks = ("{backbone: !include:qieemo_sb:hparams/backbones/efficient_conformer.yaml {d_model: 32, d_ffn: 64,"
...               " num_blocks: 2, block_strides: [1, 2], frontend_channels: 8}, mmf_blocks: [1, 2],"
...               " pretrained_asr: unused, data_folder: unused}")  # two small blocks: a quick export
>>> hparams = load_hparams("recipes/IEMOCAP/Qieemo/hparams/qieemo_tiny.yaml", two_blocks)  # from the checkout
>>> with torch.no_grad():  # random weights; the normalizer needs some statistics
...     _ = hparams["normalize"].train()(hparams["compute_features"](torch.randn(1, 16000)), torch.ones(1))
>>> classifier = QieemoClassifier.from_training_hparams(hparams, run_opts={"device": "cpu"}, kernels=None)
>>> import tempfile; folder = tempfile.mkdtemp()
>>> path = export_onnx(classifier, folder)
>>> runner = OnnxClassifier(folder)
>>> log_probs, embedding = runner.run_features(*runner.features([np.zeros(16000), np.ones(8000)]))
>>> log_probs.shape, embedding.shape
((2, 4), (2, 64))
"""

import ast
import copy
import importlib.util
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from speechbrain.lobes.features import Fbank
from torch import nn

from qieemo_sb.encoders.attention import RelPositionSelfAttention
from qieemo_sb.encoders.conformer import ConformerEncoder
from qieemo_sb.audio import load_audio

ONNX_FILE, INT8_FILE, FEATURES_FILE, SPEC_FILE = "model.onnx", "model.int8.onnx", "features.onnx", "onnx.json"
#: Largest differences from PyTorch accepted by the export's own check:
#: log-probabilities and embedding of model.onnx, log-mel features of features.onnx.
TOLERANCE, FEATURE_TOLERANCE = 1e-4, 0.05
OPSET = 18


def relative_shift(scores: torch.Tensor) -> torch.Tensor:
    """``[B, H, T, 2T-1]`` -> ``[B, H, T, T]``: entry ``(i, j)`` is ``(i, T-1-i+j)``.

    Transformer-XL's shift by one padded column and a reshape: plain tensor
    ops, where the training module uses a strided view ONNX cannot express.

    Example
    -------
    >>> scores = torch.arange(15.0).view(1, 1, 3, 5)
    >>> relative_shift(scores)[0, 0]
    tensor([[ 2.,  3.,  4.],
            [ 6.,  7.,  8.],
            [10., 11., 12.]])
    """
    batch, heads, rows, width = scores.shape
    shifted = nn.functional.pad(scores, (1, 0)).view(batch, heads, width + 1, rows)
    return shifted[:, :, 1:].reshape(batch, heads, rows, width)[..., :rows]


class ExportSelfAttention(RelPositionSelfAttention):
    """:class:`RelPositionSelfAttention` for tracing: all query rows at once, no strided view.

    Same weights and outputs; swapped in by :func:`export_onnx` on a copy.
    """

    def _attend(self, query_u, query_v, key, value, positions, key_padding_mask):
        batch, _, time, _ = query_u.shape
        position_scores = relative_shift(torch.matmul(query_v, positions.transpose(1, 2)))
        if key_padding_mask is not None:
            position_scores = position_scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        attended = nn.functional.scaled_dot_product_attention(
            query_u, key, value, attn_mask=position_scores, scale=self.scale
        )
        return attended.transpose(1, 2).reshape(batch, time, -1)


class ClassifierGraph(nn.Module):
    """Normalizer, encoder and head as one module: ``(feats, lengths) -> (log_probs, embedding)``.

    Arguments
    ---------
    normalize, encoder, head : nn.Module
        A classifier's modules (in evaluation mode).
    """

    def __init__(self, normalize: nn.Module, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.normalize, self.encoder, self.head = normalize, encoder, head

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[batch, frames, n_mels]`` features, ``[batch]`` frame counts -> log-probabilities, embedding."""
        feat_lens = lengths.to(torch.float32) / feats.shape[1]
        out = self.head(self.encoder(self.normalize(feats, feat_lens), feat_lens))
        return torch.log_softmax(out.logits, dim=-1), out.embedding


def _graph_of(classifier) -> ClassifierGraph:
    mods = classifier.mods
    if not isinstance(mods.encoder, ConformerEncoder):
        raise ValueError(f"ONNX export supports the conformer backbones, not {type(mods.encoder).__name__}")
    if type(mods.encoder) is not ConformerEncoder:
        raise ValueError("ONNX export needs the plain modules: load the classifier with kernels=None")
    graph = copy.deepcopy(ClassifierGraph(mods.normalize, mods.encoder, mods.head)).float().eval()
    for module in graph.modules():
        if type(module) is RelPositionSelfAttention:
            module.__class__ = ExportSelfAttention
    return graph


def _test_clips(seconds: Sequence[float], rate: int) -> List[np.ndarray]:
    generator = torch.Generator().manual_seed(0)
    return [(0.1 * torch.randn(int(s * rate), generator=generator)).numpy() for s in seconds]


def pad_features(feats: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """``[frames_i, n_mels]`` arrays -> zero-padded ``[batch, frames, n_mels]`` and int64 ``[batch]`` frames."""
    lengths = np.array([f.shape[0] for f in feats], dtype=np.int64)
    batch = np.zeros((len(feats), lengths.max(), feats[0].shape[1]), dtype=np.float32)
    for row, f in enumerate(feats):
        batch[row, : f.shape[0]] = f
    return batch, lengths


def _export(module: nn.Module, example: tuple, path: Path, inputs: List[str], outputs: List[str],
            dynamic_shapes: Dict) -> None:
    with torch.no_grad():
        program = torch.onnx.export(module, example, dynamo=True, opset_version=OPSET, external_data=False,
                                    verbose=False, input_names=inputs, output_names=outputs,
                                    dynamic_shapes=dynamic_shapes)
    program.save(str(path))


def _check(path: Path, feeds: Dict[str, np.ndarray], want: Sequence[torch.Tensor], tolerance: float) -> None:
    import onnxruntime

    have = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    error = max(float(np.abs(w.numpy() - h).max()) for w, h in zip(want, have))
    if error > tolerance:
        raise RuntimeError(f"{path}: onnxruntime differs from PyTorch by {error:.2e} (> {tolerance})")


def export_onnx(classifier, folder: Union[str, Path], *, int8: bool = False) -> Path:
    """Writes ``features.onnx``, ``model.onnx`` and ``onnx.json`` to ``folder``, each graph checked by onnxruntime.

    ``model.onnx`` must give PyTorch's log-probabilities and embedding within
    :data:`TOLERANCE` on a padded batch; ``features.onnx`` its fbank within
    :data:`FEATURE_TOLERANCE` (log-mel units: FFTs differ in rounding).

    Arguments
    ---------
    classifier : QieemoClassifier
        A loaded float32 classifier with its plain modules (``kernels=None``)
        and SpeechBrain ``Fbank`` features.
    folder : str or Path
        An existing folder.
    int8 : bool
        Also write ``model.int8.onnx`` (:func:`quantize_products`).

    Returns
    -------
    Path
        ``folder / "model.onnx"``.
    """
    for package in ("onnxscript", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise ImportError(f"ONNX export needs {package}: pip install 'qieemo-sb[onnx]'")
    folder = Path(folder)
    graph = _graph_of(classifier)
    compute_features = classifier.mods.compute_features
    if not isinstance(compute_features, Fbank):
        raise ValueError(f"ONNX export needs SpeechBrain Fbank features, not {type(compute_features).__name__}")
    rate = int(classifier.hparams.sample_rate)
    clip = torch.from_numpy(_test_clips([3.0], rate)[0]).unsqueeze(0)
    samples = torch.export.Dim("samples", min=compute_features.compute_STFT.n_fft, max=2**28)
    # Fbank itself is the features graph: [1, samples] -> [1, frames, n_mels].
    _export(compute_features, (clip,), folder / FEATURES_FILE, ["wav"], ["feats"], {"wav": {1: samples}})

    def fbank(wavs):
        with torch.no_grad():
            return pad_features([compute_features(torch.from_numpy(w).unsqueeze(0))[0].numpy() for w in wavs])

    example = tuple(map(torch.from_numpy, fbank(_test_clips([3.0, 1.7], rate))))
    batch, frames = torch.export.Dim("batch", min=1), torch.export.Dim("frames", min=24, max=2**20)
    _export(graph, example, folder / ONNX_FILE, ["feats", "lengths"], ["log_probs", "embedding"],
            {"feats": {0: batch, 1: frames}, "lengths": {0: batch}})

    check_clip = _test_clips([2.3], rate)[0]
    with torch.no_grad():
        _check(folder / FEATURES_FILE, {"wav": check_clip[None]}, [compute_features(torch.from_numpy(check_clip[None]))],
               FEATURE_TOLERANCE)
        feats, lengths = fbank(_test_clips([2.3, 5.1, 0.6], rate))
        _check(folder / ONNX_FILE, {"feats": feats, "lengths": lengths},
               graph(torch.from_numpy(feats), torch.from_numpy(lengths)), TOLERANCE)
    spec = {"labels": classifier.labels, "sample_rate": rate, "min_duration": float(classifier.hparams.min_duration)}
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
    if int8:
        quantize_products(folder / ONNX_FILE, folder / INT8_FILE)
    return folder / ONNX_FILE


def module_scopes(node) -> List[str]:
    """The module names a node of an exported graph was traced in (``["", "encoder", "encoder.blocks.0", ...]``)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            return ast.literal_eval(prop.value)
    raise ValueError(f"node {node.name} has no pkg.torch.onnx.name_scopes: not a graph written by export_onnx")


def quantize_products(source: Union[str, Path], target: Union[str, Path]) -> None:
    """Writes ``source`` with int8 weights in the encoder's matrix products to ``target``.

    onnxruntime's dynamic quantization (weights per output channel in a 7-bit
    range, which every x86 kernel multiplies without saturating; activations
    quantized per call). The convolutions stay float32 (onnxruntime's integer
    convolution is slower than its float one and less accurate) and so does
    the head (MMF, CMA, classifier: little arithmetic, and its products
    decide between close classes).

    Arguments
    ---------
    source : str or Path
        A ``model.onnx`` written by :func:`export_onnx` (its nodes name the
        modules they come from).
    target : str or Path
        The int8 graph to write.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    head = []
    for node in onnx.load(str(source), load_external_data=False).graph.node:
        if node.op_type in ("MatMul", "Gemm") and "head" in module_scopes(node):
            # The quantizer first turns a Gemm into a MatMul of this name and an Add.
            head += [node.name, f"{node.name}_MatMul"] if node.op_type == "Gemm" else [node.name]
    quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul"], nodes_to_exclude=head,
                     weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)


class OnnxClassifier:
    """Runs an exported folder's graphs with onnxruntime (no PyTorch model).

    Arguments
    ---------
    folder : str or Path
        A folder written by ``qieemo export --onnx``.
    int8 : bool
        Run ``model.int8.onnx``.
    threads : int
        onnxruntime's intra-op threads (0: its default).
    """

    def __init__(self, folder: Union[str, Path], *, int8: bool = False, threads: int = 0):
        import onnxruntime

        folder = Path(folder)
        model = folder / (INT8_FILE if int8 else ONNX_FILE)
        if not model.is_file():
            raise FileNotFoundError(f"{model} not found: export with `qieemo export --onnx`")
        self.spec = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session, self.feature_session = (
            onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for path in (model, folder / FEATURES_FILE)
        )

    @property
    def labels(self) -> List[str]:
        """The classes in output order."""
        return list(self.spec["labels"])

    def features(self, wavs: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """1-d waveforms at the model's rate -> padded ``feats`` and ``lengths`` for the model graph."""
        return pad_features([self.feature_session.run(None, {"wav": np.asarray(w, np.float32)[None]})[0][0]
                             for w in wavs])

    def run_features(self, feats: np.ndarray, lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The model graph on a padded batch: ``log_probs [batch, n_classes]``, ``embedding [batch, dim]``."""
        log_probs, embedding = self.session.run(None, {"feats": feats, "lengths": lengths})
        return log_probs, embedding

    def classify_file(self, path: Union[str, Path]) -> Tuple[np.ndarray, str]:
        """``[n_classes]`` log-probabilities of one audio file (any rate, channels) and its label."""
        wav = load_audio(path, sample_rate=self.spec["sample_rate"], min_duration=self.spec["min_duration"])
        log_probs, _ = self.run_features(*self.features([wav.numpy()]))
        return log_probs[0], self.labels[int(log_probs[0].argmax())]
