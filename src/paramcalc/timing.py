"""Step-time model: each layer call as the framework operations it launches, each timed on a device
profile (calibrated matmul rates by shape, bandwidth by size), plus the host's cost per operation.

On an asynchronous device (a GPU) the host queues work ahead, so the forward and backward take the
longer of their host and device times, and so does the optimizer update after them; on a CPU host and
device times add up. Constants that describe how torch decomposes work (operations
per layer, bytes moved by backward passes) are named here; nothing is fitted per model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .dims import prod
from .layers.recurrent import GATES
from .training import (OPTIMIZER_OPS, OPTIMIZER_TRAFFIC_BYTES, TrainingCost, _backward_workspace,
                       _own_trainable_sizes, _rnn_units, _trains, _update_style, _whole, autocast_casts,
                       bias_elements, temporaries_per_tensor, time_axes, trainable_tensor_sizes)

VIEW_KINDS = {"flatten", "reshape", "unflatten", "permute", "view", "transpose", "unsqueeze", "squeeze",
              "identity", "expand", "index", "parameter", "size", "value_op"}
BACKWARD_BYTES_FACTOR = 1.5  # an elementwise backward reads the output gradient and a saved tensor, writes one
LOSS_OPS = 6  # loss forward and backward, and the autograd engine's start
# Host operations this model assigns to the calibration's Linear+ReLU pair (Linear: forward, dgrad,
# wgrad, autograd node; ReLU: forward, backward, node): the calibrated cost per pair is spread over them.
PAIR_OPS = 7
# glibc's malloc maps blocks of this size and more from the kernel and returns them on free (its dynamic
# mmap threshold stops rising here): on a CPU host such tensors are paged in again every step.
MMAP_CEILING = 32 * 2**20
# Below the ceiling, the threshold rises to the largest block freed so far (from 128 KiB), and the heap is
# trimmed when twice that is free at its top: blocks of the threshold's size are paged in again and again.
MMAP_FLOOR = 128 * 2**10
# Which operand a layer's three products read transposed, by training path. Keras keeps a Dense kernel
# as (in, out): x @ W, then dy @ W^T and x^T @ dy; torch keeps (out, in): x @ W^T, then dy @ W and
# dy^T @ x. Profiles that measured a layout price it at its own rates (oneDNN under TensorFlow runs a
# transposed second operand at about half the plain rate), others at the plain ones.
_KERAS_LAYOUTS = {"forward": "plain", "input_grad": "transpose_b", "weight_grad": "transpose_a"}
PRODUCT_LAYOUTS = {"keras": _KERAS_LAYOUTS, "keras-torch": _KERAS_LAYOUTS,
                   "torch": {"forward": "transpose_b", "input_grad": "plain", "weight_grad": "transpose_a"}}


def step_time(cost: TrainingCost, est, rows, needs_grad, profile, mm_dtype: str, a_bytes: int,
              optimizer: str, autocast: bool = False, w_bytes: int = 4) -> TrainingCost:
    """The step's time on ``profile``; ``w_bytes``: bytes per weight, gradient and optimizer-state
    element (4 under mixed precision, whose variables are fp32)."""
    device_total = host_ops = 0.0
    per_layer = []
    kind_host = 0.0  # host time of layers whose kind the profile calibrated directly
    for row in rows:
        dgrad = any(src in needs_grad for src, _ in row.inbound)
        seconds, ops = _row_time(row, dgrad, _trains(row), profile, mm_dtype, a_bytes, cost.framework, autocast)
        device_total += seconds
        calibrated = _kind_host(row, profile)
        if calibrated is None:
            host_ops += ops
        else:
            kind_host += calibrated
            if autocast:  # the layer's host cost was measured without autocast: its casts come on top
                _, _, forward_casts, backward_casts = _cast_costs(row, profile)
                host_ops += forward_casts + (backward_casts if dgrad or _trains(row) else 0)
        per_layer.append((row.name, seconds))
    sizes = trainable_tensor_sizes(rows)
    trainable = est.trainable_params
    measured = profile.update_seconds(optimizer, sizes) if all(type(n) is int for n in sizes) else None
    if measured is not None:  # calibrated over tensor counts and sizes: host and device together
        update, update_host = measured, 0.0
    else:
        if optimizer in profile.optimizer_seconds:  # measured update cost per parameter
            update = trainable * profile.optimizer_seconds[optimizer]
            alone = profile.optimizer_alone_seconds.get(optimizer)
            if alone is not None:
                # measured over tensors updated side by side; the first layer's gradients come last in
                # the backward, so its update runs with nothing beside it, at the rate of one tensor alone
                last = sum(next((s for s in map(_own_trainable_sizes, rows) if s), []))
                update += last * (alone - profile.optimizer_seconds[optimizer])
        else:
            # the fp32 traffic, in the weights' dtype (its state and gradients are in it too)
            update = profile.memory_seconds(trainable * OPTIMIZER_TRAFFIC_BYTES[optimizer] * w_bytes // 4)
        if _update_style(profile, cost.framework) == "compiled":
            # A compiled step dispatches no update operation from Python: what its graph executor spends
            # per variable is in the calibrated per-layer cost (train_on_batch of Dense layers, their two
            # variables' updates included), not eager dispatches.
            update_host = 0.0
        else:
            # torch's optimizers run foreach kernels over all tensors on GPUs, a loop per tensor on CPUs
            update_ops = OPTIMIZER_OPS[optimizer] * (1 if profile.asynchronous else max(len(sizes), 1))
            update_host = update_ops * profile.op_overhead_s
    paged_seconds, largest_paged, paged_bytes = 0.0, 0, 0
    if profile.page_fault_s_per_byte and not profile.asynchronous:
        fresh_pass, fresh_update = _paged_in_blocks(rows, needs_grad, sizes, optimizer, a_bytes, profile,
                                                    cost.framework, w_bytes)
        pass_seconds, update_seconds = (sum(_page_in_seconds(b, profile) for b in blocks)
                                        for blocks in (fresh_pass, fresh_update))
        device_total += pass_seconds
        update += update_seconds
        paged_seconds = pass_seconds + update_seconds
        largest_paged = max(fresh_pass + fresh_update, default=0)
        paged_bytes = sum(fresh_pass) + sum(fresh_update)
    per_layer.append((f"{optimizer} update", update))
    if profile.step_overhead_s is not None and profile.layer_overhead_s is not None:
        fixed = profile.step_overhead_s
        if not profile.overheads_exclude_update:  # older calibrations timed whole steps, update included
            fixed = max(fixed - update_host, 0.0)
        layers_host = fixed + host_ops * profile.layer_overhead_s / PAIR_OPS
    else:
        layers_host = (host_ops + LOSS_OPS) * profile.op_overhead_s
    layers_host += kind_host
    host = layers_host + update_host
    if profile.asynchronous:
        # The host queues the forward and backward while the device runs them, then the update; the
        # update cannot start before the backward ends, so each phase takes its slower side.
        step = max(layers_host, device_total) + max(update_host, update)
    else:
        step = host + device_total + update
    device_total += update
    per_layer.sort(key=lambda item: -item[1])
    return replace(cost, device=profile.name, device_label=profile.label(), step_seconds=step, host_seconds=host,
                   device_seconds=device_total, layer_seconds=tuple(per_layer), paged_in_seconds=paged_seconds,
                   largest_paged_block=largest_paged, paged_in_bytes=paged_bytes)


def _page_in_seconds(block: int, profile) -> float:
    """What paging in a fresh block costs a CPU step. Blocks of MMAP_CEILING and more come straight from
    the kernel, at the page-in cost measured on such blocks; smaller ones are the heap's, handed back and
    taken again among the step's own tensors, at the cost per byte measured on training steps that do
    so for blocks of that size (the kernel's zeroing of each page also evicts the step's tensors from
    cache, and each block costs kernel calls of its own: 0.28-0.45 ns per byte on this project's 2-core
    host, from 4.6 MiB blocks down to 256 KiB ones, where 64 MiB blocks paged in at 0.21-0.25)."""
    return profile.page_in_seconds(block, churned=block < MMAP_CEILING)


def _paged_in_blocks(rows, needs_grad, sizes: list, optimizer: str, a_bytes: int, profile,
                     path: str, w_bytes: int = 4) -> tuple[list, list]:
    """Sizes of the fresh blocks a CPU step pages in: (forward and backward, optimizer update).

    The step's fresh blocks are forward outputs, input and weight gradients, and the update's
    temporaries (Adam's root and quotient, one for RMSprop and Adagrad). Blocks of MMAP_CEILING and more
    are paged in every time. Below it, the allocator's threshold settles at the largest block of the
    step; blocks of that size freed in the backward pass or the update are paged in again every step
    (measured on this project's CPU host: the weight gradients and Adam temporaries of an MLP's largest
    layers, the input gradients when activations are the largest blocks, and what a calibrated
    recurrent kernel keeps for its backward: one block per layer, the LSTM's largest)."""
    forward, backward = [], []
    for row in rows:
        if row.kind in VIEW_KINDS or row.layer is None:
            continue
        forward.append(prod(row.output_shape) * a_bytes)
        if any(src in needs_grad for src, _ in row.inbound):
            backward += [prod(s) * a_bytes for s in row.input_shapes]
        separate = _separate_outputs(row, path)
        forward += [prod(row.output_shape) * a_bytes] * separate.forward_blocks
        backward += [prod(row.output_shape) * a_bytes] * separate.backward_blocks
        if row.kind == "rnn" and row.layer.cell in profile.recurrent_saved:
            kept = _whole(profile.recurrent_saved[row.layer.cell]) * _rnn_units(row)
            backward += [kept] * row.layer.num_layers + [_backward_workspace(row, profile)]
    backward += [w_bytes * n for n in sizes]
    temporaries = temporaries_per_tensor(optimizer, _update_style(profile, path))
    update = [w_bytes * n for n in sizes for _ in range(temporaries)]
    threshold = max([b for b in forward + backward + update if b < MMAP_CEILING], default=0)

    def paged(block: int, again: bool) -> bool:
        return block >= MMAP_CEILING or (again and block == threshold >= MMAP_FLOOR)
    passes = [b for b in forward if paged(b, False)] + [b for b in backward if paged(b, True)]
    return passes, [b for b in update if paged(b, True)]


@dataclass(frozen=True)
class SeparateOutputs:
    """Blocks of a layer's output size that its framework makes beyond the output itself."""
    bias_add: bool = False
    forward_blocks: int = 0
    backward_blocks: int = 0


# Keras on torch runs Dense and convolutions as the product, then ops.add(bias), then the activation,
# each an eager torch operation with its own output (torch's Linear adds the bias inside its product);
# the activation's backward writes one more gradient of the output's size.
SEPARATE_BIAS_KINDS = ("dense", "conv", "separable_conv", "depthwise_conv", "conv_transpose")


def _separate_outputs(row, path: str) -> SeparateOutputs:
    if path != "keras-torch" or row.kind not in SEPARATE_BIAS_KINDS:
        return SeparateOutputs()
    bias = any(w.name == "bias" for w in row.weights)
    activation = getattr(row.layer, "activation", "linear") != "linear"
    return SeparateOutputs(bias_add=bias, forward_blocks=int(bias) + int(activation),
                           backward_blocks=int(activation))


def _kind_host(row, profile) -> float | None:
    """Calibrated host time of one layer of this kind (per layer of a stack, per layer and direction of an
    RNN), or None when the profile has no measurement for it."""
    if row.kind == "rnn" and row.layer.cell in profile.recurrent:
        return 0.0  # the measured recurrent layers' times hold their host costs
    if row.kind not in profile.kind_overheads:
        return None
    layer = row.layer
    repeats = 1
    if row.kind == "transformer":
        repeats = layer.num_layers * (2 if layer.decoder else 1)
    elif row.kind == "rnn":
        repeats = layer.num_layers * layer.directions
    return profile.kind_overheads[row.kind] * repeats


def _row_time(row, dgrad: bool, trains: bool, profile, mm_dtype: str, a_bytes: int, path: str,
              autocast: bool = False) -> tuple[float, float]:
    """(device seconds, host operations) of one layer call, forward and backward."""
    kind = row.kind
    if kind in VIEW_KINDS:
        return 0.0, 0.5  # views cost the host a little, the device nothing
    backward = dgrad or trains
    cast_fwd, cast_bwd, cast_ops, cast_bwd_ops = _cast_costs(row, profile) if autocast else (0.0, 0.0, 0, 0)
    recurrent = _calibrated_recurrent(row, profile)
    if recurrent is not None:  # measured whole, host cost included; autocast's casts come on top
        forward, back = recurrent
        if not backward:
            return forward + cast_fwd, cast_ops
        return forward + back + cast_fwd + cast_bwd, cast_ops + cast_bwd_ops
    conv = _calibrated_conv(row, dgrad, trains, profile, mm_dtype)
    if conv is not None:
        weight_mm, act_mm, ew_bytes, ops, kernels = [], [], 0, 1, _fused_activation(row)
        fwd, bwd = conv
        bwd_ops = (1 if dgrad else 0) + (1 if trains else 0)
    else:
        weight_mm, act_mm, ew_bytes, ops, kernels, cores = _decompose(row, a_bytes)
        fwd = bwd = 0.0
        bwd_ops = 0
        for core in cores:
            measured = _calibrated_attention(core, profile, mm_dtype, path)
            if measured is None:  # not calibrated: its products and per-element kernels
                act_mm, kernels = act_mm + core.products(), kernels + core.kernels()
            else:
                fwd += measured[0]
                bwd += measured[1]
    mm = profile.matmul_seconds
    layouts = PRODUCT_LAYOUTS[path]
    fwd += sum(mm(m, k, n, mm_dtype, layouts["forward"]) for m, k, n in weight_mm)
    fwd += sum(mm(m, k, n, mm_dtype) for m, k, n in act_mm)
    fwd += cast_fwd
    ops += cast_ops
    for name, elements, fallback_bytes in kernels:
        measured = profile.kernel_seconds(name, elements, mm_dtype)
        passes = int(elements * fallback_bytes * a_bytes)
        if measured is None:  # not calibrated: a memory-bound pass
            ew_bytes += passes
        else:
            # Calibrated on tensors that fit in cache: a larger one moves its bytes at memory's rate
            floor = profile.memory_seconds(passes)
            fwd += max(measured[0], floor)
            bwd += max(measured[1], profile.memory_seconds(int(passes * BACKWARD_BYTES_FACTOR)))
            bwd_ops += 1
    fwd += profile.memory_seconds(ew_bytes)
    if _separate_outputs(row, path).bias_add and row.kind not in profile.own_layers:
        # a pass of its own (read the product, write anew) unless the layer was timed whole; its
        # backward passes the gradient on
        fwd += profile.memory_seconds(2 * prod(row.output_shape) * a_bytes)
        ops += 2
    for m, k, n in weight_mm:
        if dgrad:
            bwd += mm(m, n, k, mm_dtype, layouts["input_grad"])
            bwd_ops += 1
        if trains:
            bwd += mm(*_weight_grad_product(m, k, n, path), mm_dtype, layouts["weight_grad"])
            bwd_ops += 1
    if not backward:
        return fwd, ops
    bwd += cast_bwd
    bwd_ops += cast_bwd_ops
    if trains and bias_elements(row) and conv is None:
        # the bias gradient: a reduction reading the output gradient (in a measured convolution's time)
        bwd += profile.memory_seconds(bias_elements(row) * a_bytes)
        bwd_ops += 1
    bwd += 2 * sum(mm(m, k, n, mm_dtype) for m, k, n in act_mm)
    bwd += profile.memory_seconds(int(ew_bytes * BACKWARD_BYTES_FACTOR))
    bwd_ops += 2 * len(act_mm) + (1 if ew_bytes else 0) + 1  # + the autograd node
    return fwd + bwd, ops + bwd_ops


def _cast_costs(row, profile) -> tuple[float, float, int, int]:
    """(forward seconds, backward seconds, forward operations, backward operations) of autocast's casts
    for one layer call: a pass each, 4 bytes read and 2 written per element (2 and 4 back), the
    backward only for trained tensors."""
    casts = autocast_casts(row)
    trained = [elements for elements, trains in casts if trains]
    return (sum(profile.memory_seconds(elements * 6) for elements, _ in casts),
            sum(profile.memory_seconds(elements * 6) for elements in trained), len(casts), len(trained))


def _weight_grad_product(m: int, k: int, n: int, path: str) -> tuple:
    """(rows, inner, columns) of the weight-gradient product of a layer whose forward is (m, k) @ (k, n):
    torch keeps the weight as (out, in) and makes dy^T @ x, (n, m, k); Keras keeps (in, out) and makes
    x^T @ dy, (k, m, n). The same work, but a wide input makes torch's output wide, which CPU kernels
    run at two thirds of the rate of Keras' tall one."""
    return (n, m, k) if path == "torch" else (k, m, n)


@dataclass(frozen=True)
class AttentionCore:
    """Attention between projections: scores, softmax, dropout on the probabilities, weighted values."""
    batch_heads: int
    query: int
    key: int
    head_dim: int
    value_dim: int
    dropout: bool

    def products(self) -> list:
        return [(self.batch_heads * self.query, self.head_dim, self.key),
                (self.batch_heads * self.query, self.key, self.value_dim)]

    def kernels(self) -> list:
        scores = self.batch_heads * self.query * self.key
        return [_kernel("softmax", scores)] + ([_kernel("dropout", scores)] if self.dropout else [])


def _calibrated_attention(core: AttentionCore, profile, mm_dtype: str, path: str) -> tuple[float, float] | None:
    """(forward, backward) seconds of an attention core from the profile's measured attention layers
    (torch's MultiheadAttention), or None when it has none or Keras trains (it builds attention from
    its own operations)."""
    if path != "torch":
        return None
    return profile.attention_seconds(core.batch_heads, core.query, core.key, core.head_dim, core.dropout,
                                     mm_dtype)


def _calibrated_recurrent(row, profile) -> tuple[float, float] | None:
    """(forward, backward) seconds of an RNN layer stack from the profile's measured recurrent layers:
    each layer and direction steps through time at the measured seconds per step for its work."""
    layer = row.layer
    if row.kind != "rnn" or layer.cell not in profile.recurrent:
        return None
    x = row.input_shapes[0]
    b_ax, t_ax = time_axes(layer)
    b, t = x[b_ax], x[t_ax]
    g, h = GATES[layer.cell], layer.units
    forward = backward = 0.0
    d = x[-1]
    for _ in range(layer.num_layers):
        step = profile.recurrent_step_seconds(layer.cell, 2 * b * (d + h) * g * h)
        forward += layer.directions * t * step[0]
        backward += layer.directions * t * step[1]
        d = layer.directions * h
    return forward, backward


def _calibrated_conv(row, dgrad: bool, trains: bool, profile, mm_dtype: str) -> tuple[float, float] | None:
    """(forward, backward) seconds of a dense 2-D convolution from the profile's measured convolutions;
    a backward that needs one of the two gradients (the first layer's, a frozen layer's) takes half."""
    if row.kind != "conv" or getattr(row.layer, "groups", 1) != 1 or len(row.output_shape) != 4:
        return None
    measured = profile.conv_seconds(*_conv_product(row), mm_dtype)
    if measured is None:
        return None
    forward, backward = measured
    return forward, backward * ((1 if dgrad else 0) + (1 if trains else 0)) / 2


def _channels(row) -> tuple:
    """(input channels, output channels) of a convolution, channels last or first."""
    x, out, last = row.input_shapes[0], row.output_shape, row.layer.channels_last
    return (x[-1], out[-1]) if last else (x[1], out[1])


def _conv_product(row) -> tuple:
    """The (positions, inputs per output, filters) product a convolution amounts to."""
    channels_in, filters = _channels(row)
    groups = getattr(row.layer, "groups", 1)
    return prod(row.output_shape) // filters, channels_in // groups * prod(row.layer.kernel_size), filters


# Bytes per element (in units of the activation dtype's size) a per-element kernel moves when the
# profile did not calibrate it: read and write; a norm makes three such passes.
FALLBACK_BYTES = {"relu": 2, "dropout": 2, "softmax": 2, "layer_norm": 6, "batch_norm": 6}


def _kernel(name: str, elements) -> tuple:
    return (name, elements, FALLBACK_BYTES[name])


def _fused_activation(row) -> list:
    """A Keras layer's own activation, priced like a separate one."""
    act = getattr(row.layer, "activation", "linear")
    if act == "linear":
        return []
    return [_kernel("softmax" if act == "softmax" else "relu", prod(row.output_shape))]


def _decompose(row, a_bytes: int) -> tuple[list, list, int, float, list, list]:
    """Forward products with weights, products between activations, elementwise bytes, host ops,
    per-element kernels (name, elements, bytes per element if uncalibrated), and attention cores."""
    if row.kind == "attention":
        return _attention_ops(row)
    if row.kind == "transformer":
        return _transformer_ops(row, a_bytes)
    return (*_operations(row, a_bytes), [])


def _operations(row, a_bytes: int) -> tuple[list, list, int, float, list]:
    """What :func:`_decompose` gives for layers without attention."""
    kind, layer = row.kind, row.layer
    x = row.input_shapes[0] if row.input_shapes else ()
    out = row.output_shape
    out_n = prod(out)
    if kind == "dense":
        act = _fused_activation(row)
        return [(prod(x[:-1]), x[-1], out[-1])], [], 0, 1 + len(act), act
    if kind in ("conv", "separable_conv", "depthwise_conv", "conv_transpose"):
        act = _fused_activation(row)
        if kind == "depthwise_conv":  # memory-bound: each output reads a small window
            return [], [], (prod(x) + out_n) * a_bytes, 1, act
        if kind == "conv_transpose":
            channels_in, filters = _channels(row)
            positions = prod(x) // channels_in
            return [(positions, channels_in, filters // layer.groups * prod(layer.kernel_size))], [], 0, 1, act
        return [_conv_product(row)], [], 0, 1 + len(act), act
    if kind == "rnn":
        return _rnn_ops(row, a_bytes)
    if kind in ("matmul", "dot"):
        a, b = row.input_shapes
        k = a[-1]
        n = out_n // max(prod(out[:-1]), 1) if kind == "matmul" else 1
        return [], [(out_n // max(n, 1), k, n)], 0, 1, []
    if kind == "embedding":
        return [], [], 2 * out_n * a_bytes, 1, []
    if kind == "activation":
        if layer.function == "linear":
            return [], [], 0, 1, []
        return [], [], 0, 1, [_kernel("softmax" if layer.function == "softmax" else "relu", out_n)]
    if kind == "dropout":
        return [], [], 0, 1, ([_kernel("dropout", out_n)] if layer.rate else [])
    if kind in ("batch_norm", "layer_norm", "group_norm", "rms_norm"):
        return [], [], 0, 1, [_kernel("batch_norm" if kind == "batch_norm" else "layer_norm", out_n)]
    if kind == "pool" and layer.rank == 2:  # per input element; uncalibrated, a pass over input and output
        n_in = prod(x)
        return [], [], 0, 1, [(f"{layer.op}_pool", n_in, (n_in + out_n) / n_in)]
    # elementwise, other pools, merges, concatenation, padding: memory-bound passes
    nbytes = (sum(prod(s) for s in row.input_shapes) + out_n) * a_bytes
    return [], [], nbytes, 1, []


def _attention_ops(row):
    layer = row.layer
    q, k = row.input_shapes[0], row.input_shapes[1]
    b_ax, t_ax = time_axes(layer)
    b, tq, tk, h = q[b_ax], q[t_ax], k[t_ax], layer.num_heads
    kd = layer.key_dim
    vd = kd if layer.value_dim is None else layer.value_dim
    od = row.output_shape[-1]
    weight = [(b * tq, q[-1], h * kd), (b * tk, k[-1], h * kd), (b * tk, row.input_shapes[-1][-1], h * vd),
              (b * tq, h * vd, od)]
    return weight, [], 0, 8, [], [AttentionCore(b * h, tq, tk, kd, vd, bool(layer.dropout))]


def _transformer_ops(row, a_bytes: int):
    layer = row.layer
    x = row.input_shapes[0]
    b_ax, t_ax = time_axes(layer)
    b, t, e, f, h = x[b_ax], x[t_ax], layer.d_model, layer.dim_feedforward, layer.nhead
    hd = e // h
    weight, act = [], []
    attentions = 2 if layer.decoder else 1
    tokens = b * t
    dropout = norms = 0
    cores = []
    for _ in range(layer.num_layers):
        for _ in range(attentions):
            weight += [(tokens, e, 3 * e), (tokens, e, e)]
            cores.append(AttentionCore(b * h, t, t, hd, hd, bool(layer.dropout)))
            dropout += tokens * e  # the block's output (the probabilities' dropout is the core's)
        weight += [(tokens, e, f), (tokens, f, e)]
        dropout += tokens * f + tokens * e  # the feed-forward's hidden layer and output
        norms += (attentions + 1) * tokens * e
    hidden = layer.num_layers * tokens * f
    residuals = layer.num_layers * (attentions + 1) * 3 * tokens * e * a_bytes  # two reads, one write
    kernels = [_kernel("layer_norm", norms), _kernel("relu", hidden)]
    if layer.dropout:
        kernels.append(_kernel("dropout", dropout))
    ops = layer.num_layers * (attentions * 10 + 12)
    return weight, act, residuals, ops, kernels, cores


def _rnn_ops(row, a_bytes: int):
    layer = row.layer
    x = row.input_shapes[0]
    b_ax, t_ax = time_axes(layer)
    b, t = x[b_ax], x[t_ax]
    g, h = GATES[layer.cell], layer.units
    weight = []
    d = x[-1]
    for _ in range(layer.num_layers):
        for _ in range(layer.directions):
            weight.append((b * t, d, g * h))  # the input projection of every step at once
            weight += [(b, h, g * h)] * t  # the recurrence, step by step
        d = layer.directions * h
    ew = layer.num_layers * layer.directions * t * b * (g + 2) * h * a_bytes * 2
    return weight, [], ew, layer.num_layers * layer.directions * 2, []
