"""An estimate's rows gathered by the user's module tree, as torchinfo shows a torch model.

A torch model read by running its forward has one row per ATen operation; a user thinks in the modules
they wrote (``transformer.h.0.attn``). Each row knows the module it ran in (``LayerRow.module``); a
module's row here sums everything its subtree ran, down to a depth, as torchinfo's ``depth`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from paramcalc.core.dims import Dim


@dataclass(frozen=True)
class ModuleRow:
    """One module of the tree: the parameters and work of every row run inside it, its submodules' included.

    ``name``: the module's path (``transformer.h.0``); ``depth``: how many levels below the model it is
    (1 for its children); ``output_shape``: that of the last row run inside it; ``layers``: the names of
    the rows it gathers.
    """

    name: str
    type: str
    depth: int
    output_shape: tuple
    params: Dim
    trainable_params: Dim
    non_trainable_params: Dim
    buffers: Dim
    macs: Dim
    flops: Dim
    macs_per_batch: Dim
    flops_per_batch: Dim
    layers: tuple


_SUMMED = ("params", "trainable_params", "non_trainable_params", "buffers", "macs", "flops", "macs_per_batch",
           "flops_per_batch")


def module_rows(est, depth: int) -> tuple:
    """The rows of ``est`` gathered by module down to ``depth`` levels, parents before their children."""
    if type(depth) is not int or depth < 1:
        raise ValueError(f"depth must be an int >= 1 (1: the model's children); received {depth!r}")
    types = dict(est.modules)
    gathered: dict = {}  # path -> dict of the figures and layers so far
    for row in est.layers:
        if row.module == "" and row.params == 0 and row.flops_per_batch == 0:
            continue  # a view or copy in the model's own forward: nothing to show at any depth
        parts = _path(row).split(".")
        for level in range(1, min(depth, len(parts)) + 1):
            path = ".".join(parts[:level])
            entry = gathered.get(path)
            if entry is None:
                own = level == len(parts) and row.module is None  # a row that is its own module (Keras, fx)
                entry = gathered[path] = {"type": types.get(path) or (row.type if own else ""), "depth": level,
                                          "layers": [], **{key: 0 for key in _SUMMED}}
            for key in _SUMMED:
                entry[key] = entry[key] + getattr(row, key)
            entry["layers"].append(row.name)
            if row.inbound or "output_shape" not in entry:  # a weight read is not what a module returns
                entry["output_shape"] = row.output_shape
    return tuple(ModuleRow(name=path, type=e["type"], depth=e["depth"], output_shape=e["output_shape"],
                           layers=tuple(e["layers"]), **{key: e[key] for key in _SUMMED})
                 for path, e in gathered.items())


def _path(row) -> str:
    """The module a row belongs to; rows of the model's own forward, and rows of models without a module
    tree, stand for themselves."""
    return row.module if row.module else row.name
