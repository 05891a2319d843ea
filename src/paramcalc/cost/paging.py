"""Fresh pages a training step on a CPU host touches: the blocks glibc's malloc hands back to the kernel
and maps again, priced by the step-time model as ``paged_in_seconds``."""

from __future__ import annotations

from paramcalc.core.dims import prod
from paramcalc.core.work import whole_bytes
from paramcalc.cost.step import LOSSES, Step, trainable_tensor_sizes
from paramcalc.cost.updates import temporaries_per_tensor

# glibc's malloc maps blocks of this size and more from the kernel and returns them on free (its dynamic
# mmap threshold stops rising here): on a CPU host such tensors are paged in again every step.
MMAP_CEILING = 32 * 2**20
# Below the ceiling, the threshold rises to the largest block freed so far (from 128 KiB, or from where the
# process's earlier frees left it: a calibration measures that after a first training step), and the heap is
# trimmed when twice that is free at its top: blocks of the step's largest size are paged in again and
# again once, freed together, they reach that much.
MMAP_FLOOR = 128 * 2**10


def paged_in_blocks(step: Step) -> tuple[list, list]:
    """Sizes of the fresh blocks a CPU step pages in: (forward and backward, optimizer update).

    The step's fresh blocks are forward outputs, input and weight gradients, what the loss keeps and
    the gradients its backward makes, and the update's temporaries. Blocks of MMAP_CEILING and more are
    paged in every time. Below it, blocks of the step's largest size freed in the backward pass or the
    update (the weight gradients and Adam temporaries of an MLP's largest layers, the input gradients
    when activations are the largest blocks, and what a calibrated recurrent kernel keeps for its
    backward: one block per layer) are paged in again every step when, freed together, they reach
    glibc's trim threshold, twice its mmap threshold: the larger of that largest block and where the
    process starts the threshold (``profile.mmap_threshold``, measured after a first training step;
    glibc's 128 KiB where not measured). The backward's such blocks count together, the update's one
    tensor's temporaries at a time. Fewer, the heap keeps them."""
    forward, backward = _pass_blocks(step)
    if step.loss and step.est.output_shape:  # what the loss keeps, and the gradients its backward makes
        kept, making = LOSSES[step.loss]
        output = prod(step.est.output_shape) * step.precision.activation_bytes
        forward += [output] * kept
        backward += [output] * making
    sizes = trainable_tensor_sizes(step.calls)
    weight_bytes = step.precision.weight_bytes
    backward += [weight_bytes * n for n in sizes]
    temporaries = temporaries_per_tensor(step.optimizer.name, step.update_style)
    update = [weight_bytes * n for n in sizes for _ in range(temporaries)]
    largest = max([b for b in forward + backward + update if b < MMAP_CEILING], default=0)
    trim = 2 * max(MMAP_FLOOR, step.profile.mmap_threshold, largest)
    # the backward's blocks are freed together (the gradients when the next step drops them); the
    # update frees each tensor's temporaries before it starts on the next tensor
    backward_trimmed = largest >= MMAP_FLOOR and sum(b for b in backward if b == largest) >= trim
    update_trimmed = largest >= MMAP_FLOOR and largest in update and temporaries * largest >= trim

    def paged(block: int, trimmed: bool) -> bool:
        return block >= MMAP_CEILING or (trimmed and block == largest)
    passes = [b for b in forward if paged(b, False)] + [b for b in backward if paged(b, backward_trimmed)]
    return passes, [b for b in update if paged(b, update_trimmed)]


def _pass_blocks(step: Step) -> tuple[list, list]:
    """Blocks the forward and the backward allocate, call by call."""
    forward, backward = [], []
    bytes_per = step.precision.activation_bytes
    profile = step.profile
    for call in step.calls:
        work = step.work(call)
        if work.device_free:
            continue
        output = prod(call.output_shape) * bytes_per
        forward.append(output)
        if step.reads_grad(call):
            backward += [prod(s) * bytes_per for s in call.input_shapes]
        separate = separate_outputs(step, work)
        forward += [output] * separate[0]
        backward += [output] * separate[1]
        stack = work.recurrent
        if stack is not None and stack.cell in profile.recurrent_saved:
            kept = whole_bytes(profile.recurrent_saved[stack.cell]) * stack.units_per_layer
            backward += [kept] * stack.layers + [call.layer.backward_workspace(call, step.saving_rules)]
    return forward, backward


def separate_outputs(step: Step, work) -> tuple[int, int]:
    """Blocks of a call's output size that its framework makes beyond the output itself, (forward,
    backward): Keras on torch runs a product with a bias as the product, then ops.add(bias), then the
    activation, each an eager torch operation with its own output (torch's Linear adds the bias inside
    its product); the activation's backward writes one more gradient of the output's size."""
    if step.framework != "keras-torch" or not work.fused_bias:
        return 0, 0
    activation = int(work.fused_activation not in (None, "linear"))
    return int(bias_added_apart(step, work)) + activation, activation


def bias_added_apart(step: Step, work) -> bool:
    """Whether the framework adds the call's bias in an operation of its own (Keras on torch)."""
    return step.framework == "keras-torch" and work.fused_bias and work.has_bias
