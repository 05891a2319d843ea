"""Step-time model: each layer call as the framework operations it launches, each timed on a device
profile (calibrated matmul rates by shape, bandwidth by size), plus the host's cost per operation.

On an asynchronous device (a GPU) the host queues work ahead, so the forward and backward take the
longer of their host and device times, and so does the optimizer update after them; on a CPU host and
device times add up. Constants that describe how torch decomposes work (operations
per layer, bytes moved by backward passes) are named here; nothing is fitted per model.
"""

from __future__ import annotations

from dataclasses import replace

from .dims import prod
from .layers.recurrent import GATES
from .training import OPTIMIZER_OPS, OPTIMIZER_TRAFFIC_BYTES, TrainingCost, _trains

VIEW_KINDS = {"flatten", "reshape", "unflatten", "permute", "view", "transpose", "unsqueeze", "squeeze",
              "identity", "expand", "index", "parameter", "size", "value_op"}
BACKWARD_BYTES_FACTOR = 1.5  # an elementwise backward reads the output gradient and a saved tensor, writes one
LOSS_OPS = 6  # loss forward and backward, and the autograd engine's start
# Host operations this model assigns to the calibration's Linear+ReLU pair (Linear: forward, dgrad,
# wgrad, autograd node; ReLU: forward, backward, node): the calibrated cost per pair is spread over them.
PAIR_OPS = 7


def step_time(cost: TrainingCost, est, rows, needs_grad, profile, mm_dtype: str, a_bytes: int,
              optimizer: str, autocast: bool = False) -> TrainingCost:
    device_total = host_ops = 0.0
    per_layer = []
    kind_host = 0.0  # host time of layers whose kind the profile calibrated directly
    for row in rows:
        dgrad = any(src in needs_grad for src, _ in row.inbound)
        seconds, ops = _row_time(row, dgrad, _trains(row), profile, mm_dtype, a_bytes, autocast)
        device_total += seconds
        calibrated = _kind_host(row, profile)
        if calibrated is None:
            host_ops += ops
        else:
            kind_host += calibrated
        per_layer.append((row.name, seconds))
    tensors = sum(1 for row in rows if row.shared_with is None for w in row.weights
                  if row.layer is not None and row.layer.trains(w))
    trainable = est.trainable_params
    if optimizer in profile.optimizer_seconds:  # measured update cost per parameter
        update = trainable * profile.optimizer_seconds[optimizer]
    else:
        update = profile.memory_seconds(trainable * OPTIMIZER_TRAFFIC_BYTES[optimizer])
    per_layer.append((f"{optimizer} update", update))
    # torch's optimizers run foreach kernels over all tensors on GPUs, a loop per tensor on CPUs
    update_ops = OPTIMIZER_OPS[optimizer] * (1 if profile.asynchronous else max(tensors, 1))
    update_host = update_ops * profile.op_overhead_s
    if profile.step_overhead_s is not None and profile.layer_overhead_s is not None:
        layers_host = max(profile.step_overhead_s - update_host, 0.0) + host_ops * profile.layer_overhead_s / PAIR_OPS
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
    return replace(cost, device=profile.name, step_seconds=step, host_seconds=host,
                   device_seconds=device_total, layer_seconds=tuple(per_layer))


def _kind_host(row, profile) -> float | None:
    """Calibrated host time of one layer of this kind (per layer of a stack, per layer and direction of an
    RNN), or None when the profile has no measurement for it."""
    if row.kind not in profile.kind_overheads:
        return None
    layer = row.layer
    repeats = 1
    if row.kind == "transformer":
        repeats = layer.num_layers * (2 if layer.decoder else 1)
    elif row.kind == "rnn":
        repeats = layer.num_layers * layer.directions
    return profile.kind_overheads[row.kind] * repeats


def _row_time(row, dgrad: bool, trains: bool, profile, mm_dtype: str, a_bytes: int,
              autocast: bool = False) -> tuple[float, float]:
    """(device seconds, host operations) of one layer call, forward and backward."""
    kind = row.kind
    if kind in VIEW_KINDS:
        return 0.0, 0.5  # views cost the host a little, the device nothing
    norm = _calibrated_norm(row, profile, mm_dtype)
    if norm is not None:
        forward, backward = norm
        return forward + (backward if dgrad or trains else 0.0), 1 + (2 if dgrad or trains else 0)
    weight_mm, act_mm, ew_bytes, ops = _decompose(row, a_bytes)
    mm = profile.matmul_seconds
    fwd = sum(mm(m, k, n, mm_dtype) for m, k, n in weight_mm + act_mm) + profile.memory_seconds(ew_bytes)
    if autocast and weight_mm:  # autocast casts each weight to 16 bits before its product: read 4, write 2
        fwd += sum(profile.memory_seconds(k * n * 6) for _, k, n in weight_mm)
        ops += len(weight_mm)
    bwd = 0.0
    bwd_ops = 0.0
    for m, k, n in weight_mm:
        if dgrad:
            bwd += mm(m, n, k, mm_dtype)
            bwd_ops += 1
        if trains:
            bwd += mm(k, m, n, mm_dtype)
            bwd_ops += 1
    if dgrad or trains:
        bwd += 2 * sum(mm(m, k, n, mm_dtype) for m, k, n in act_mm)
        bwd += profile.memory_seconds(int(ew_bytes * BACKWARD_BYTES_FACTOR))
        bwd_ops += 2 * len(act_mm) + (1 if ew_bytes else 0) + 1  # + the autograd node
    return fwd + bwd, ops + bwd_ops


def _calibrated_norm(row, profile, mm_dtype: str) -> tuple[float, float] | None:
    """(forward, backward) seconds of a batch or layer norm from the profile's measured kernels."""
    if row.kind not in ("batch_norm", "layer_norm", "group_norm", "rms_norm"):
        return None
    dtype = {"tfloat32": "float32", "float16": "bfloat16"}.get(mm_dtype, mm_dtype)
    table = profile.norms.get(dtype) or profile.norms.get("float32")
    if not table:
        return None
    entry = table.get("batch_norm" if row.kind == "batch_norm" else "layer_norm")
    if entry is None:
        return None
    numel = prod(row.output_shape)
    return (max(profile.launch_floor_s, numel * entry["forward_s_per_element"]),
            max(profile.launch_floor_s, numel * entry["backward_s_per_element"]))


def _decompose(row, a_bytes: int) -> tuple[list, list, int, float]:
    """Forward products with weights, products between activations, elementwise bytes, host ops."""
    kind, layer = row.kind, row.layer
    x = row.input_shapes[0] if row.input_shapes else ()
    out = row.output_shape
    out_n = prod(out)
    if kind == "dense":
        act = 0 if layer.activation == "linear" else 2 * out_n * a_bytes
        return [(prod(x[:-1]), x[-1], out[-1])], [], act, 1 + (1 if act else 0)
    if kind in ("conv", "separable_conv", "depthwise_conv", "conv_transpose"):
        channels_in = x[-1] if layer.channels_last else x[1]
        filters = out[-1] if layer.channels_last else out[1]
        act = 0 if layer.activation == "linear" else 2 * out_n * a_bytes
        if kind == "depthwise_conv":  # memory-bound: each output reads a small window
            return [], [], (prod(x) + out_n) * a_bytes, 1
        if kind == "conv_transpose":
            positions = prod(x) // channels_in
            return [(positions, channels_in, filters // layer.groups * prod(layer.kernel_size))], [], act, 1
        groups = getattr(layer, "groups", 1)
        positions = out_n // filters
        return [(positions, channels_in // groups * prod(layer.kernel_size), filters)], [], act, 1 + (1 if act else 0)
    if kind == "attention":
        return _attention_ops(row, a_bytes)
    if kind == "transformer":
        return _transformer_ops(row, a_bytes)
    if kind == "rnn":
        return _rnn_ops(row, a_bytes)
    if kind in ("matmul", "dot"):
        a, b = row.input_shapes
        k = a[-1]
        n = out_n // max(prod(out[:-1]), 1) if kind == "matmul" else 1
        return [], [(out_n // max(n, 1), k, n)], 0, 1
    if kind == "embedding":
        return [], [], 2 * out_n * a_bytes, 1
    # elementwise, pools, norms, merges, concatenation, padding: memory-bound passes
    passes = 3 if kind in ("batch_norm", "layer_norm", "group_norm", "rms_norm") else 1
    nbytes = (sum(prod(s) for s in row.input_shapes) + out_n) * a_bytes * passes
    return [], [], nbytes, 1


def _attention_ops(row, a_bytes: int):
    layer = row.layer
    q, k = row.input_shapes[0], row.input_shapes[1]
    b_ax, t_ax = (0, 1) if layer.batch_first else (1, 0)
    b, tq, tk, h = q[b_ax], q[t_ax], k[t_ax], layer.num_heads
    kd = layer.key_dim
    vd = kd if layer.value_dim is None else layer.value_dim
    od = row.output_shape[-1]
    weight = [(b * tq, q[-1], h * kd), (b * tk, k[-1], h * kd), (b * tk, row.input_shapes[-1][-1], h * vd),
              (b * tq, h * vd, od)]
    act = [(b * h * tq, kd, tk), (b * h * tq, tk, vd)]
    ew = 3 * b * h * tq * tk * a_bytes  # softmax read and write, dropout
    return weight, act, ew, 8


def _transformer_ops(row, a_bytes: int):
    layer = row.layer
    x = row.input_shapes[0]
    b_ax, t_ax = (0, 1) if layer.batch_first else (1, 0)
    b, t, e, f, h = x[b_ax], x[t_ax], layer.d_model, layer.dim_feedforward, layer.nhead
    hd = e // h
    weight, act = [], []
    ew = 0
    attentions = 2 if layer.decoder else 1
    for _ in range(layer.num_layers):
        for _ in range(attentions):
            weight += [(b * t, e, 3 * e), (b * t, e, e)]
            act += [(b * h * t, hd, t), (b * h * t, t, hd)]
            ew += 4 * b * h * t * t * a_bytes
        weight += [(b * t, e, f), (b * t, f, e)]
        # norms (3 passes each), residual adds, dropouts, activation
        ew += (attentions + 1) * (3 * 2 + 3 + 2) * b * t * e * a_bytes + 3 * b * t * f * a_bytes
    ops = layer.num_layers * (attentions * 10 + 12)
    return weight, act, ew, ops


def _rnn_ops(row, a_bytes: int):
    layer = row.layer
    x = row.input_shapes[0]
    b_ax, t_ax = (0, 1) if getattr(layer, "batch_first", True) else (1, 0)
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
    return weight, [], ew, layer.num_layers * layer.directions * 2
