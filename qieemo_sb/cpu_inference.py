"""Inference-only speed-ups, applied to a trained model by one call.

:func:`optimize_for_inference` converts the encoder's and the fusion module's
layers in place into subclasses whose ``forward`` computes the same outputs
in fewer passes over memory, the way icefall converts a model at export.
Parameters, their names and the ``state_dict`` are unchanged, so a checkpoint
loads into either form; with autograd on or in training mode a converted
module runs its plain forward. The converted forms:

- take every linear product through one kernel choice (:class:`LinearKernels`):
  torch's (MKL's GEMM on x86, with column-major weights, which it reads
  faster) or oneDNN's inner product, which fuses the feed-forward's SiLU and
  residual sum and is the faster one on x86 CPUs not made by Intel; with a
  reduced ``precision``, bfloat16 products, or int8 ones in the feed-forward
  modules (torch's dynamic quantization, weights quantized once) and the
  others in bfloat16 where the CPU has kernels for it;
- add each feed-forward output to the residual inside the output product;
- run convolutions in channels-last memory (the depthwise one as a conv2d)
  and read their output in the projections without a copy;
- keep position tables and their projections, and the reordered projection
  weights, while the weights stay the same (:mod:`qieemo_sb.derived`);
- skip dropout layers and most module calls (Python time on 2 threads).

oneDNN's product is the private ``torch.ops.mkldnn._linear_pointwise`` (what
Inductor compiles ``silu(linear(x))`` to on CPU): it is used only from this
module, only where the op exists and the call fits it
(:func:`onednn_linear_applies`), torch's product otherwise.

Example
-------
>>> from qieemo_sb.backbones import load_backbone
>>> encoder = load_backbone("efficient_conformer_tiny")["encoder"].eval()
>>> feats, lengths = torch.randn(2, 120, 80), torch.tensor([1.0, 0.6])
>>> with torch.no_grad():
...     plain = encoder(feats, lengths).hidden_states[-1]
...     optimized = optimize_for_inference(encoder, kernels="default")(feats, lengths).hidden_states[-1]
>>> torch.allclose(plain, optimized, atol=1e-5), type(encoder.blocks[0]).__name__
(True, 'InferenceConformerBlock')
"""

import platform
import warnings
from typing import List, Optional

import torch
from torch import nn

from qieemo_sb.derived import derived_tensor, held_derived_tensor
from qieemo_sb.encoders.attention import RelPositionSelfAttention
from qieemo_sb.encoders.conformer import ConformerEncoder
from qieemo_sb.encoders.conformer_block import ConformerBlock, FeedForward
from qieemo_sb.encoders.convolution import ConvolutionModule
from qieemo_sb.encoders.subsampling import Conv2dSubsampling
from qieemo_sb.masking import ceil_div, lengths_if_padded, lengths_to_padding_mask, masked_avg_pool1d, zero_padding
from qieemo_sb.modules.mmf import MultiBlockFusion

#: Values of ``kernels``: "auto" (oneDNN's products on x86 CPUs not made by
#: Intel, where MKL does not run its widest kernels; torch's elsewhere),
#: "default" (torch's) and "onednn".
KERNELS = ("auto", "default", "onednn")
#: Values of ``precision``: linear products in float32; in bfloat16 with
#: float32 results; or with the conformer feed-forward products in int8
#: (:func:`quantize_weight`) and the others in bfloat16 where
#: :func:`bfloat16_is_fast`, in float32 elsewhere.
PRECISIONS = ("fp32", "bf16", "int8")
#: Largest int8 weight: 7 bits, so that a pair of uint8 activations times
#: weights sums below 2**15 in the 16-bit multiply-add of x86 CPUs without VNNI
#: (255 * 63 * 2 < 32767), while the activations keep their 8 bits.
INT8_WEIGHT_MAX = 63
#: Longest position table (frames, ``2 n - 1`` rows) kept between calls: 2 MB
#: per attention at d_model 256.
MAX_CACHED_POSITIONS = 1024
#: Shortest input (frames) whose attention runs as oneDNN products per head
#: and query block (where the linear products are oneDNN's): below it the
#: batched attention is the faster one.
ONEDNN_ATTENTION_MIN_FRAMES = 512


def _onednn_linear_op():
    """oneDNN's inner product with a fused element-wise op, or None where torch lacks it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear_op()


def cpu_vendor() -> str:
    """The CPU maker's identification (``GenuineIntel``, ``AuthenticAMD``, ...), ``""`` if unknown.

    Example
    -------
    >>> isinstance(cpu_vendor(), str)
    True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    processor = platform.processor()  # Windows: "... Family 25 ..., AuthenticAMD"
    return next((vendor for vendor in ("GenuineIntel", "AuthenticAMD", "HygonGenuine")
                 if vendor in processor), "")


def bfloat16_is_fast(device: torch.device) -> bool:
    """Whether torch multiplies bfloat16 matrices on ``device`` with dedicated kernels.

    On a CPU, torch hands bfloat16 products to oneDNN only where oneDNN has
    kernels for them (x86 with AVX-512 or AMX, ARM with BF16); elsewhere
    (x86 with AVX2 alone) it runs a reference loop several times slower than
    its float32 product. On a GPU, whether it supports bfloat16.

    Example
    -------
    >>> isinstance(bfloat16_is_fast(torch.device("cpu")), bool)
    True
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_kernels(kernels: str) -> str:
    """``"default"`` or ``"onednn"``: what ``kernels`` means on this machine.

    Example
    -------
    >>> resolve_kernels("default"), resolve_kernels("auto") in ("default", "onednn")
    ('default', True)
    """
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
    if kernels == "auto":
        prefer_onednn = (
            _ONEDNN_LINEAR is not None
            and torch.backends.mkl.is_available()
            and cpu_vendor() not in ("", "GenuineIntel")
        )
        return "onednn" if prefer_onednn else "default"
    if kernels == "onednn" and _ONEDNN_LINEAR is None:
        raise ValueError("kernels='onednn' needs a torch built with oneDNN (torch.ops.mkldnn._linear_pointwise)")
    return kernels


def onednn_linear_applies(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> bool:
    """Whether oneDNN's inner product can compute ``x @ weight.T + bias``: the op
    exists, no autograd and no autocast, float32 on the CPU, a row-major
    ``[out, in]`` weight that fits ``x`` (and the bias).

    Example
    -------
    >>> layer = nn.Linear(4, 8)
    >>> x = torch.randn(3, 4)
    >>> onednn_linear_applies(x, layer.weight, layer.bias)  # autograd on
    False
    >>> with torch.no_grad():
    ...     onednn_linear_applies(x, layer.weight) == (_ONEDNN_LINEAR is not None)
    True
    """
    return (
        _ONEDNN_LINEAR is not None
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled(x.device.type)
        and x.device.type == "cpu"
        and x.dim() >= 2
        and x.dtype == weight.dtype == torch.float32
        and weight.dim() == 2
        and weight.is_contiguous()
        and x.shape[-1] == weight.shape[1]  # else torch's product gives its clear error
        and (bias is None or (bias.dtype == torch.float32 and bias.device.type == "cpu"
                              and bias.shape == weight.shape[:1]))
    )


def onednn_product(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    addend: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``x @ weight.T + bias (+ addend)`` as one oneDNN call; the caller checked
    :func:`onednn_linear_applies`.

    Example
    -------
    >>> x, weight, addend = torch.randn(3, 4), torch.randn(5, 4), torch.randn(3, 5)
    >>> with torch.no_grad():
    ...     not onednn_linear_applies(x, weight) or torch.allclose(
    ...         onednn_product(x, weight, addend=addend), x @ weight.T + addend, atol=1e-5)
    True
    """
    if addend is None:
        return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
    return _ONEDNN_LINEAR.binary(x, addend, weight, bias, "add")


def quantize_weight(weight: torch.Tensor, bias: Optional[torch.Tensor] = None):
    """``[out, in]`` float weight -> torch's packed int8 weight for ``quantized::linear_dynamic``.

    Symmetric per output channel, in :data:`INT8_WEIGHT_MAX` steps; the bias
    stays float32. ``linear_dynamic`` quantizes the activations to uint8 per
    call (their range in that call) and returns float32.

    Example
    -------
    >>> weight, x = torch.randn(8, 16), torch.randn(3, 16)
    >>> out = torch.ops.quantized.linear_dynamic(x, quantize_weight(weight), False)
    >>> bool((out - x @ weight.T).abs().max() < 0.2 * (x @ weight.T).abs().max())
    True
    """
    weight = weight.detach().float().contiguous()
    scales = (weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / INT8_WEIGHT_MAX).double()
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.detach().float())


class LinearKernels:
    """The linear products of the converted modules: torch's, oneDNN's where it applies, bfloat16 or int8.

    Arguments
    ---------
    onednn : bool
        Take oneDNN's inner product wherever :func:`onednn_linear_applies`.
    bfloat16 : bool
        Multiply in bfloat16 (weights cast once and kept), results in float32:
        the sums, norms and attention around the products stay float32.
    int8 : bool
        Multiply in int8 (weights quantized once and kept,
        :func:`quantize_weight`; activations per call), results in float32.

    Example
    -------
    >>> layer, x = nn.Linear(4, 8), torch.randn(2, 3, 4)
    >>> with torch.no_grad():
    ...     torch.allclose(LinearKernels(onednn=False).linear_silu(x, layer), nn.functional.silu(layer(x)))
    ...     LinearKernels(onednn=False, bfloat16=True).linear(x, layer).dtype
    ...     LinearKernels(onednn=False, int8=True).linear(x, layer).dtype
    True
    torch.float32
    torch.float32
    """

    def __init__(self, onednn: bool, bfloat16: bool = False, int8: bool = False):
        if bfloat16 and int8:
            raise ValueError("LinearKernels multiplies in bfloat16 or in int8, not both")
        self.onednn, self.bfloat16, self.int8 = onednn and not (bfloat16 or int8), bfloat16, int8
        self._weights = {}  # the bfloat16 or int8 weights, kept while the float32 ones stay

    def applies(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> bool:
        """Whether ``x @ weight.T + bias`` takes oneDNN's product."""
        return self.onednn and onednn_linear_applies(x, weight, bias)

    def linear(self, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        """``layer(x)``, ``[..., in] -> [..., out]``."""
        return self.product(x, layer.weight, layer.bias)

    def product(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x @ weight.T + bias``."""
        if self.int8:
            sources = [weight] if bias is None else [weight, bias]
            packed = derived_tensor(self._weights, f"{id(weight)} {id(bias)}", sources,
                                    lambda: quantize_weight(weight, bias))
            return torch.ops.quantized.linear_dynamic(x.contiguous(), packed, False)
        if self.bfloat16:
            half = derived_tensor(self._weights, str(id(weight)), [weight],
                                  lambda: weight.to(torch.bfloat16))
            out = nn.functional.linear(x.to(torch.bfloat16), half).to(x.dtype)
            return out if bias is None else out.add_(bias)
        if self.applies(x, weight, bias):
            return onednn_product(x, weight, bias)
        return nn.functional.linear(x, weight, bias)

    def linear_silu(self, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        """``silu(layer(x))``: one oneDNN call, or the product and a SiLU in place."""
        if self.applies(x, layer.weight, layer.bias):
            return _ONEDNN_LINEAR(x, layer.weight, layer.bias, "swish", [], "")
        return nn.functional.silu(self.product(x, layer.weight, layer.bias), inplace=True)

    def residual(self, x: torch.Tensor, hidden: torch.Tensor, layer: nn.Linear, scale: float) -> torch.Tensor:
        """``x + scale * layer(hidden)`` with the sum done by the product: oneDNN's
        fused addend, or torch's GEMM accumulating onto ``x + scale * bias``."""
        weight, bias = layer.weight, layer.bias
        if self.bfloat16 or self.int8 or not hidden.dtype == x.dtype == weight.dtype:  # or autocast: the plain sum
            return torch.add(x, self.product(hidden, weight, bias), alpha=scale)
        if self.applies(hidden, weight, bias):
            return torch.add(x, onednn_product(hidden, weight, bias), alpha=scale)
        out = torch.add(x, bias, alpha=scale).contiguous()
        out.view(-1, out.shape[-1]).addmm_(hidden.reshape(-1, hidden.shape[-1]), weight.t(), alpha=scale)
        return out


class BFloat16Linear(nn.Linear):
    """``nn.Linear`` whose product runs through its ``kernels`` (bfloat16) at inference.

    What ``precision="bf16"`` makes of the linear layers outside the
    conformer's inference forms (the head, a Whisper encoder).
    """

    kernels: LinearKernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _plain(self):
            return super().forward(x)
        return self.kernels.linear(x, self)


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` without the module call."""
    return nn.functional.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _plain(module: nn.Module) -> bool:
    """Whether a converted module runs its plain forward: in training or under autograd."""
    return module.training or torch.is_grad_enabled()


def project_frames(x: torch.Tensor, projection: nn.Linear, cache: dict, kernels: LinearKernels) -> torch.Tensor:
    """``projection(x.transpose(1, 2).flatten(2))`` without copying a channels-last ``x``.

    ``x`` is ``[batch, channels, time, features]``; in channels-last memory it
    is physically ``[batch, time, features, channels]`` and flattens to
    feature-major frames as a view, so the projection weight (channel-major
    inputs) is reordered to match once and kept in ``cache``. Returns
    ``[batch, time, out]``.

    Example
    -------
    >>> projection = nn.Linear(3 * 5, 2)
    >>> x = torch.randn(1, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    >>> got = project_frames(x, projection, {}, LinearKernels(onednn=False))
    >>> torch.allclose(got, projection(x.transpose(1, 2).flatten(2)), atol=1e-6)
    True
    """
    batch, channels, time, features = x.shape
    weight = projection.weight
    if channels * features != weight.shape[1]:
        raise ValueError(
            f"frames of {channels} channels x {features} features do not fit a projection "
            f"of {weight.shape[1]} inputs"
        )

    def reorder():
        out = weight.shape[0]
        reordered = weight.reshape(out, channels, features).transpose(1, 2).reshape(out, channels * features)
        # Kept in the source's memory order (column-major for torch's products).
        return reordered if weight.is_contiguous() else reordered.t().contiguous().t()

    frames = x.permute(0, 2, 3, 1).reshape(batch, time, features * channels)  # a view if channels-last
    feature_major = derived_tensor(cache, "feature_major_weight", [weight], reorder, extra_key=(channels, features))
    return kernels.product(frames, feature_major, projection.bias)


class InferenceFeedForward(FeedForward):
    """:class:`~qieemo_sb.encoders.conformer_block.FeedForward` with fused products
    and :meth:`residual`."""

    kernels: LinearKernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _plain(self):
            return super().forward(x)
        return self.kernels.linear(self._hidden(x), self[1].ffn[3])

    def residual(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """``x + scale * self(x)``, ``[batch, time, d_model]``."""
        if _plain(self):
            return x + scale * super().forward(x)
        return self.kernels.residual(x, self._hidden(x), self[1].ffn[3], scale)

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        """``silu(expand(LayerNorm(x)))``, ``[batch, time, d_ffn]`` (Swish with beta 1 is SiLU)."""
        return self.kernels.linear_silu(_layer_norm(self[0], x), self[1].ffn[0])


class InferenceConformerBlock(ConformerBlock):
    """:class:`~qieemo_sb.encoders.conformer_block.ConformerBlock` with the residual
    sums of its feed-forward modules done in their output products."""

    def residual_stream(self, x: torch.Tensor, lengths: torch.Tensor, pos_embs: torch.Tensor):
        if _plain(self):
            return super().residual_stream(x, lengths, pos_embs)
        mask_lengths = lengths_if_padded(lengths, x.shape[1])
        pad_mask = None if mask_lengths is None else lengths_to_padding_mask(lengths, x.shape[1])
        x = self.ffn1.residual(x, 0.5)
        x = x + self.mha(_layer_norm(self.norm_mha, x), pos_embs, key_padding_mask=pad_mask)
        conv_out = self.conv(x, mask_lengths)
        if self.stride > 1:
            x = masked_avg_pool1d(x, mask_lengths, self.stride)
            lengths = ceil_div(lengths, self.stride)
        return self.ffn2.residual(x + conv_out, 0.5), lengths


class InferenceSelfAttention(RelPositionSelfAttention):
    """:class:`~qieemo_sb.encoders.attention.RelPositionSelfAttention` with kept
    position projections and, on long inputs with oneDNN's products, the
    attention core as products per utterance, query block and head."""

    kernels: LinearKernels

    def forward(self, x: torch.Tensor, pos_embs: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None):
        if _plain(self):
            return super().forward(x, pos_embs, key_padding_mask)
        time = x.shape[1]
        query_u, query_v, key, value = self._split_heads(self.kernels.product(x, self.in_proj_weight))
        positions = self._projected_positions(pos_embs, time)
        if time >= ONEDNN_ATTENTION_MIN_FRAMES and self.kernels.applies(query_v, positions[0]):
            attended = self._attend_by_head(query_u, query_v, key, value, positions, key_padding_mask)
        else:
            attended = self._attend(query_u, query_v, key, value, positions, key_padding_mask)
        return self.kernels.linear(attended, self.out_proj)

    def _projected_positions(self, pos_embs: torch.Tensor, time: int) -> torch.Tensor:
        """The projection of the whole table, kept while the table and ``linear_pos`` stay."""
        centre = self._position_centre(pos_embs, time)
        if (pos_embs.shape[1] + 1) // 2 > MAX_CACHED_POSITIONS:
            return self._project_positions(pos_embs[:, centre])
        whole = derived_tensor(
            self._derived, "positions", [self.linear_pos.weight, pos_embs], lambda: self._project_positions(pos_embs)
        )
        return whole[:, centre]

    def _attend_by_head(
        self,
        query_u: torch.Tensor,
        query_v: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        positions: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """:meth:`_attend` as oneDNN products: for each utterance, query block and
        head, the relative-shifted band of position scores is the addend of the
        content product, then a softmax and the value product written into the
        head's columns. ``[batch, time, embed_dim]``."""
        batch, heads, time, head_dim = query_u.shape
        query_u = query_u * self.scale
        key = key.contiguous()
        value_columns = value.transpose(2, 3).contiguous()  # [batch, heads, head_dim, time]
        out = query_u.new_empty(batch, time, heads * head_dim)
        for utterance in range(batch):
            padding = None
            if key_padding_mask is not None and key_padding_mask[utterance].any():
                padding = key_padding_mask[utterance]
            for start in range(0, time, self.query_block):
                end = min(time, start + self.query_block)
                for head in range(heads):
                    band = positions[head, time - end : 2 * time - 1 - start]
                    position_scores = self._relative_shift(
                        onednn_product(query_v[utterance, head, start:end], band)[None, None]
                    )[0, 0]
                    if padding is not None:
                        position_scores = position_scores.masked_fill(padding, float("-inf"))
                    scores = onednn_product(
                        query_u[utterance, head, start:end], key[utterance, head], addend=position_scores
                    )
                    out[utterance, start:end, head * head_dim : (head + 1) * head_dim] = onednn_product(
                        scores.softmax(-1), value_columns[utterance, head]
                    )
        return out


class InferenceConvolution(ConvolutionModule):
    """:class:`~qieemo_sb.encoders.convolution.ConvolutionModule` with the depthwise
    convolution as a channels-last conv2d: ``[batch, time, d_model]`` already is
    that layout (no transpose copy), and oneDNN's channels-last depthwise kernel
    is several times faster than its Conv1d path."""

    kernels: LinearKernels

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        if _plain(self):
            return super().forward(x, lengths)
        out = nn.functional.glu(self.kernels.linear(_layer_norm(self.layer_norm, x), self.pointwise_in), dim=-1)
        out = zero_padding(out, lengths)
        depthwise = self.depthwise
        out = nn.functional.conv2d(
            out.transpose(1, 2).unsqueeze(2),
            depthwise.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last),
            depthwise.bias,
            stride=(1, depthwise.stride[0]),
            padding=(0, depthwise.padding[0]),
            groups=depthwise.groups,
        )
        norm, _, projection, _ = self.after_conv
        out = nn.functional.silu(_layer_norm(norm, out.squeeze(2).transpose(1, 2)), inplace=True)
        return self.kernels.linear(out, projection)


class InferenceSubsampling(Conv2dSubsampling):
    """:class:`~qieemo_sb.encoders.subsampling.Conv2dSubsampling` on channels-last
    convolutions whose output (the encoder's largest activation) the projection
    reads with no copy (:func:`project_frames`)."""

    kernels: LinearKernels

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return project_frames(x, self.projection, self._derived, self.kernels)


class InferenceFusion(MultiBlockFusion):
    """:class:`~qieemo_sb.modules.mmf.MultiBlockFusion` on channels-last
    convolutions: the blocks stacked in that layout, the projection reading
    the last convolution's output with no copy."""

    kernels: LinearKernels

    def stack_blocks(self, weighted: List[torch.Tensor]) -> torch.Tensor:
        return torch.stack(weighted, dim=-1).permute(0, 3, 1, 2)  # physically [B, T, D, K]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return project_frames(x, self.projection, self._derived, self.kernels)


class InferenceConformerEncoder(ConformerEncoder):
    """:class:`~qieemo_sb.encoders.conformer.ConformerEncoder` passing one position
    table for every length, so each attention projects it once."""

    def _position_embeddings(self, time: int, dtype: torch.dtype) -> torch.Tensor:
        """``[1, 2 * n - 1, d_model]``, ``n`` the longest length seen so far rounded up
        to a power of two (the same tensor until a longer input needs more);
        ``n = time`` under autograd or beyond :data:`MAX_CACHED_POSITIONS`."""
        if torch.is_grad_enabled() or time > MAX_CACHED_POSITIONS:
            return super()._position_embeddings(time, dtype)
        held = held_derived_tensor(self._derived, "positions")
        table = 0 if held is None else (held.shape[1] + 1) // 2
        if table < time:
            table = max(64, 1 << (time - 1).bit_length())
        return derived_tensor(
            self._derived, "positions", [self.positional_encoding.inv_freq],
            lambda: self.positional_encoding.make_pe(table).to(dtype), extra_key=(table, dtype),
        )


#: Each plain class (exact type) and the inference form it is converted to.
INFERENCE_FORMS = {
    FeedForward: InferenceFeedForward,
    ConformerBlock: InferenceConformerBlock,
    RelPositionSelfAttention: InferenceSelfAttention,
    ConvolutionModule: InferenceConvolution,
    Conv2dSubsampling: InferenceSubsampling,
    MultiBlockFusion: InferenceFusion,
    ConformerEncoder: InferenceConformerEncoder,
}


def optimize_for_inference(model: nn.Module, kernels: str = "auto", precision: str = "fp32") -> nn.Module:
    """Converts ``model``'s layers in place to their inference forms; returns ``model``.

    Each module whose exact type is a key of :data:`INFERENCE_FORMS` becomes
    that subclass (same parameters, names and ``state_dict``); convolutions
    of the front-end and of MMF get channels-last weights; linear weights are
    stored column-major for torch's products, row-major for oneDNN's (values
    unchanged). With ``precision="bf16"`` every linear product multiplies in
    bfloat16 (other ``nn.Linear`` layers become :class:`BFloat16Linear`), with
    a warning where :func:`bfloat16_is_fast` is false (it is then slower than
    ``"fp32"``). ``"int8"`` multiplies the conformer feed-forward modules
    (most of the encoder's arithmetic) in int8, so it needs a model with such
    modules, and the other products in bfloat16 where that is fast, in float32
    elsewhere. Calling it again with other ``kernels`` or ``precision``
    switches them.

    Arguments
    ---------
    model : torch.nn.Module
        A trained model (an encoder, a head, or a module holding them).
    kernels : str
        One of :data:`KERNELS` (:func:`resolve_kernels`).
    precision : str
        One of :data:`PRECISIONS`.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and not any(isinstance(module, FeedForward) for module in model.modules()):
        raise ValueError("precision='int8' quantizes the conformer feed-forward modules, and this model has none "
                         "(a Whisper encoder, say): use 'bf16' on a CPU with bfloat16 kernels, 'fp32' elsewhere")
    devices = {p.device for p in model.parameters()}
    if precision == "int8" and any(device.type != "cpu" for device in devices):
        raise ValueError("precision='int8' runs on the CPU (torch's dynamic int8 products): on a GPU use 'bf16'")
    fast_bfloat16 = all(bfloat16_is_fast(device) for device in devices)
    if precision == "bf16" and not fast_bfloat16:
        warnings.warn(f"precision='bf16' on {', '.join(sorted(map(str, devices)))}: torch has no bfloat16 kernels "
                      "here (on a CPU they need AVX-512, AMX or ARM's BF16), so its bfloat16 products are slower "
                      "than float32 ones: 'int8' or 'fp32' is faster", stacklevel=2)
    bfloat16 = precision == "bf16" or (precision == "int8" and fast_bfloat16)
    linear_kernels = LinearKernels(onednn=resolve_kernels(kernels) == "onednn", bfloat16=bfloat16)
    feed_forward_kernels = LinearKernels(onednn=False, int8=True) if precision == "int8" else linear_kernels
    onednn = linear_kernels.onednn  # bfloat16 products are torch's
    for module in model.modules():
        inference_form = INFERENCE_FORMS.get(type(module))
        if inference_form is not None:
            module.__class__ = inference_form
            module._derived = {}
        if isinstance(module, tuple(INFERENCE_FORMS.values())):
            module.kernels = feed_forward_kernels if isinstance(module, InferenceFeedForward) else linear_kernels
            module._derived.clear()
        if isinstance(module, (InferenceSubsampling, InferenceFusion)):
            module.convs.to(memory_format=torch.channels_last)
        if type(module) in (nn.Linear, BFloat16Linear):
            module.__class__ = BFloat16Linear if bfloat16 else nn.Linear
            module.__dict__.pop("kernels", None)
            if bfloat16:
                module.kernels = linear_kernels
    for weight in _linear_weights(model):
        layout = weight.data.contiguous() if onednn else weight.data.t().contiguous().t()
        weight.data = layout  # same values, and checkpoint; only the memory order changes
    return model


def _linear_weights(model: nn.Module) -> List[torch.Tensor]:
    """The 2-D weights ``model``'s products multiply by: ``nn.Linear`` and attention input projections."""
    weights = []
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            weights.append(layer.weight)
        elif isinstance(layer, RelPositionSelfAttention):
            weights.append(layer.in_proj_weight)
    return weights
