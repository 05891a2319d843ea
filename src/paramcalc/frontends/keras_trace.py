"""A live Keras layer's ``call()`` run on symbolic tensors, so that the layer and operation calls it
makes are recorded as Keras records a functional model's.

Keras builds a functional model by running each layer's ``call()`` on ``KerasTensor`` placeholders:
every sublayer called and every ``keras.ops`` function applied to one records a node, as the model's own
layers do. A layer class paramcalc has no rule for (a Transformer block written as a subclass of
``keras.layers.Layer``) is mostly made of such calls; running its ``call()`` the same way, on fresh
placeholders shaped as one call's inputs, gives them as a graph that ``frontends/keras_live.py`` reads
like a nested model. Keras itself never does this for a layer it calls (it infers the layer's output by
running ``call()`` on the backend's own symbolic tensors, which record nothing), so the nodes this adds
to the layer's sublayers are taken away again: the user's model is left as it was.
"""

from __future__ import annotations

import re
from contextlib import contextmanager


@contextmanager
def traced_call(operation, node, has_rule, stand_in: tuple | None = None):
    """(the distinct input tensors of ``node``, in order; a fresh placeholder for each, made by no layer;
    the flattened outputs of ``operation.call`` run on the placeholders with ``node``'s other
    arguments). The sublayers' node lists are put back on exit: read the graph inside the ``with``.

    A sublayer without a rule (``has_rule(layer)`` false) infers its outputs here by running its own
    ``call()`` on the placeholders too, where Keras would trace it into a backend graph (TensorFlow's
    tracing costs milliseconds per layer, and each level of nesting would pay it again); one with a rule
    does so first, and takes Keras' way where that fails. A layer Keras infers from its
    ``compute_output_shape`` (no tracing) keeps Keras' way, and runs its ``call()`` where that fails
    (KerasHub's CachedMultiHeadAttention passes Keras' inference a ``cache`` argument it does not take).

    ``stand_in``: (batch, other size) the placeholders take for the sizes ``node`` leaves free (None)."""
    import keras

    layers = [operation, *operation._flatten_layers(include_self=False, recursive=True)]
    patched = [layer for layer in layers[1:] if "compute_output_spec" not in vars(layer)]
    failures: list[str] = []  # Keras rewrites the message of an error raised inside a layer call
    for layer in patched:
        traced_by_keras = getattr(type(layer).compute_output_shape, "_is_default", False)
        layer.compute_output_spec = (_or_keras if has_rule(layer) else _by_symbolic_call)(layer, failures) \
            if traced_by_keras else _or_symbolic_call(layer, failures)
    try:
        originals = list({id(t): t for t in node.input_tensors}.values())
        fresh = [keras.KerasTensor(_sizes(t.shape, stand_in), dtype=t.dtype, sparse=bool(getattr(t, "sparse", False)))
                 for t in originals]
        args, kwargs = node.arguments.fill_in({id(t): f for t, f in zip(originals, fresh)})
        with _nodes_kept(layers):
            try:
                outputs = operation.call(*args, **kwargs)
            except SublayerFails:
                raise SublayerFails(failures[0]) from None
            yield originals, fresh, keras.tree.flatten(outputs)
    finally:
        for layer in patched:
            del layer.compute_output_spec


def _sizes(shape: tuple, stand_in: tuple | None) -> tuple:
    if stand_in is None:
        return tuple(shape)
    return tuple(stand_in[0 if axis == 0 else 1] if size is None else size for axis, size in enumerate(shape))


# what a layer call records on a layer besides its nodes: whether it was called, and its parent's path
_CALL_STATE = ("_called", "_parent_path")


@contextmanager
def _nodes_kept(layers: list):
    """The layers' node lists and call state as they were on entry, again on exit."""
    lengths = [(layer, len(layer._inbound_nodes), len(layer._outbound_nodes)) for layer in layers]
    states = [(layer, {k: vars(layer)[k] for k in _CALL_STATE if k in vars(layer)}) for layer in layers]
    try:
        yield
    finally:
        for layer, inbound, outbound in lengths:
            del layer._inbound_nodes[inbound:]
            del layer._outbound_nodes[outbound:]
        for layer, state in states:
            vars(layer).update(state)


class SublayerFails(Exception):
    """A sublayer without a rule whose ``call()`` fails on placeholders: it cannot be read as the calls it
    makes, so neither can the layer calling it (which is then not traced further: Keras' own inference
    of the sublayer's outputs would cost more than the whole estimate)."""


def _by_symbolic_call(layer, failures: list):
    """``layer.compute_output_spec`` as its ``call()`` run on the placeholders it is given (Keras' own
    where it hands back an input, whose history the call's node would overwrite); SublayerFails where
    the call fails."""
    import keras

    original = layer.compute_output_spec

    def compute_output_spec(*args, **kwargs):
        given = {id(t) for t in keras.tree.flatten((args, kwargs))}
        try:  # the nodes the call adds inside are not the graph's: the layer's call is one node there
            with _nodes_kept(layer._flatten_layers(include_self=False, recursive=True)):
                outputs = layer.call(*args, **kwargs)
        except SublayerFails:
            raise
        except Exception as err:  # noqa: BLE001 - whatever its code raises on placeholders
            failures.append(f"its sublayer {layer.name} ({type(layer).__name__}) fails on symbolic tensors "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})")
            raise SublayerFails(failures[-1]) from None
        flat = keras.tree.flatten(outputs)
        if not all(type(t).__name__ == "KerasTensor" for t in flat):
            failures.append(f"its sublayer {layer.name} ({type(layer).__name__}) returns values that are not tensors")
            raise SublayerFails(failures[-1])
        return outputs if not given.intersection(map(id, flat)) else original(*args, **kwargs)

    return compute_output_spec


def _or_symbolic_call(layer, failures: list):
    """``layer.compute_output_spec`` as Keras has it, or where that fails (KerasHub's
    CachedMultiHeadAttention passes Keras' inference a ``cache`` argument it does not take) its
    ``call()`` run on the placeholders."""
    original, by_call = layer.compute_output_spec, _by_symbolic_call(layer, failures)

    def compute_output_spec(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except Exception:  # noqa: BLE001 - Keras' own inference failed: the layer's code says instead
            return by_call(*args, **kwargs)

    return compute_output_spec


def _or_keras(layer, failures: list):
    """``layer.compute_output_spec`` as its ``call()`` run on the placeholders, or Keras' own where that
    fails: a layer with a rule, whose inner calls are not read, need not be traced into a backend graph."""
    original, by_call = layer.compute_output_spec, _by_symbolic_call(layer, failures)

    def compute_output_spec(*args, **kwargs):
        try:
            return by_call(*args, **kwargs)
        except SublayerFails:
            del failures[-1:]  # not the reason of any refusal: Keras' way instead
            return original(*args, **kwargs)

    return compute_output_spec


def weights_of_their_own(operation, has_rule) -> list:
    """(layer, weight) for each weight of ``operation`` that a layer without a rule (``has_rule(layer)``
    false) holds itself rather than through a sublayer: its ``call()`` reads it with its own code, so the
    call cannot be read as layer calls paramcalc has rules for (the expansion is refused before it is
    run)."""
    found, stack = [], [operation]
    while stack:
        layer = stack.pop()
        if has_rule(layer):
            continue
        sublayers = layer._flatten_layers(include_self=False, recursive=False)
        theirs = {id(v) for sub in sublayers for v in sub.weights}
        found += [(layer, v) for v in layer.weights if id(v) not in theirs]
        stack.extend(sublayers)
    return found


def snake_case(class_name: str) -> str:
    """``ExpandDims`` -> ``expand_dims``: the name Keras gives an operation, without its process-wide
    counter (which would make two estimates of one model name their rows differently)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", class_name).lower()
