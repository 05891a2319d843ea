"""What an optimizer's update allocates while it runs, by how the framework runs it (``Step.update_style``)."""

from __future__ import annotations

from paramcalc.core.dims import Dim, upper_max

# optimizers whose update makes temporaries: Adam's denominator (sqrt of the second moment, divided, plus
# eps), RMSprop's and Adagrad's square roots
ROOT_OPTIMIZERS = ("adam", "adamw", "rmsprop", "adagrad")
ADAM = ("adam", "adamw")


def temporaries_per_tensor(optimizer: str, style: str) -> int:
    """Buffers of a tensor's size that an update makes for each tensor: foreach kernels one per tensor
    (Keras' Adam on torch three lists alive at once: m x alpha, sqrt(v) + eps, their quotient), torch's
    per-tensor loop Adam two (the root, then the quotient); a compiled graph updates in the backward
    (:func:`graph_update_temporary`)."""
    if optimizer not in ROOT_OPTIMIZERS or style == "compiled":
        return 0
    if optimizer in ADAM:
        return {"foreach": 1, "keras-foreach": 3}.get(style, 2)
    return 1


def update_temporary(optimizer: str, sizes: list, style: str = "foreach", nbytes: int = 4) -> Dim:
    """Bytes of the buffers an eager update allocates and frees over tensors of ``sizes`` elements, each of
    ``nbytes`` per element (the parameters' dtype): foreach kernels make them for every tensor at once,
    the per-tensor loop for one tensor at a time."""
    if not sizes:
        return 0
    per_tensor = temporaries_per_tensor(optimizer, style)
    if style in ("foreach", "keras-foreach"):
        return sum(sizes[1:], sizes[0]) * nbytes * per_tensor
    return upper_max(list(sizes)) * nbytes * per_tensor


def graph_update_temporary(optimizer: str, sizes: list, last: bool, nbytes: int = 4) -> Dim:
    """Bytes a compiled graph's update of one layer's tensors allocates while it runs (Keras on
    TensorFlow, read from the allocator's events): one buffer of the layer's largest tensor at a time
    (Adam's square, root, product in turn; elementwise ops reuse their input's buffer), and two for the
    last layer updated, whose first and second moment chains run side by side once no backward work is
    left to share the threads. The previous layer's update may still be running beside it (its
    gradients and one buffer: the memory simulation adds them)."""
    if optimizer not in ROOT_OPTIMIZERS or not sizes:
        return 0
    chains = 2 if last and optimizer in ADAM else 1
    return upper_max(list(sizes)) * nbytes * chains
