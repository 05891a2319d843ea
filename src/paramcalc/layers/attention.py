"""Attention: multi-head attention (Keras and torch conventions) and torch's Transformer layers.

Multi-head attention projects query (…, Tq, dq), key (…, Tk, dk) and value (…, Tk, dv) into
``num_heads`` heads of ``key_dim`` (query, key) and ``value_dim`` (value) units, attends, and projects
the heads back to ``output_dim`` (the query's width unless given). Keras' per-head kernels and torch's
packed in_proj_weight hold the same numbers of weights; torch adds bias_k / bias_v with add_bias_kv.

FLOPs: the four projections (2 per multiply-add, plus biases), scores Q·K (2·Tq·Tk·key_dim per head),
softmax (5 per score), scores·V (2·Tq·Tk·value_dim per head).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from paramcalc.core.dims import Dim, exact_div
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer, Weight
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import (
    AttentionCore,
    SavingRules,
    Work,
    inputs_kept,
    kernel,
    weight_casts,
    whole_bytes,
)
from paramcalc.layers.elementwise import ACTIVATION_FLOPS, normalize_activation

# torch's attention keeps the query, key and value projections in one tensor when the three read inputs
# of the same width (in_proj_weight, in_proj_bias), and casts what each product needs under autocast:
# all three whole for self-attention, the query's part and the key's and value's together when key is
# value (a decoder's cross-attention), each part apart otherwise.
_PROJECTION = re.compile(r"^(.*)(query|key|value)_(kernel|bias)$")
_APART = {"query": "query", "key": "key", "value": "value"}


def _packed(sources: tuple) -> dict:
    """Which cast holds each projection, from the tensors (query, key, value) read."""
    if sources[0] == sources[1] == sources[2]:
        return dict.fromkeys(_APART, "in_proj")
    if sources[1] == sources[2]:
        return {"query": "query", "key": "key_value", "value": "key_value"}
    return _APART


def _cast_tensor(packing: Callable[[str], dict]) -> Callable[[str], str]:
    """The cast a weight's elements go to, given how a prefix's projections are packed."""
    def tensor_of(name: str) -> str:
        projection = _PROJECTION.match(name)
        if not projection:
            return name
        prefix, which, part = projection.groups()
        return f"{prefix}{packing(prefix)[which]}_{part}"
    return tensor_of

SOFTMAX_FLOPS = ACTIVATION_FLOPS["softmax"]


def attention_cost(batch: Dim, tq: Dim, tk: Dim, dq: Dim, dk: Dim, dv: Dim, heads: int, key_dim: Dim,
                   value_dim: Dim, out_dim: Dim, use_bias: bool, kv_heads: int | None = None) -> tuple[Dim, Dim]:
    """(MACs, FLOPs) of one multi-head attention call; ``kv_heads``: fewer key and value heads, each shared
    by a group of query heads (grouped-query attention)."""
    kv = heads if kv_heads is None else kv_heads
    proj = tq * dq * heads * key_dim + tk * dk * kv * key_dim + tk * dv * kv * value_dim
    out = tq * heads * value_dim * out_dim
    core = heads * tq * tk * (key_dim + value_dim)
    macs = batch * (proj + out + core)
    biases = batch * (tq * heads * key_dim + tk * kv * (key_dim + value_dim) + tq * out_dim) if use_bias else 0
    softmax = batch * heads * tq * tk * SOFTMAX_FLOPS
    return macs, 2 * macs + biases + softmax


def attention_weights(prefix: str, dq: Dim, dk: Dim, dv: Dim, heads: int, key_dim: Dim, value_dim: Dim,
                      out_dim: Dim, use_bias: bool, add_bias_kv: bool = False,
                      kv_heads: int | None = None) -> list[Weight]:
    kv = heads if kv_heads is None else kv_heads
    weights = [Weight(f"{prefix}query_kernel", (dq, heads, key_dim)),
               Weight(f"{prefix}key_kernel", (dk, kv, key_dim)),
               Weight(f"{prefix}value_kernel", (dv, kv, value_dim)),
               Weight(f"{prefix}output_kernel", (heads, value_dim, out_dim))]
    if use_bias:
        weights += [Weight(f"{prefix}query_bias", (heads, key_dim)), Weight(f"{prefix}key_bias", (kv, key_dim)),
                    Weight(f"{prefix}value_bias", (kv, value_dim)), Weight(f"{prefix}output_bias", (out_dim,))]
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

    ``num_key_value_heads``: fewer key and value heads than query heads, each shared by a group of them
    (Keras' GroupedQueryAttention, whose key_dim and value_dim are its head_dim).
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
    # torch: the call's need_weights; False takes F.scaled_dot_product_attention (fused where it can)
    need_weights: bool = True
    num_key_value_heads: int | None = None

    def __post_init__(self) -> None:
        if type(self.num_heads) is not int or self.num_heads < 1:
            raise LayerConfigError(f"num_heads must be a positive integer. Received: {shown(self.num_heads)}",
                                   layer=self.name, value=self.num_heads)
        kv = self.num_key_value_heads
        if kv is not None and (type(kv) is not int or kv < 1 or self.num_heads % kv):
            raise LayerConfigError(f"num_key_value_heads must divide num_heads ({self.num_heads}). Received: "
                                   f"{shown(kv)}", layer=self.name, value=kv)
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
            query, value, key = _keras_query_value_key(self.display_type, inputs, ctx)
        _require_sequences(self.display_type, ctx, query=query, key=key, value=value)
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
                                    self.use_bias, self.add_bias_kv, self.num_key_value_heads)
        kv_len = tk + 1 if self.add_bias_kv else tk
        macs, flops = attention_cost(batch, tq, kv_len, dq, dk, dv, self.num_heads, self.key_dim, value_dim,
                                     out_dim, self.use_bias, self.num_key_value_heads)
        out = query.with_shape(query.shape[:-1] + (out_dim,))
        if self.layout == "torch":
            scores = query.with_shape((batch, tq, kv_len))
        else:
            scores = query.with_shape((batch, self.num_heads, tq, kv_len))
        return ctx.result(out, weights=weights, macs=macs, flops=flops, extra_outputs=[scores])

    @property
    def output_structure(self):
        return (0, 1) if self.layout == "torch" else None

    # -- for the cost model ----------------------------------------------------------------------------
    def _sizes(self, call) -> tuple:
        q, k = call.input_shapes[0], call.input_shapes[1]
        b_ax, t_ax = (0, 1) if self.batch_first else (1, 0)
        value_dim = self.key_dim if self.value_dim is None else self.value_dim
        return q[b_ax], q[t_ax], k[t_ax], value_dim

    def work(self, call) -> Work:
        q, k = call.input_shapes[0], call.input_shapes[1]
        b, tq, tk, vd = self._sizes(call)
        h, kd = self.num_heads, self.key_dim
        kv = h if self.num_key_value_heads is None else self.num_key_value_heads
        products = ((b * tq, q[-1], h * kd), (b * tk, k[-1], kv * kd), (b * tk, call.input_shapes[-1][-1], kv * vd),
                    (b * tq, h * vd, call.output_shape[-1]))
        # the FLOPs by phase count the scores against the last input read (Keras' key, or its value)
        b_ax, t_ax = (0, 1) if self.batch_first else (1, 0)
        keys = call.input_shapes[-1] if len(call.input_shapes) > 1 else q
        scores_macs = q[b_ax] * h * q[t_ax] * keys[t_ax] * (kd + vd)
        same_width = self.layout == "torch" and len({s[-1] for s in call.input_shapes[:3]}) == 1
        packing = (lambda prefix: _packed(tuple(call.inbound[:3]))) if same_width else (lambda prefix: _APART)
        return self.described(weight_products=products, activation_macs=scores_macs, host_ops=8,
                              attention=(AttentionCore(b * h, tq, tk, kd, vd, bool(self.dropout)),),
                              autocast_casts=weight_casts(call, _cast_tensor(packing)), keeps_weight_casts=True)

    def saved(self, call, rules: SavingRules) -> list:
        b, tq, tk, vd = self._sizes(call)
        h, kd = self.num_heads, self.key_dim
        query, key, value = b * tq * h * kd, b * tk * h * kd, b * tk * h * vd  # the projections
        probabilities = b * h * tq * tk
        context = b * tq * h * vd
        if self.layout != "torch":
            kept = query + key + value + probabilities + context
        else:
            kept = self._torch_kept(call, rules, query, key, value, probabilities, context, b * h * tq)
        return inputs_kept(call, rules) + [((call.name, "internals"), kept * rules.activation_bytes)]

    def _torch_kept(self, call, rules: SavingRules, query, key, value, probabilities, context, rows) -> Dim:
        """Elements torch's F.multi_head_attention_forward keeps, as saved-tensor hooks show them on the
        CPU. The projections are kept by storage: one in-projection makes query, key and value together
        where the call reads one tensor three times (key and value together where it reads one twice),
        and a view kept keeps all of it."""
        sources = tuple(call.inbound[:3])
        packed_query = len({s[-1] for s in call.input_shapes[:3]}) == 1 and sources[0] == sources[1] == sources[2]
        fused = not self.need_weights and (not self.dropout or not rules.cpu)
        if fused:  # F.scaled_dot_product_attention's fused kernel: q, k, v, its output and a log-sum-exp per
            # query; the output is already in the order the out-projection reads, so it is not copied
            return query + key + value + context + rows
        kv = query + key + value if packed_query else key + value  # a query projected apart is scaled apart
        if self.need_weights:  # the math written out: the scaled query, the probabilities (dropped out
            # again with their mask), the context copied for the out-projection
            dropped = 2 * probabilities if self.dropout else 0
            return kv + query + probabilities + dropped + context
        # scaled_dot_product_attention's math path on the CPU (dropout): query and key scaled apart, the
        # probabilities, their dropout mask and what is dropped
        return kv + query + key + 3 * probabilities + context


def _keras_query_value_key(owner: str, inputs: Sequence[TensorSpec], ctx: Context) -> tuple:
    """(query, value, key) of a Keras attention call on (query, value[, key]): the key is the value when
    none is given."""
    if len(inputs) not in (2, 3):
        raise ctx.shape_error(f"{owner} takes (query, value[, key]), received {len(inputs)} inputs")
    return inputs[0], inputs[1], inputs[2] if len(inputs) == 3 else inputs[1]


def _require_sequences(owner: str, ctx: Context, **tensors: TensorSpec) -> None:
    for name, t in tensors.items():
        if t.rank != 3:
            raise ctx.shape_error(f"{owner} expects 3-D {name} (batch, length, features), "
                                  f"received {ctx.format_shape(t.shape)}")


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

    # -- for the cost model ----------------------------------------------------------------------------
    def _sizes(self, call) -> tuple:
        x = call.input_shapes[0]
        b_ax, t_ax = (0, 1) if self.batch_first else (1, 0)
        return x[b_ax], x[t_ax]

    def work(self, call) -> Work:
        b, t = self._sizes(call)
        e, f, h = self.d_model, self.dim_feedforward, self.nhead
        attentions = 2 if self.decoder else 1
        tokens = b * t
        products, cores, dropout, norms = [], [], 0, 0
        for _ in range(self.num_layers):
            for _ in range(attentions):
                products += [(tokens, e, 3 * e), (tokens, e, e)]
                cores.append(AttentionCore(b * h, t, t, e // h, e // h, bool(self.dropout)))
                dropout += tokens * e  # the block's output (the probabilities' dropout is the core's)
            products += [(tokens, e, f), (tokens, f, e)]
            dropout += tokens * f + tokens * e  # the feed-forward's hidden layer and output
            norms += (attentions + 1) * tokens * e
        kernels = [kernel("layer_norm", norms), kernel("relu", self.num_layers * tokens * f)]
        if self.dropout:
            kernels.append(kernel("dropout", dropout))
        b_ax, t_ax = (0, 1) if self.batch_first else (1, 0)
        memory_steps = call.input_shapes[1][t_ax] if self.decoder else t
        scores_macs = self.num_layers * tokens * 2 * e * (t + (memory_steps if self.decoder else 0))

        def packing(prefix: str) -> dict:
            cross = prefix.endswith("multihead_attn.")
            return _packed(("x", "memory", "memory") if cross else ("x", "x", "x"))
        return self.described(
            weight_products=tuple(products), activation_macs=scores_macs, kernels=tuple(kernels),
            # residuals: two reads and a write per sub-block
            memory_elements=self.num_layers * (attentions + 1) * 3 * tokens * e,
            host_ops=self.num_layers * (attentions * 10 + 12), attention=tuple(cores),
            autocast_casts=weight_casts(call, _cast_tensor(packing)), keeps_weight_casts=True,
            host_repeats=self.num_layers * attentions)

    def saved(self, call, rules: SavingRules) -> list:
        b, t = self._sizes(call)
        e, f, h = self.d_model, self.dim_feedforward, self.nhead
        attentions = 2 if self.decoder else 1
        measured = rules.measured.get("transformer_saved")
        if measured and not self.decoder and self.dropout and (rules.activation_bytes == 4 or rules.mixed):
            # as calibrated: an encoder with dropout, in float32 or under autocast
            kept = (whole_bytes(measured["per_token_feature"]) * b * t * e
                    + whole_bytes(measured["per_token_hidden"]) * b * t * f
                    + whole_bytes(measured["per_score"]) * b * h * t * t)
            return inputs_kept(call, rules)[:1] + [((call.name, "internals"), self.num_layers * kept)]
        # per layer: q, k, v, context, attention output, 2 norm inputs, residual sums; FF in, hidden (x2);
        # probabilities and their dropout; dropout masks (1 byte) on every sub-block and the FF hidden
        tensors = attentions * (5 * b * t * e + 2 * b * h * t * t) + 3 * b * t * e + 2 * b * t * f
        masks = attentions * b * h * t * t + 3 * b * t * e + b * t * f
        internals = self.num_layers * (tensors * rules.activation_bytes + masks)
        return inputs_kept(call, rules)[:1] + [((call.name, "internals"), internals)]


@register_layer("score_attention")
@dataclass(frozen=True)
class ScoreAttention(Layer):
    """Keras ``Attention`` (Luong: ``score="dot"``, or ``"concat"``) and ``AdditiveAttention`` (Bahdanau:
    ``score="additive"``) called on [query, value] or [query, value, key]. There are no projections: the
    scores are the query against the keys, and the output is their softmax times the values,
    (B, Tq, value width).

    Weights: ``use_scale`` gives a scalar ``scale`` (dot, concat) or one per feature (additive). Concat
    also has a scalar ``concat_score_weight``. Dot scores are products. Concat and additive scores are
    ``sum(tanh(q + k))`` over the features, per-element work on (B, Tq, Tk, features).
    """

    score: str = "dot"
    use_scale: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.score not in ("dot", "concat", "additive"):
            raise LayerConfigError(f"score must be 'dot', 'concat' or 'additive'. Received: {shown(self.score)}",
                                   layer=self.name, value=self.score)

    def _shapes(self, shapes: Sequence) -> tuple:
        """(batch, Tq, Tk, query width, value width) of (query, value[, key])."""
        query, value = shapes[0], shapes[1]
        key = shapes[2] if len(shapes) > 2 else value
        return query[0], query[1], key[1], query[-1], value[-1]

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        query, value, key = _keras_query_value_key(self.display_type, inputs, ctx)
        _require_sequences(self.display_type, ctx, query=query, value=value, key=key)
        ctx.require_equal(query.shape[-1], key.shape[-1], f"{self.display_type}: query width {query.shape[-1]} "
                                                          f"and key width {key.shape[-1]} differ")
        ctx.require_equal(value.shape[1], key.shape[1], f"{self.display_type}: value length {value.shape[1]} "
                                                        f"and key length {key.shape[1]} differ")
        b, tq, tk, d, dv = self._shapes([t.shape for t in inputs])
        weights = []
        if self.use_scale:
            weights.append(Weight("scale", (d,) if self.score == "additive" else ()))
        if self.score == "concat":
            weights.append(Weight("concat_score_weight", ()))
        scores = b * tq * tk
        if self.score == "dot":
            macs = scores * (d + dv)
            flops = 2 * macs + (scores if self.use_scale else 0)
        else:  # tanh of a sum per feature, (scaled,) summed over the features
            macs = scores * dv
            per_feature = 2 + ACTIVATION_FLOPS["tanh"] + (1 if self.use_scale else 0)
            flops = 2 * macs + scores * d * per_feature + (scores if self.score == "concat" else 0)
        flops = flops + scores * SOFTMAX_FLOPS
        return ctx.result(query.with_shape((b, tq, dv)), weights=weights, macs=macs, flops=flops)

    def work(self, call) -> Work:
        b, tq, tk, d, dv = self._shapes(call.input_shapes)
        scores = b * tq * tk
        products = ((b * tq, tk, dv),) if self.score != "dot" else ((b * tq, d, tk), (b * tq, tk, dv))
        kernels = [kernel("softmax", scores)] + ([kernel("dropout", scores)] if self.dropout else [])
        if self.score != "dot":
            kernels.append(kernel("tanh", scores * d))
        return self.described(activation_products=products, activation_macs=sum(m * k * n for m, k, n in products),
                              kernels=tuple(kernels), memory_elements=2 * scores * d if self.score != "dot" else 0,
                              host_ops=4 + len(kernels))

    def saved(self, call, rules: SavingRules) -> list:
        b, tq, tk, d, _ = self._shapes(call.input_shapes)
        kept = b * tq * tk * (1 + (d if self.score != "dot" else 0))  # the probabilities; the tanh's outputs
        return inputs_kept(call, rules) + [((call.name, "internals"), kept * rules.activation_bytes)]


@register_layer("dot_product_attention")
@dataclass(frozen=True)
class DotProductAttention(Layer):
    """``keras.ops.dot_product_attention(query, key, value)`` on (batch, length, heads, width) tensors,
    Keras' layout: scores, their softmax (scaled, masked, causal or not: every score is computed), the
    weighted values; (batch, Tq, heads, value width) out. Fewer key and value heads than query heads
    are shared by groups of them (grouped-query attention). No weights.

    FLOPs as a multi-head attention's core: the two products (2 per multiply-add), the softmax 5 per
    score."""

    def _sizes(self, shapes: Sequence) -> tuple:
        (b, tq, heads, width), (_, tk, _, _), (_, _, _, value_width) = shapes[:3]
        return b, tq, tk, heads, width, value_width

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        if len(inputs) != 3 or any(t.rank != 4 for t in inputs):
            raise ctx.shape_error(f"{self.display_type} takes query, key and value of rank 4 (batch, length, heads, "
                                  f"width), received {', '.join(ctx.format_shape(t.shape) for t in inputs)}")
        query, key, value = inputs
        b, tq, tk, heads, width, value_width = self._sizes([t.shape for t in inputs])
        ctx.require_equal(key.shape[-1], width, f"{self.display_type}: query width {width} and key width "
                                                f"{key.shape[-1]} differ")
        ctx.require_equal(value.shape[1], tk, f"{self.display_type}: key length {tk} and value length "
                                              f"{value.shape[1]} differ")
        if exact_div(heads, key.shape[2]) is None:
            raise ctx.shape_error(f"{self.display_type}: {key.shape[2]} key heads do not divide {heads} query heads")
        scores = b * heads * tq * tk
        macs = scores * (width + value_width)
        return ctx.result(query.with_shape((b, tq, heads, value_width)), macs=macs,
                          flops=2 * macs + scores * SOFTMAX_FLOPS)

    def work(self, call) -> Work:
        b, tq, tk, heads, width, value_width = self._sizes(call.input_shapes)
        return self.described(activation_macs=call.macs_per_batch, host_ops=4,
                              attention=(AttentionCore(b * heads, tq, tk, width, value_width, False),))

    def saved(self, call, rules: SavingRules) -> list:
        b, tq, tk, heads, _, _ = self._sizes(call.input_shapes)
        # the query, key and value, and the probabilities (the math path Keras takes on the CPU)
        return inputs_kept(call, rules) + [((call.name, "probabilities"), b * heads * tq * tk * rules.activation_bytes)]
