"""Calls of alike layers, read once: a decoder's 32 blocks are one class with one configuration, called
on tensors of one shape, so the calls one block's ``call()`` makes (``keras_trace``) are those of every
other, over its own weights. The first block is traced; each other block's rows are the first's,
renamed under its own name, with its own sublayers' weights and its own inputs.

Two calls are alike where the layers' classes and configurations (``get_config()`` less the name, or
where that fails the plain attributes), the
classes, configurations and weight shapes of all their sublayers in order, whether each trains, and the
calls' inputs (shapes, dtypes, which arguments are the same tensor, the other arguments) are equal: what
a layer's ``call()`` makes depends on its configuration and its inputs. A call that is not alike, or
whose rows read a tensor other than its inputs, is traced.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from paramcalc.core.graph import GraphNode

COPY = True  # off: every call traced (tests compare the two)


@dataclass(frozen=True)
class Expanded:
    """One traced call's rows, refs resolved: ``nodes`` named under ``node_name + "/"``, ``outputs`` its
    output refs, ``inputs`` the refs of its distinct input tensors, ``sublayers`` in ``_flatten_layers``
    order."""

    node_name: str
    nodes: tuple
    outputs: tuple
    inputs: tuple
    sublayers: tuple


def alike_key(operation, node, trainable: bool) -> str | None:
    """What two alike calls share (module docstring), as text; None where a configuration cannot say."""
    if not COPY:
        return None
    try:
        layers = [operation, *operation._flatten_layers(include_self=False, recursive=True)]
        parts = [(type(layer).__module__, type(layer).__qualname__, _config(layer), bool(layer.trainable),
                  tuple(tuple(w.shape) for w in layer.weights)) for layer in layers]
        tensors = list(node.input_tensors)
        ids = [id(t) for t in tensors]
        plain = node.arguments.convert(lambda v: ("tensor", ids.index(id(v))) if hasattr(v, "_keras_history") else v)
        inputs = [(tuple(t.shape), str(t.dtype)) for t in tensors]
        return repr((parts, inputs, plain, trainable))
    except Exception:  # noqa: BLE001 - a configuration or argument that cannot be compared: trace it
        return None


def _config(layer) -> object:
    """The layer's configuration less its name; where ``get_config()`` fails (KerasHub's Llama layers
    read an attribute they never set), its plain public attributes less those that name it (Keras' own
    private ones record calls, not configuration)."""
    try:
        config = dict(layer.get_config())
    except Exception:  # noqa: BLE001 - whatever the library's get_config raises
        return sorted((k, v) for k, v in vars(layer).items()
                      if _plain(v) and not k.startswith("_") and "name" not in k and "path" not in k)
    config.pop("name", None)
    return config


def _plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(map(_plain, value))
    return value is None or isinstance(value, (bool, int, float, str))


def clone(first: Expanded, builder, operation, inputs: list, node_name: str) -> list | None:
    """The rows of a call alike ``first``, added to ``builder`` under ``node_name``; its output refs.
    ``inputs``: the refs of its distinct input tensors, in order. None (and nothing added) where a row
    of ``first`` reads a tensor that is not one of its inputs."""
    old, new = f"{first.node_name}/", f"{node_name}/"
    outer = dict(zip(first.inputs, inputs))
    sublayers = [*operation._flatten_layers(include_self=False, recursive=True)]
    # rows are named by the sublayers' names, which Keras may number apart in each block
    names = {a.name: b.name for a, b in zip(first.sublayers, sublayers) if a.name != b.name}

    def renamed(name: str) -> str:
        parts = []
        for part in name[len(old):].split("/"):
            base, at, index = part.partition("@")
            parts.append(names.get(base, base) + at + index)
        return new + "/".join(parts)

    def ref(r: tuple) -> tuple | None:
        if r[0].startswith(old):
            return (renamed(r[0]),) + tuple(r[1:])
        return outer.get(r)

    owner_index = {builder.layer_names.get(id(layer)): k for k, layer in enumerate(first.sublayers)}
    nodes = []
    for n in first.nodes:
        inbound = [ref(r) for r in n.inbound]
        if any(r is None for r in inbound):
            return None
        nodes.append((renamed(n.name), n.layer, inbound))
    outputs = [ref(r) for r in first.outputs]
    if any(r is None for r in outputs):
        return None
    for name, layer, inbound in nodes:
        k = owner_index.get(layer.name)
        if k is not None:  # a sublayer's rule: the same rule over this block's sublayer
            owner = builder.layer_names.setdefault(id(sublayers[k]), name.rsplit("@", 1)[0])
            for variable in sublayers[k].weights:
                builder.owner_of_variable.setdefault(id(variable), owner)
            if owner != layer.name:  # another block's sublayer (the same layer called again keeps its rule)
                layer = builder.clones.setdefault((owner, id(layer)), replace(layer, name=owner))
        elif layer.name is not None and layer.name.startswith(old):  # an operation of the call
            layer = replace(layer, name=renamed(layer.name))
        builder.nodes.append(GraphNode(name, layer, tuple(inbound)))
    return outputs
