"""Comparing paramcalc with the real frameworks, shared by the property tests."""

from __future__ import annotations

import math

import paramcalc


def weights_size(weights) -> int:
    return sum(math.prod(int(d) for d in w.shape) for w in weights)


def keras_shape(est, shape) -> tuple:
    return tuple(None if est.format_dim(d) == "None" else d for d in shape)


def compare_keras(model, est) -> None:
    """Every Keras layer (nested models flattened) against its paramcalc row, and the totals."""
    rows = {r.name: r for r in est.layers}
    for layer in _keras_leaves(model, ""):
        name, layer = layer
        row = rows[name]
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        got = [keras_shape(est, s) for s in row.output_shapes]
        assert got[:len(outputs)] == [tuple(o.shape) for o in outputs], name
        assert row.params == layer.count_params(), name
        assert row.trainable_params == weights_size(layer.trainable_weights), name
        assert row.non_trainable_params == weights_size(layer.non_trainable_weights), name
    assert est.params == model.count_params()
    assert est.trainable_params == weights_size(model.trainable_weights)
    assert est.non_trainable_params == weights_size(model.non_trainable_weights)


def _keras_leaves(model, prefix: str):
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        if hasattr(layer, "layers") and type(layer).__name__ in ("Sequential", "Functional"):
            yield from _keras_leaves(layer, f"{prefix}{layer.name}/")
        else:
            yield f"{prefix}{layer.name}", layer


def keras_estimate_or_reject(build, **kwargs):
    """(model, estimate) — or (None, None) when Keras and paramcalc both reject the configuration."""
    try:
        model = build()
    except (ValueError, TypeError) as keras_error:
        raise AssertionError(f"test generated an invalid Keras model: {keras_error}") from None
    return model, paramcalc.estimate(model, **kwargs)


def saved_by_autograd(torch, model, x) -> int:
    """Bytes torch's autograd keeps for ``model(x)``'s backward (its saved-tensor hooks, each storage
    once) beyond the parameters, the buffers and the input."""
    held = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), x]}
    kept: dict = {}
    alive = []  # each saved tensor until the count is done: a freed storage's address could come back

    def pack(t):
        if t.untyped_storage().data_ptr() not in held:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            alive.append(t)
        # nothing in the graph: an operation's own output kept by its graph is a C++ cycle (a leak)
        return None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):
        model(x)
    alive.clear()  # the graph holds the hook, and the hook this list: emptied, it holds no tensor
    return sum(kept.values())
