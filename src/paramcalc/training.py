"""Training cost of an estimated model: FLOPs (forward, input gradient, weight gradient), memory
(weights, gradients, optimizer state, saved activations, input batch, peak), and step time on a
device profile. Pure: reads an Estimate, imports no framework.

Conventions (docs/conventions.md):
- Input gradients (dgrad) are computed only where a tensor upstream requires grad: a layer reading
  only model inputs, or only frozen layers' outputs, needs none. Weight gradients (wgrad) only for
  trainable weights. For a weight product, dgrad and wgrad each cost as much as the forward product;
  a product of two activations (attention scores) needs two products backward; elementwise work
  costs its forward count again.
- Saved activations follow what torch's autograd keeps per operation (SAVED below); a tensor kept by
  several layers counts once. Peak memory simulates the backward pass: saved tensors are freed after
  the last layer that needs them, gradients of activations live while in flight, weight gradients
  accumulate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from .dims import Dim, Sym, exact_div, prod
from .errors import ParamcalcError

# buffers of optimizer state per trainable parameter, each in the parameter's own dtype: torch and Keras
# make their slots like the variable (fp32 under mixed precision, whose variables are fp32; 16 bits when
# the model itself is 16-bit)
OPTIMIZER_STATE_BUFFERS = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2, "rmsprop": 1, "adagrad": 1}
# bytes moved per trainable fp32 parameter by one update (reads + writes, torch's foreach kernels)
OPTIMIZER_TRAFFIC_BYTES = {"sgd": 12, "momentum": 20, "adam": 40, "adamw": 44, "rmsprop": 28, "adagrad": 28}
# framework operations per update (foreach kernels over all parameters)
OPTIMIZER_OPS = {"sgd": 2, "momentum": 4, "adam": 12, "adamw": 13, "rmsprop": 8, "adagrad": 6}

PRECISIONS = {
    # name: (bytes per weight, per weight gradient, per activation, matmul dtype, extra bytes per weight)
    "float32": (4, 4, 4, "float32", 0),
    "tfloat32": (4, 4, 4, "tfloat32", 0),
    "mixed_bfloat16": (4, 4, 2, "bfloat16", 2),  # autocast: fp32 weights/grads, bf16 copies and activations
    "mixed_float16": (4, 4, 2, "float16", 2),
    "bfloat16": (2, 2, 2, "bfloat16", 0),
    "float16": (2, 2, 2, "float16", 0),
}

FUSED_ACTIVATION_KINDS = ("dense", "conv", "conv_transpose", "depthwise_conv")
# Activations whose backward reads their output (the others read their input): torch's ELU, ReLU6 and
# hardtanh read the input, TensorFlow's ELU and ReLU6 gradients the output (checked against torch's
# saved-tensor hooks and TensorFlow's registered gradients, nn_grad.py)
OUTPUT_SAVERS = {"relu", "sigmoid", "tanh", "softmax", "log_softmax"}
TF_OUTPUT_SAVERS = OUTPUT_SAVERS | {"elu", "relu6"}
# Layers whose output shares its input's storage: saving either keeps the same bytes, and their
# backward passes gradients through without new buffers.
VIEW_KINDS = {"flatten", "reshape", "unflatten", "permute", "view", "transpose", "unsqueeze", "squeeze",
              "identity", "expand", "index"}


@dataclass(frozen=True)
class PeakMoment:
    """When the simulated peak happens and what is alive then, beyond weights, optimizer state and the
    input batch: ``phase`` ("forward", "backward" or "update"), the layer running (None for the update)
    and (part, bytes) pairs that add up to the peak's share above those three."""

    phase: str
    layer: str | None
    parts: tuple


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes of each part of training memory; ``peak`` is the simulated maximum, input batch included;
    ``peak_moment`` says when it happens and what is alive then (None while the batch is symbolic)."""

    weights: Dim
    gradients: Dim
    optimizer: Dim
    activations: Dim  # saved for the backward pass, each tensor once
    input_batch: Dim
    peak: Dim
    peak_moment: PeakMoment | None = None


@dataclass(frozen=True)
class TrainingCost:
    """Per training step (one batch): FLOPs by phase, memory by part, and predicted time."""

    batch_size: Dim
    optimizer: str
    precision: str
    forward_flops: Dim
    dgrad_flops: Dim
    wgrad_flops: Dim
    memory: MemoryBreakdown
    device: str | None = None  # the profile's name
    device_label: str | None = None  # the same, with the machine a CPU profile describes
    step_seconds: float | None = None
    host_seconds: float | None = None
    device_seconds: float | None = None
    layer_seconds: tuple = field(default=(), compare=False)  # (layer name, seconds) by cost
    layer_flops: tuple = field(default=(), compare=False)  # (layer name, forward, dgrad, wgrad) in order
    paged_in_seconds: float = 0.0  # CPU hosts: the step's time paging in fresh blocks (timing.py)
    largest_paged_block: int = 0  # bytes of the largest of those blocks
    paged_in_bytes: int = 0  # bytes of those blocks, all together
    framework: str = "torch"  # whose training step the memory follows (training_path)

    @property
    def flops(self) -> Dim:
        return self.forward_flops + self.dgrad_flops + self.wgrad_flops

    @property
    def samples_per_second(self) -> float | None:
        if self.step_seconds is None or type(self.batch_size) is not int:
            return None
        return self.batch_size / self.step_seconds

    def epoch_seconds(self, samples: int) -> float | None:
        """Time for one pass over ``samples`` samples (the last batch may be partial)."""
        if self.step_seconds is None or type(self.batch_size) is not int or self.batch_size == 0:
            return None
        steps = -(-samples // self.batch_size)
        return steps * self.step_seconds

    def to_dict(self) -> dict:
        def v(x: Any) -> Any:
            return x if x is None or isinstance(x, (int, float, str)) else str(x)
        m = self.memory
        return {"batch_size": v(self.batch_size), "optimizer": self.optimizer, "precision": self.precision,
                "framework": self.framework,
                "flops": {"forward": v(self.forward_flops), "dgrad": v(self.dgrad_flops),
                          "wgrad": v(self.wgrad_flops), "total": v(self.flops)},
                "memory_bytes": {"weights": v(m.weights), "gradients": v(m.gradients),
                                 "optimizer": v(m.optimizer), "activations": v(m.activations),
                                 "input_batch": v(m.input_batch), "peak": v(m.peak)},
                "peak_moment": None if m.peak_moment is None else {
                    "phase": m.peak_moment.phase, "layer": m.peak_moment.layer,
                    "parts": [{"part": label, "bytes": v(nbytes)} for label, nbytes in m.peak_moment.parts]},
                "device": self.device, "step_seconds": self.step_seconds,
                "samples_per_second": self.samples_per_second,
                "slowest_layers": [{"layer": n, "seconds": s} for n, s in self.layer_seconds[:5]],
                "layer_flops": [{"layer": n, "forward": v(f), "dgrad": v(d), "wgrad": v(w)}
                                for n, f, d, w in self.layer_flops]}


def training_cost(est, *, optimizer: str = "adam", precision: str = "float32", device: object = None,
                  batch_size: object = None, keras_backend: str | None = None) -> TrainingCost:
    """Training FLOPs, memory and (with ``device``) step time of an Estimate.

    Sizes other than the batch must be concrete (``est.subs(n=...)`` first); an unset batch gives
    FLOPs and memory as formulas in ``B`` (with a device, by its rules) and no step time, which needs
    a concrete batch. Memory follows the
    framework that trains (:func:`training_path`): for a Keras model, ``keras_backend`` ("tensorflow",
    "jax" or "torch") when the device profile does not say.
    """
    if optimizer not in OPTIMIZER_STATE_BUFFERS:
        raise ParamcalcError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZER_STATE_BUFFERS)}",
                             value=optimizer)
    if precision not in PRECISIONS:
        raise ParamcalcError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}", value=precision)
    if batch_size is not None:
        est = est.subs({est.batch_symbol: batch_size})
    others = est.symbols - {est.batch_symbol}
    if others:
        raise ParamcalcError(f"training cost needs concrete sizes; substitute {', '.join(sorted(others))} first "
                             f"(est.subs({sorted(others)[0]}=...))", value=sorted(others))
    w_bytes, g_bytes, a_bytes, mm_dtype, cast_bytes = PRECISIONS[precision]
    rows = [r for r in est.layers]
    trainable_rows = {r.name for r in rows if _trains(r)}
    needs_grad = _requires_grad(rows, trainable_rows)
    fwd = dgrad = wgrad = 0
    per_layer = []
    for row in rows:
        f, d, w = _phase_flops(row, _reads_grad_tensor(row, needs_grad), row.name in trainable_rows)
        fwd, dgrad, wgrad = fwd + f, dgrad + d, wgrad + w
        per_layer.append((row.name, f, d, w))
    profile = None
    if device is not None:
        from .devices import resolve

        profile = resolve(device)
    path = training_path(est, profile, keras_backend)
    memory = _memory(est, rows, needs_grad, optimizer, w_bytes, g_bytes, a_bytes, cast_bytes, profile, path)
    batch = est.batch_size if est.batch_size is not None else Sym._from_terms({((est.batch_symbol, 1),): 1})
    cost = TrainingCost(batch, optimizer, precision, fwd, dgrad, wgrad, memory, layer_flops=tuple(per_layer),
                        framework=path)
    if profile is None:
        return cost
    if type(est.batch_size) is not int:  # memory as a formula in B, by the device's rules; no time yet
        return replace(cost, device=profile.name, device_label=profile.label())
    from .timing import step_time

    return step_time(cost, est, rows, needs_grad, profile, mm_dtype, a_bytes, optimizer,
                     autocast=precision.startswith("mixed"), w_bytes=w_bytes)


# -- which tensors need gradients -------------------------------------------------------------------
def _trains(row) -> bool:
    """Whether this call computes weight gradients (a shared layer's later calls accumulate them too)."""
    return row.layer is not None and any(row.layer.trains(w) for w in row.weights)


def _requires_grad(rows, trainable_rows: set) -> set:
    """Names of layers whose output requires grad (from a trainable layer upstream)."""
    out: set = set()
    for row in rows:
        if row.name in trainable_rows or any(src in out for src, _ in row.inbound):
            out.add(row.name)
    return out


def _reads_grad_tensor(row, needs_grad: set) -> bool:
    return any(src in needs_grad for src, _ in row.inbound)


def _phase_flops(row, dgrad_needed: bool, trains: bool) -> tuple[Dim, Dim, Dim]:
    """(forward, dgrad, wgrad) FLOPs of one layer call for the whole batch."""
    forward = row.flops_per_batch
    act_macs = _activation_macs(row)
    weight_macs = row.macs_per_batch - act_macs
    # backward through the layer's own activation products and elementwise work, needed for either
    # gradient (attention's projections get their weight gradients through the scores)
    internal = 4 * act_macs + (forward - 2 * row.macs_per_batch - bias_elements(row))  # bias grads: wgrad
    dgrad = (2 * weight_macs if dgrad_needed else 0) + (internal if dgrad_needed or trains else 0)
    wgrad = 2 * weight_macs + bias_elements(row) if trains else 0
    return forward, dgrad, wgrad


def _activation_macs(row) -> Dim:
    """MACs of products between two activations (no weights): attention scores, matmul, dot."""
    if row.kind in ("matmul", "dot"):
        return row.macs_per_batch
    layer = row.layer
    if row.kind == "attention":
        q, k = row.input_shapes[0], row.input_shapes[-1] if len(row.input_shapes) > 1 else row.input_shapes[0]
        b_ax, t_ax = time_axes(layer)
        value_dim = layer.key_dim if layer.value_dim is None else layer.value_dim
        return q[b_ax] * layer.num_heads * q[t_ax] * k[t_ax] * (layer.key_dim + value_dim)
    if row.kind == "transformer":
        x = row.input_shapes[0]
        b_ax, t_ax = time_axes(layer)
        mem = row.input_shapes[1][t_ax] if layer.decoder else x[t_ax]
        per = x[b_ax] * x[t_ax] * 2 * layer.d_model  # scores and context over all heads
        return layer.num_layers * per * (x[t_ax] + (mem if layer.decoder else 0))
    return 0


def time_axes(layer) -> tuple[int, int]:
    """(batch axis, time axis) of a sequence layer's input: (N, T, ...) when batch_first, else (T, N, ...)."""
    return (0, 1) if getattr(layer, "batch_first", True) else (1, 0)


def bias_elements(row) -> Dim:
    """A bias gradient sums the output gradient over positions: one FLOP per output element."""
    if row.kind in ("dense", "conv", "conv_transpose") and any(w.name == "bias" for w in row.weights):
        return prod(row.output_shape)
    return 0


# Layers whose products torch's autocast runs in 16 bits (its lower-precision list: linear, the
# convolutions, the recurrent kernels, attention), casting each of their 32-bit weight tensors first.
# A Transformer layer's LayerNorms run in 32 bits (autocast's float32 list): their weights stay as they are.
AUTOCAST_KINDS = {"dense", "conv", "conv_transpose", "separable_conv", "depthwise_conv", "rnn", "attention",
                  "transformer"}
_NORM_WEIGHT = re.compile(r"(^|\.)norm\d*\.")
# torch's attention keeps the query, key and value projections in one tensor when the three read inputs
# of the same width (in_proj_weight, in_proj_bias), and casts what each product needs: all three whole
# for self-attention, the query's part and the key's and value's together when key is value (a
# decoder's cross-attention), each part apart otherwise.
_PROJECTION = re.compile(r"^(.*)(query|key|value)_(kernel|bias)$")


def autocast_casts(row) -> list:
    """(elements, trained) of each weight tensor autocast casts to 16 bits for one call of this layer.

    Each cast is an operation in the forward and, autograd recording it, another in the backward that
    casts the 16-bit gradient back to the 32-bit parameter's dtype (torch's ToCopyBackward0): a Linear
    with a bias costs four operations more under autocast than without, about half of what its
    forward, backward and ReLU cost the host otherwise (measured on this project's CPU host: 12.9 us
    more per Linear+ReLU pair of 24.5 us)."""
    if row.kind not in AUTOCAST_KINDS:
        return []
    layer = row.layer
    tensors: dict = {}  # what torch casts -> [elements, trained]
    for w in row.weights:
        if w.buffer or _NORM_WEIGHT.search(w.name) or w.name.endswith(("bias_k", "bias_v")):
            continue  # bias_k and bias_v join the projections by concatenation, promoted, not cast
        name, projection = w.name, _PROJECTION.match(w.name)
        if projection:
            prefix, which, part = projection.groups()
            name = f"{prefix}{_packed_projection(row, prefix)[which]}_{part}"
        entry = tensors.setdefault(name, [0, False])
        entry[0] += prod(w.shape)
        entry[1] = entry[1] or layer.trains(w)
    return [tuple(entry) for entry in tensors.values()]


def _packed_projection(row, prefix: str) -> dict:
    """Which of torch's casts holds the query's, key's and value's projections (by name)."""
    apart = {"query": "query", "key": "key", "value": "value"}
    if row.kind == "transformer":
        inputs = ("x", "memory", "memory") if prefix.endswith("multihead_attn.") else ("x", "x", "x")
    elif getattr(row.layer, "layout", None) == "torch" and len({s[-1] for s in row.input_shapes[:3]}) == 1:
        inputs = tuple(row.inbound[:3])
    else:
        return apart
    if inputs[0] == inputs[1] == inputs[2]:
        return dict.fromkeys(apart, "in_proj")
    if inputs[1] == inputs[2]:
        return {"query": "query", "key": "key_value", "value": "key_value"}
    return apart


# -- memory -----------------------------------------------------------------------------------------
def _fused_activation(row) -> bool:
    """A Keras layer that applies its activation itself (Dense(300, activation="relu"))."""
    return row.kind in FUSED_ACTIVATION_KINDS and getattr(row.layer, "activation", "linear") != "linear"


# Keras' normalisation layers compute in float32 whatever the policy: under mixed precision they cast
# their 16-bit input up (a copy their backward reads) and their output back down.
KERAS_FLOAT32_NORMS = ("batch_norm", "layer_norm", "group_norm", "rms_norm")


def _saved(row, a_bytes: int, profile=None, path: str = "torch",
           mixed: bool = False) -> list[tuple[tuple, Dim]]:
    """(tensor key, bytes) that autograd keeps for this layer's backward pass. ``profile``: the device's,
    whose calibration may give what its recurrent and Transformer kernels keep; ``path``: the framework
    that trains (Keras on torch keeps copies of its own); ``mixed``: mixed precision."""
    saved = _saved_by_torch(row, a_bytes, profile, mixed, tensorflow=path == "keras")
    if path == "torch" and row.kind == "pool" and row.layer.op == "avg":
        saved = [(row.inbound[0], prod(row.input_shapes[0]) * a_bytes)]  # torch's backward reads its input
    if path == "torch" and row.kind == "dropout" and saved and profile is not None and profile.kind == "cpu":
        # on CPUs torch's dropout multiplies by a noise tensor of the input's dtype and keeps it; CUDA's
        # fused kernel keeps a one-byte mask
        saved = [(key, prod(row.input_shapes[0]) * a_bytes) for key, _ in saved]
    if path == "keras-torch":
        saved = _keras_on_torch_copies(row, saved, a_bytes)
    if mixed and path in ("keras", "keras-torch") and row.kind in KERAS_FLOAT32_NORMS:
        saved = _upcast_to_float32(row, saved, a_bytes)
    return saved


def _upcast_to_float32(row, saved: list, a_bytes: int) -> list:
    """What a Keras norm keeps under mixed precision: the float32 copy of its input in place of the
    input, and its other tensors (Keras on torch's centred input) in float32 too."""
    upcast = []
    for key, nbytes in saved:
        if key == (row.name, "statistics"):  # float32 already
            upcast.append((key, nbytes))
            continue
        if key == row.inbound[0]:
            key = (row.name, "float32_input")
        upcast.append((key, nbytes * 4 // a_bytes))
    return upcast


def _keras_on_torch_copies(row, saved: list, a_bytes: int) -> list:
    """What Keras' own operations on its torch backend keep beyond torch's layers (read with autograd's
    saved-tensor hooks): a channels-last convolution or max pool keeps the channels-first copy of its
    input it hands to torch, and BatchNormalization, built from elementwise operations, keeps its
    centred input (x - mean, copied before an in-place product)."""
    layer = row.layer
    in_bytes = prod(row.input_shapes[0]) * a_bytes if row.input_shapes else 0
    copy = ((row.name, "channels_first_input"), in_bytes)
    if row.kind in ("conv", "depthwise_conv", "separable_conv") and getattr(layer, "channels_last", False):
        return saved + [copy]
    if row.kind == "pool" and layer.op == "max" and layer.channels_last:
        return [copy] + saved[1:]  # the copy, not the input itself; the indices as before
    if row.kind == "batch_norm":
        return saved + [((row.name, "centred"), in_bytes)]
    return saved


def kept_by_kernels(profile, table: str, mixed: bool) -> dict:
    """What the device's calibration measured its recurrent or Transformer kernels keep (``table``:
    "recurrent_saved", "recurrent_workspace" or "transformer_saved"), under autocast when ``mixed``;
    a mixed-precision step without that measurement takes the float32 one for recurrent layers (an
    upper bound: the LSTM kept 53 bytes per unit under autocast where 77 in float32) and the generic
    rule for the Transformer."""
    if profile is None:
        return {}
    if mixed and table in profile.mixed_memory:
        return profile.mixed_memory[table]
    if mixed and table == "transformer_saved":
        return {}
    return getattr(profile, table)


def _saved_by_torch(row, a_bytes: int, profile=None, mixed: bool = False,
                   tensorflow: bool = False) -> list[tuple[tuple, Dim]]:
    """(tensor key, bytes) that torch's autograd keeps for this layer's backward pass; ``tensorflow``:
    what TensorFlow's gradients read instead, where they differ (Keras on TensorFlow)."""
    kind, layer = row.kind, row.layer
    output_savers = TF_OUTPUT_SAVERS if tensorflow else OUTPUT_SAVERS
    ins = [((src, idx), prod(shape) * a_bytes) for (src, idx), shape in zip(row.inbound, row.input_shapes)]
    out = [((row.name, 0), prod(row.output_shape) * a_bytes)]
    out_n = prod(row.output_shape)
    if kind in FUSED_ACTIVATION_KINDS:
        # a product keeps its input for the kernel's gradient only (a frozen Dense keeps its weights,
        # counted apart, for the input gradient; a bias gradient needs neither); a convolution's
        # backward takes its input whichever gradients it makes, so torch keeps it
        kernel_trains = any(layer.trains(w) for w in row.weights if w.name != "bias")
        saved = ins[:1] if kernel_trains or kind != "dense" else []
        act = getattr(layer, "activation", "linear")
        if act != "linear":  # Keras' fused activation: the output, or the pre-activation too
            saved += out if act in output_savers else [((row.name, "pre"), out_n * a_bytes)] + out
        return saved
    if kind == "separable_conv":
        return ins[:1] + [((row.name, "depthwise"), out_n * a_bytes)]
    if kind == "activation":
        if layer.function == "linear":
            return []
        if layer.function == "softsign" and not tensorflow:  # x / (1 + |x|), composite: the divisor too
            return ins[:1] + [((row.name, "divisor"), out_n * a_bytes)]
        return out if layer.function in output_savers else ins[:1]
    if kind == "dropout":
        return [((row.name, "mask"), prod(row.input_shapes[0]))] if layer.rate else []  # bool mask
    if kind in ("batch_norm", "layer_norm", "group_norm"):
        return ins[:1] + [((row.name, "statistics"), _norm_statistics(row))]
    if kind in ("rms_norm", "prelu"):
        return ins[:1]
    if kind == "pool":
        return ins[:1] + [((row.name, "indices"), out_n * 8)] if layer.op == "max" else []
    if kind in ("global_pool", "adaptive_pool"):
        return ins[:1] + [((row.name, "indices"), out_n * 8)] if layer.op == "max" else []
    if kind == "embedding":
        return [(ins[0][0], prod(row.input_shapes[0]) * 8)]  # the int64 indices
    if kind == "merge":
        return ins if layer.op in ("multiply", "divide", "maximum", "minimum") else []
    if kind in ("matmul", "dot"):
        return ins
    if kind == "attention":
        return ins + _attention_saved(row, a_bytes)
    if kind == "transformer":
        measured = kept_by_kernels(profile, "transformer_saved", mixed)
        return ins[:1] + _transformer_saved(row, a_bytes, measured, mixed)
    if kind == "rnn":
        per_unit = kept_by_kernels(profile, "recurrent_saved", mixed).get(layer.cell)
        return ins[:1] + _rnn_saved(row, a_bytes, per_unit)
    if kind == "time_distributed":
        return ins[:1]
    return []  # views, padding, concatenation, additions: shapes only


def _aliases_input(row) -> bool:
    """Whether the layer's output is its input's storage: views, and a dropout of rate 0, which hands
    its input back unchanged."""
    return row.kind in VIEW_KINDS or (row.kind == "dropout" and not row.layer.rate)


def _norm_statistics(row) -> Dim:
    """Bytes of the statistics a norm's forward keeps for its backward, float32 whatever the input's
    dtype: BatchNorm a mean and an inverse deviation per channel (InstanceNorm per sample and
    channel, with copies of its weight and running statistics), LayerNorm per normalised row,
    GroupNorm per sample and group."""
    layer, x = row.layer, row.input_shapes[0]
    if row.kind == "batch_norm" and layer.per_sample:
        # torch's InstanceNorm runs BatchNorm over the batch folded into the channels: its weight and
        # running statistics repeated per sample are kept too
        repeated = int(layer.scale) + (2 if layer.stats == "buffers" else 0)
        return (2 + repeated) * x[0] * x[layer.axis] * 4
    if row.kind == "batch_norm":
        groups = x[layer.axis]
    elif row.kind == "group_norm":  # Keras' groups=-1: a group per channel
        groups = x[0] * (x[layer.axis] if layer.groups == -1 else layer.groups)
    else:
        normalized = (prod(layer.normalized_shape) if layer.normalized_shape is not None
                      else prod(x[a] for a in layer.axes))
        groups = exact_div(prod(x), normalized)
    return 2 * groups * 4


def _attention_saved(row, a_bytes: int) -> list:
    layer = row.layer
    q, k = row.input_shapes[0], row.input_shapes[1]
    b_ax, t_ax = time_axes(layer)
    b, tq, tk, h = q[b_ax], q[t_ax], k[t_ax], layer.num_heads
    vd = layer.key_dim if layer.value_dim is None else layer.value_dim
    projections = b * h * (tq * layer.key_dim + tk * (layer.key_dim + vd))
    probabilities = b * h * tq * tk
    context = b * tq * h * vd
    return [((row.name, "internals"), (projections + probabilities + context) * a_bytes)]


def _transformer_saved(row, a_bytes: int, measured: dict | None = None, mixed: bool = False) -> list:
    layer = row.layer
    x = row.input_shapes[0]
    b_ax, t_ax = time_axes(layer)
    b, t, e, f, h = x[b_ax], x[t_ax], layer.d_model, layer.dim_feedforward, layer.nhead
    attentions = 2 if layer.decoder else 1
    # as calibrated: an encoder with dropout, in float32 or under autocast
    if measured and not layer.decoder and layer.dropout and (a_bytes == 4 or mixed):
        kept = (_whole(measured["per_token_feature"]) * b * t * e + _whole(measured["per_token_hidden"]) * b * t * f
                + _whole(measured["per_score"]) * b * h * t * t)
        return [((row.name, "internals"), layer.num_layers * kept)]
    # per layer: q, k, v, context, attention output, 2 norm inputs, residual sums; FF in, hidden (x2);
    # probabilities and their dropout; dropout masks (1 byte) on every sub-block and the FF hidden
    tensors = attentions * (5 * b * t * e + 2 * b * h * t * t) + 3 * b * t * e + 2 * b * t * f
    masks = attentions * b * h * t * t + 3 * b * t * e + b * t * f
    return [((row.name, "internals"), layer.num_layers * (tensors * a_bytes + masks))]


def _rnn_saved(row, a_bytes: int, per_unit: float | None = None) -> list:
    layer = row.layer
    from .layers.recurrent import GATES

    g = GATES[layer.cell]
    units = _rnn_units(row)
    if per_unit is not None:  # measured: the kernel's workspace, its output and states, per layer
        return [((row.name, "internals"), layer.num_layers * _whole(per_unit) * units)]
    per_layer = units * (g + 2)  # gates and states of every step
    inputs = units * (layer.num_layers - 1)
    return [((row.name, "internals"), (layer.num_layers * per_layer + inputs) * a_bytes)]


def _rnn_units(row) -> Dim:
    """Batch x steps x directions x hidden units of one layer of a recurrent row."""
    layer = row.layer
    b_ax, t_ax = time_axes(layer)
    x = row.input_shapes[0]
    return x[b_ax] * x[t_ax] * layer.directions * layer.units


def _backward_workspace(row, profile, mixed: bool = False) -> Dim:
    """Bytes a layer's backward holds only while it runs, beyond its gradients: what the device's
    calibration measured for recurrent kernels (oneDNN's, or Keras' loop on torch re-expanding each
    step's slice of the input projection), one layer at a time."""
    if row.kind != "rnn" or profile is None:
        return 0
    per_unit = kept_by_kernels(profile, "recurrent_workspace", mixed).get(row.layer.cell)
    return _whole(per_unit) * _rnn_units(row) if per_unit else 0


def _whole(measured_bytes: float) -> int:
    """A calibrated figure in bytes per element, as whole bytes: sizes stay exact integers, and a
    formula in the batch gives what a concrete batch gives."""
    return round(measured_bytes)


def trainable_tensor_sizes(rows) -> list:
    """Elements of each trainable weight tensor, once per tensor (a shared layer's later calls reuse it)."""
    return [n for row in rows for n in _own_trainable_sizes(row)]


def _own_trainable_sizes(row) -> list:
    """Elements of each trainable weight tensor this row owns (none for a shared layer's later calls)."""
    if row.shared_with is not None or row.layer is None:
        return []
    return [w.numel for w in row.weights if row.layer.trains(w)]


TRAINING_PATHS = ("torch", "keras", "keras-torch")
PATH_NAMES = {"torch": "torch, eager", "keras": "Keras, compiled step (TensorFlow, JAX)",
              "keras-torch": "Keras on torch, eager"}
KERAS_BACKENDS = {"tensorflow": "keras", "jax": "keras", "torch": "keras-torch"}


def training_path(est, profile=None, keras_backend: str | None = None) -> str:
    """Which framework runs the training step: "torch", "keras" (Keras compiling the step: TensorFlow,
    or JAX) or "keras-torch" (Keras on its torch backend, eager). A calibrated profile names the one it
    measured; otherwise the model's own framework decides, and for a Keras model its backend:
    ``keras_backend``, else that of the Keras already imported in this process, else TensorFlow
    (Keras' default). A plain spec follows torch's rules unless ``keras_backend`` is named."""
    if profile is not None and profile.framework in TRAINING_PATHS:
        return profile.framework
    if est.framework == "torch" and keras_backend is not None:
        raise ParamcalcError(f"keras_backend={keras_backend!r} applies to Keras models; this one is a torch "
                             "module", value=keras_backend, fix="leave keras_backend out for torch models")
    if est.framework != "keras" and keras_backend is None:
        return "torch"
    backend = keras_backend or _imported_keras_backend() or "tensorflow"
    if backend not in KERAS_BACKENDS:
        raise ParamcalcError(f"unknown Keras backend {backend!r}; known: {', '.join(KERAS_BACKENDS)}",
                             value=backend, fix='pass keras_backend="tensorflow", "jax" or "torch"')
    return KERAS_BACKENDS[backend]


def _imported_keras_backend() -> str | None:
    """The backend of the Keras this process imported, without importing it."""
    import sys

    keras = sys.modules.get("keras")
    backend = getattr(getattr(keras, "backend", None), "backend", None)
    return backend() if callable(backend) else None


def _update_style(profile, path: str = "torch") -> str:
    """How the update runs: torch's foreach kernels over all tensors (its default on GPUs, and assumed
    without a device: the larger temporary), torch's loop over tensors (its default on CPUs), or a
    compiled graph (Keras on TensorFlow: each layer's update runs in the backward), or Keras' own foreach
    update on its torch backend."""
    if path == "keras":
        return "compiled"
    if path == "keras-torch":
        return "keras-foreach"
    return "foreach" if profile is None or profile.asynchronous else "loop"


def update_temporary(optimizer: str, sizes: list, style: str = "foreach", nbytes: int = 4) -> Dim:
    """Bytes of the buffers an update allocates and frees: Adam's denominator (sqrt of the second moment,
    divided, plus eps), RMSprop's and Adagrad's square roots. Foreach kernels make one per tensor at
    once; the per-tensor loop makes them for one tensor at a time, Adam two (the root, then the quotient);
    Keras' Adam on torch keeps three lists alive at once (m x alpha, sqrt(v) + eps, and their quotient).
    A compiled graph updates each layer inside the backward instead: graph_update_temporary. Each
    buffer holds ``nbytes`` per element, the parameters' dtype."""
    if not sizes:
        return 0
    per_tensor = temporaries_per_tensor(optimizer, style)
    if style in ("foreach", "keras-foreach"):
        return sum(sizes[1:], sizes[0]) * nbytes * per_tensor
    return _max(list(sizes)) * nbytes * per_tensor


def temporaries_per_tensor(optimizer: str, style: str) -> int:
    """Buffers of a tensor's size that an update makes for each tensor (see :func:`update_temporary`)."""
    if optimizer not in ("adam", "adamw", "rmsprop", "adagrad") or style == "compiled":
        return 0
    if optimizer in ("adam", "adamw"):
        return {"foreach": 1, "keras-foreach": 3}.get(style, 2)
    return 1


def graph_update_temporary(optimizer: str, sizes: list, last: bool, nbytes: int = 4) -> Dim:
    """Bytes a compiled graph's update of one layer's tensors allocates while it runs (Keras on
    TensorFlow, read from the allocator's events): one buffer of the layer's largest tensor at a
    time (Adam's square, root, product in turn; elementwise ops reuse their input's buffer), and two for
    the last layer updated, whose first and second moment chains run side by side once no backward work
    is left to share the threads. The previous layer's update may still be running beside it (its
    gradients and one buffer: the memory simulation adds them). ``nbytes``: the parameters' dtype."""
    if optimizer not in ("adam", "adamw", "rmsprop", "adagrad") or not sizes:
        return 0
    chains = 2 if last and optimizer in ("adam", "adamw") else 1
    return _max(list(sizes)) * nbytes * chains


def _buffer_bytes(rows, w_bytes: int) -> Dim:
    """Bytes of torch's buffers: floating ones in the weights' dtype (``model.to(dtype)`` converts them,
    autocast leaves them 32-bit), counters at their own size."""
    total: Dim = 0
    for row in rows:
        if row.shared_with is None and row.layer is not None:
            for w in row.weights:
                if w.buffer:
                    total = total + w.numel * (w.itemsize or w_bytes)
    return total


def _memory(est, rows, needs_grad, optimizer, w_bytes, g_bytes, a_bytes, cast_bytes,
            profile=None, path: str = "torch") -> MemoryBreakdown:
    weights = est.params * w_bytes + _buffer_bytes(rows, w_bytes)
    trainable = est.trainable_params
    gradients = trainable * g_bytes
    state = trainable * OPTIMIZER_STATE_BUFFERS[optimizer] * w_bytes
    input_names = {name for name, _ in est.inputs}
    input_batch = sum(prod((est.batch_size if est.batch_size is not None else Sym._from_terms(
        {((est.batch_symbol, 1),): 1}),) + tuple(shape)) for _, shape in est.inputs) * a_bytes
    # views alias their input: a tensor saved through a view is the same storage
    alias: dict = {}
    for row in rows:
        if _aliases_input(row) and row.inbound:
            alias[(row.name, 0)] = alias.get(row.inbound[0], row.inbound[0])
    # saved tensors: the earliest layer (in forward order) that keeps each decides when it is freed
    first_saver: dict = {}
    size: dict = {}
    for i, row in enumerate(rows):
        if row.name not in needs_grad:
            continue  # no gradient flows through it (frozen, nothing trainable before it): nothing kept
        for key, nbytes in _saved(row, a_bytes, profile, path, mixed=bool(cast_bytes)):
            key = alias.get(key, key)
            if key[0] in input_names:
                if cast_bytes and row.kind != "embedding":  # autocast keeps a low-precision copy
                    key = (key[0], "cast")
                else:
                    continue  # the input batch itself is counted apart
            first_saver.setdefault(key, i)
            size[key] = nbytes
    activations = sum(size.values()) if size else 0
    # forward: everything saved so far, plus the output being written
    candidates = []
    alive: Dim = 0
    by_layer: dict = {}
    for key, i in first_saver.items():
        by_layer.setdefault(i, []).append(key)
    forward_moments = []
    for i, row in enumerate(rows):
        for key in by_layer.get(i, []):
            alive = alive + size[key]
        output = 0 if _aliases_input(row) else prod(row.output_shape) * a_bytes
        candidates.append(alive + output)
        forward_moments.append(PeakMoment("forward", row.name, (("saved activations so far", alive),
                                                                  ("its output being written", output))))
    forward_peak = _max(candidates)
    style = _update_style(profile, path)
    # autocast's 16-bit weight copies: all of them at the forward's end (its cast cache holds them until
    # the autocast region ends), then those a backward reads, each freed as its layer's backward ends:
    # a layer's input gradient is made with its weights, a first Dense's or convolution's weight
    # gradient with its input alone; recurrent and attention layers read theirs for the gradients
    # inside them (through time, between their own products) whatever their input needs
    casts = [sum(elements for elements, _ in autocast_casts(row)) * cast_bytes
             if cast_bytes and row.shared_with is None and row.layer is not None else 0 for row in rows]
    kept_casts = [c if row.kind in ("rnn", "attention", "transformer") or _reads_grad_tensor(row, needs_grad)
                  else 0 for c, row in zip(casts, rows)]
    backward_peak, backward_moment = _backward_peak(rows, needs_grad, size, by_layer, activations, optimizer,
                                                    g_bytes, a_bytes, profile, style, mixed=bool(cast_bytes),
                                                    row_casts=kept_casts)
    forward_moment = _moment_of(candidates, forward_moments)
    if forward_moment is not None and casts:
        forward_moment = replace(forward_moment, parts=forward_moment.parts + (("autocast's 16-bit weight copies",
                                                                                sum(casts)),))
    candidates = [forward_peak + sum(casts), backward_peak]
    moments = [forward_moment, backward_moment]
    if style != "compiled":  # an eager optimizer's own phase: every gradient, and what its kernels allocate
        temporary = update_temporary(optimizer, trainable_tensor_sizes(rows), style, w_bytes)
        candidates.append(gradients + temporary)
        moments.append(PeakMoment("update", None, (("every gradient", gradients), ("the update's temporaries",
                                                                                   temporary))))
    peak = weights + state + _max(candidates) + input_batch
    return MemoryBreakdown(weights, gradients, state, activations, input_batch, peak,
                           _moment_of(candidates, moments))


def _moment_of(values: list, moments: list) -> PeakMoment | None:
    """The moment of the largest of ``values`` (concrete sizes only: a symbolic batch has none)."""
    if not values or not all(type(v) is int for v in values):
        return None
    return moments[values.index(max(values))]


def _backward_peak(rows, needs_grad, size: dict, by_layer: dict, activations: Dim, optimizer: str, g_bytes: int,
                   a_bytes: int, profile, style: str, mixed: bool = False,
                   row_casts: list | None = None) -> tuple[Dim, PeakMoment | None]:
    """The highest bytes the backward pass holds beyond weights, optimizer state and the batch.

    Last layer first: saved tensors until their first saver is done (``by_layer``: the keys each row
    frees, ``size``: their bytes), the gradient coming in plus the one going out; weight gradients
    appear as their layers are reached (the step dropped the last ones: zero_grad(set_to_none=True),
    torch's default).
    """
    # a compiled graph (Keras on TensorFlow) runs each variable's update as soon as its gradient exists
    # and frees both; an eager step keeps every gradient until the optimizer runs over all of them
    in_graph = style == "compiled"
    last_updated = min((i for i, row in enumerate(rows) if _own_trainable_sizes(row)), default=-1)
    backward, moments = [], []
    alive_bwd = activations
    grads_so_far: Dim = 0
    still_updating: Dim = 0
    casts_alive = sum(row_casts) if row_casts else 0  # autocast's weight copies not yet freed
    for i in range(len(rows) - 1, -1, -1):
        row = rows[i]
        in_flight = 0 if row.kind in VIEW_KINDS else prod(row.output_shape) * a_bytes
        in_flight = in_flight + casts_alive
        if row.kind not in VIEW_KINDS and any(src in needs_grad for src, _ in row.inbound):
            in_flight = in_flight + sum(prod(s) for s in row.input_shapes) * a_bytes
        in_flight = in_flight + _backward_workspace(row, profile, mixed)
        own = _own_trainable_sizes(row)
        layer_grads = sum(own[1:], own[0]) * g_bytes if own else 0
        # a fused activation's backward runs first and is the last to read the layer's own output (and
        # pre-activation): both are freed before the input gradient is made. Its gradient is a new
        # buffer in an eager step; a graph writes it over the incoming one.
        released: Dim = 0
        if _fused_activation(row):
            out_grad = prod(row.output_shape) * a_bytes
            grads = 0 if in_graph else grads_so_far
            backward.append(alive_bwd + casts_alive + out_grad + (0 if in_graph else out_grad) + grads)
            moments.append(PeakMoment("backward", row.name, (
                ("saved activations still alive", alive_bwd), ("its activation's gradients",
                                                               out_grad + (0 if in_graph else out_grad)),
                ("autocast's weight copies", casts_alive), ("weight gradients so far", grads))))
            released = sum(size[key] for key in by_layer.get(i, []) if key[0] == row.name)
        if in_graph:
            updating = graph_update_temporary(optimizer, own, last=i == last_updated, nbytes=g_bytes)
            backward.append(alive_bwd - released + in_flight + layer_grads + updating + still_updating)
            moments.append(PeakMoment("backward", row.name, (
                ("saved activations still alive", alive_bwd - released),
                ("gradients and workspace in flight", in_flight),
                ("its weight gradients and their update", layer_grads + updating + still_updating))))
            if own:  # its update may still run while the next layer's backward and update start
                still_updating = layer_grads + graph_update_temporary(optimizer, own, last=False, nbytes=g_bytes)
        else:
            grads_so_far = grads_so_far + layer_grads
            backward.append(alive_bwd - released + in_flight + grads_so_far)
            moments.append(PeakMoment("backward", row.name, (
                ("saved activations still alive", alive_bwd - released),
                ("gradients and workspace in flight", in_flight), ("weight gradients so far", grads_so_far))))
        for key in by_layer.get(i, []):
            alive_bwd = alive_bwd - size[key]
        if row_casts:
            casts_alive = casts_alive - row_casts[i]  # its backward done: its weights' copies are freed
    if not backward:
        return 0, None
    return _max(backward), _moment_of(backward, moments)


def _max(values: list) -> Dim:
    """The largest of several sizes. With a symbolic batch each is a fixed part plus a part per
    sample; their maximum is not a polynomial, so this returns the upper bound (largest fixed part) +
    (largest per-sample part) x B, exact at B = 0 and as B grows."""
    if all(type(v) is int for v in values):
        return max(values)
    fixed, per_sample = [], []
    for v in values:
        if isinstance(v, Sym):
            zero = v.subs({s: 0 for s in v.symbols})
            fixed.append(zero)
            per_sample.append(v - zero)
        else:
            fixed.append(v)
            per_sample.append(0)
    slopes = [p.subs({s: 1 for s in p.symbols}) if isinstance(p, Sym) else p for p in per_sample]
    return max(fixed) + per_sample[slopes.index(max(slopes))]
