"""What autograd keeps in a forward, as saved-tensor hooks see it: the oracle for paramcalc's saved
activations (tests and benchmarks/saved_activations.py)."""

from __future__ import annotations


def kept_by_autograd(model, call, inputs=()) -> int:
    """Bytes of the storages autograd saves while ``call()`` runs ``model`` (the second time it is called),
    each once, its parameters and buffers left out (they are counted as weights); with the storages of
    ``inputs`` (the batch the training loop holds, as paramcalc's ``input_batch`` counts it, kept by
    autograd or not)."""
    import torch

    weights = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    kept: dict = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in inputs}
    # every saved tensor stays alive until the count is done: a storage freed during the forward (a branch
    # whose graph died) could otherwise leave its address to a later one, and two storages count as one
    alive = []

    def pack(t):
        storage = t.untyped_storage()
        if storage._cdata not in weights:
            kept[storage._cdata] = storage.nbytes()
            alive.append(t)
        # nothing in the graph: no backward runs, and an operation's own output kept by its graph is a
        # cycle through C++ that no collector frees (each call would leak what the forward saved)
        return None

    # a first forward may keep other tensors than the steps after it, and not the same from one process to
    # the next (ConViT-B's first kept 445.1-451.2 MB over five processes, every later one 451,208,720
    # bytes): the step counted is a second one, as a training loop's steps are
    call()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):
        call()
    alive.clear()  # the graph holds the hook, and the hook this list: emptied, it holds no tensor
    return sum(kept.values())
