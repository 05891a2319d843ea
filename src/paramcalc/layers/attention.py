"""Attention: multi-head attention (Keras and torch conventions) and torch's Transformer layers.

Multi-head attention projects query (…, Tq, dq), key (…, Tk, dk) and value (…, Tk, dv) into
``num_heads`` heads of ``key_dim`` (query, key) and ``value_dim`` (value) units, attends, and projects
the heads back to ``output_dim`` (the query's width unless given). Keras' per-head kernels and torch's
packed in_proj_weight hold the same numbers of weights; torch adds bias_k / bias_v with add_bias_kv.

FLOPs: the four projections (2 per multiply-add, plus biases), scores Q·K (2·Tq·Tk·key_dim per head),
softmax (5 per score), scores·V (2·Tq·Tk·value_dim per head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..dims import Dim, exact_div
from ..errors import LayerConfigError, shown
from ..registry import register_layer
from ..spec import TensorSpec
from .base import Context, Inferred, Layer, Weight
from .elementwise import ACTIVATION_FLOPS, normalize_activation

SOFTMAX_FLOPS = ACTIVATION_FLOPS["softmax"]


def attention_cost(batch: Dim, tq: Dim, tk: Dim, dq: Dim, dk: Dim, dv: Dim, heads: int, key_dim: Dim,
                   value_dim: Dim, out_dim: Dim, use_bias: bool) -> tuple[Dim, Dim]:
    """(MACs, FLOPs) of one multi-head attention call."""
    proj = tq * dq * heads * key_dim + tk * dk * heads * key_dim + tk * dv * heads * value_dim
    out = tq * heads * value_dim * out_dim
    core = heads * tq * tk * (key_dim + value_dim)
    macs = batch * (proj + out + core)
    biases = batch * (tq * heads * key_dim + tk * heads * (key_dim + value_dim) + tq * out_dim) if use_bias else 0
    softmax = batch * heads * tq * tk * SOFTMAX_FLOPS
    return macs, 2 * macs + biases + softmax


def attention_weights(prefix: str, dq: Dim, dk: Dim, dv: Dim, heads: int, key_dim: Dim, value_dim: Dim,
                      out_dim: Dim, use_bias: bool, add_bias_kv: bool = False) -> list[Weight]:
    weights = [Weight(f"{prefix}query_kernel", (dq, heads, key_dim)),
               Weight(f"{prefix}key_kernel", (dk, heads, key_dim)),
               Weight(f"{prefix}value_kernel", (dv, heads, value_dim)),
               Weight(f"{prefix}output_kernel", (heads, value_dim, out_dim))]
    if use_bias:
        weights += [Weight(f"{prefix}query_bias", (heads, key_dim)), Weight(f"{prefix}key_bias", (heads, key_dim)),
                    Weight(f"{prefix}value_bias", (heads, value_dim)), Weight(f"{prefix}output_bias", (out_dim,))]
    if add_bias_kv:
        weights += [Weight(f"{prefix}bias_k", (1, 1, heads * key_dim)),
                    Weight(f"{prefix}bias_v", (1, 1, heads * value_dim))]
    return weights


@register_layer("attention")
@dataclass(frozen=True)
class MultiHeadAttention(Layer):
    """Keras MultiHeadAttention(num_heads, key_dim, value_dim, output_shape) called on (query, value[,
    key]); torch nn.MultiheadAttention(embed_dim, num_heads, kdim, vdim) called on (query, key, value)
    with ``layout="torch"`` (key_dim = embed_dim / num_heads) and ``batch_first``.

    Outputs: the attention output, then the attention scores (Keras: (B, heads, Tq, Tk); torch:
    averaged over heads, (N, L, S)).
    """

    num_heads: int = 1
    key_dim: Dim = 1
    value_dim: Dim | None = None
    output_dim: Dim | None = None
    use_bias: bool = True
    layout: str = "keras"
    add_bias_kv: bool = False
    batch_first: bool = True
    embed_dim: Dim | None = None  # torch: the declared query width
    dropout: float = 0.0  # on the attention probabilities while training (time, not shapes)

    def __post_init__(self) -> None:
        if type(self.num_heads) is not int or self.num_heads < 1:
            raise LayerConfigError(f"num_heads must be a positive integer. Received: {shown(self.num_heads)}",
                                   layer=self.name, value=self.num_heads)
        self._set("key_dim", self._size_arg("key_dim", self.key_dim))
        if self.layout not in ("keras", "torch"):
            raise LayerConfigError(f"layout must be 'keras' or 'torch'. Received: {shown(self.layout)}",
                                   layer=self.name, value=self.layout)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        if self.layout == "torch":
            if len(inputs) != 3:
                raise ctx.shape_error(f"{self.display_type} takes (query, key, value), received {len(inputs)} inputs")
            query, key, value = inputs
        else:
            if len(inputs) not in (2, 3):
                raise ctx.shape_error(f"{self.display_type} takes (query, value[, key]), received {len(inputs)} inputs")
            query, value = inputs[0], inputs[1]
            key = inputs[2] if len(inputs) == 3 else value
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.rank != 3:
                raise ctx.shape_error(f"{self.display_type} expects 3-D {name} (batch, length, features), "
                                      f"received {ctx.format_shape(t.shape)}")
        if self.layout == "torch" and self.embed_dim is not None:
            ctx.require_equal(query.shape[-1], self.embed_dim,
                              f"{self.display_type} expects query width {self.embed_dim}, received {query.shape[-1]}")
        b_ax, t_ax = (0, 1) if self.batch_first else (1, 0)
        batch, tq, tk = query.shape[b_ax], query.shape[t_ax], key.shape[t_ax]
        ctx.require_equal(value.shape[t_ax], tk, f"key length {tk} and value length {value.shape[t_ax]} differ")
        dq, dk, dv = query.shape[-1], key.shape[-1], value.shape[-1]
        value_dim = self.key_dim if self.value_dim is None else self.value_dim
        out_dim = dq if self.output_dim is None else self.output_dim
        weights = attention_weights("", dq, dk, dv, self.num_heads, self.key_dim, value_dim, out_dim,
                                    self.use_bias, self.add_bias_kv)
        kv_len = tk + 1 if self.add_bias_kv else tk
        macs, flops = attention_cost(batch, tq, kv_len, dq, dk, dv, self.num_heads, self.key_dim, value_dim,
                                     out_dim, self.use_bias)
        out = query.with_shape(query.shape[:-1] + (out_dim,))
        if self.layout == "torch":
            scores = query.with_shape((batch, tq, kv_len))
        else:
            scores = query.with_shape((batch, self.num_heads, tq, kv_len))
        return ctx.result(out, weights=weights, macs=macs, flops=flops, extra_outputs=[scores])

    @property
    def output_structure(self):
        return (0, 1) if self.layout == "torch" else None


def _check_heads(ctx_owner: str, d_model: Dim, heads: int, layer: str | None) -> Dim:
    head_dim = exact_div(d_model, heads)
    if head_dim is None:
        raise LayerConfigError(f"{ctx_owner}: embed_dim ({d_model}) must be divisible by num_heads ({heads})",
                               layer=layer, value=heads)
    return head_dim


@register_layer("transformer")
@dataclass(frozen=True)
class Transformer(Layer):
    """torch nn.TransformerEncoderLayer / DecoderLayer, or a stack of ``num_layers`` of them
    (nn.TransformerEncoder / Decoder) with an optional final LayerNorm.

    Encoder layer: self-attention, feed-forward (d_model -> dim_feedforward -> d_model), two LayerNorms.
    A decoder layer adds cross-attention over ``memory`` (its second input) and a third LayerNorm.
    """

    d_model: Dim = 512
    nhead: int = 8
    dim_feedforward: Dim = 2048
    decoder: bool = False
    num_layers: int = 1
    final_norm: tuple = ()  # the final LayerNorm's weights, e.g. ("weight", "bias"); () for none
    bias: bool = True
    activation: str = "relu"
    batch_first: bool = False
    dropout: float = 0.1  # torch's default; on the probabilities, each block's output and the FF hidden

    def __post_init__(self) -> None:
        _check_heads(self.display_type, self.d_model, self.nhead, self.name)
        self._set("activation", normalize_activation(self.activation, self.name))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        expected = 2 if self.decoder else 1
        if len(inputs) != expected:
            raise ctx.shape_error(f"{self.display_type} takes {expected} input(s), received {len(inputs)}")
        x = inputs[0]
        if x.rank != 3:
            raise ctx.shape_error(f"{self.display_type} expects a 3-D input, received {ctx.format_shape(x.shape)}")
        e, f, h = self.d_model, self.dim_feedforward, self.nhead
        ctx.require_equal(x.shape[-1], e, f"{self.display_type} expects d_model {e} features, received {x.shape[-1]}")
        head_dim = exact_div(e, h)
        b_ax, t_ax = (0, 1) if self.batch_first else (1, 0)
        batch, steps = x.shape[b_ax], x.shape[t_ax]
        memory_steps = inputs[1].shape[t_ax] if self.decoder else steps
        norm = (lambda p: [Weight(f"{p}.weight", (e,))] + ([Weight(f"{p}.bias", (e,))] if self.bias else []))
        weights, macs, flops = [], 0, 0
        for layer in range(self.num_layers):
            p = f"layers.{layer}." if self.num_layers > 1 or self.final_norm else ""
            attentions = [("self_attn.", steps)] + ([("multihead_attn.", memory_steps)] if self.decoder else [])
            for prefix, kv_steps in attentions:
                weights += attention_weights(p + prefix, e, e, e, h, head_dim, head_dim, e, self.bias)
                m, fl = attention_cost(batch, steps, kv_steps, e, e, e, h, head_dim, head_dim, e, self.bias)
                macs, flops = macs + m, flops + fl
            weights += [Weight(p + "linear1.weight", (f, e)), Weight(p + "linear2.weight", (e, f))]
            if self.bias:
                weights += [Weight(p + "linear1.bias", (f,)), Weight(p + "linear2.bias", (e,))]
            ff_macs = batch * steps * 2 * e * f
            tokens = batch * steps
            ff_flops = 2 * ff_macs + (tokens * (f + e) if self.bias else 0) + ACTIVATION_FLOPS[self.activation] * tokens * f
            norms = 3 if self.decoder else 2
            for k in range(1, norms + 1):
                weights += norm(p + f"norm{k}")
            # residual adds, norms (8 per element), dropouts (1 per element, one per sub-block + FF)
            elementwise = tokens * e * (norms * (1 + 8 + 1)) + tokens * f
            macs, flops = macs + ff_macs, flops + ff_flops + elementwise
        if self.final_norm:
            weights += [Weight(f"norm.{w}", (e,)) for w in self.final_norm]
            flops = flops + 8 * batch * steps * e
        return ctx.result(x, weights=weights, macs=macs, flops=flops)
