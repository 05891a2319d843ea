"""Step-time model: each call as the framework operations it launches (its kind's ``Work``), each timed on
a device profile (calibrated matmul rates by shape, bandwidth by size, kernels, convolutions, recurrent
and attention layers where measured), plus the host's cost per operation.

On an asynchronous device (a GPU) the host queues work ahead, so the forward and backward take the
longer of their host and device times, and so does the optimizer update after them; on a CPU host and
device times add up. Constants that describe how frameworks decompose work are named here; nothing is
fitted per model.
"""

from __future__ import annotations

from dataclasses import dataclass

from paramcalc.core.dims import prod
from paramcalc.core.work import Kernel, kernel
from paramcalc.cost.paging import MMAP_CEILING, bias_added_apart, paged_in_blocks
from paramcalc.cost.parallel import checkpoint_segments
from paramcalc.cost.step import Step, owned_trainable_sizes, trainable_tensor_sizes

BACKWARD_BYTES_FACTOR = 1.5  # an elementwise backward reads the output gradient and a saved tensor, writes one
LOSS_OPS = 6  # loss forward and backward, and the autograd engine's start
# Host operations this model assigns to the calibration's Linear+ReLU pair (Linear: forward, dgrad,
# wgrad, autograd node; ReLU: forward, backward, node): the calibrated cost per pair is spread over them.
PAIR_OPS = 7
CAST_BYTES_PER_ELEMENT = 6  # an autocast cast reads 4 bytes and writes 2 per element (2 and 4 back)
# Which operand a layer's three products read transposed, by framework. Keras keeps a Dense kernel as
# (in, out): x @ W, then dy @ W^T and x^T @ dy; torch keeps (out, in): x @ W^T, then dy @ W and dy^T @ x.
# Profiles that measured a layout price it at its own rates, others at the plain ones.
_KERAS_LAYOUTS = {"forward": "plain", "input_grad": "transpose_b", "weight_grad": "transpose_a"}
PRODUCT_LAYOUTS = {"keras": _KERAS_LAYOUTS, "keras-torch": _KERAS_LAYOUTS,
                   "torch": {"forward": "transpose_b", "input_grad": "plain", "weight_grad": "transpose_a"}}


@dataclass(frozen=True)
class StepTime:
    """What the model predicts a step costs: seconds overall, on the host and on the device, each call's
    (name, seconds) by cost, and the CPU's paged-in blocks."""

    step_seconds: float
    host_seconds: float
    device_seconds: float
    layer_seconds: tuple
    paged_in_seconds: float = 0.0
    largest_paged_block: int = 0
    paged_in_bytes: int = 0


@dataclass(frozen=True)
class CallTime:
    """One call's device seconds, the host operations it launches, and host seconds of a calibrated kind."""

    device: float
    host_ops: float
    host_seconds: float | None = None


def step_time(step: Step) -> StepTime:
    """The step's time on ``step.profile``."""
    profile = step.profile
    calls = [_call_time(step, call) for call in step.calls]
    device = sum(c.device for c in calls)
    host_ops = sum(c.host_ops for c in calls)
    for _, positions in checkpoint_segments(step.calls, step.parallel):  # their forward, run again
        for i in positions:
            again, ops = _forward_device(step, step.calls[i])
            device += again
            host_ops += ops
    kind_host = sum(c.host_seconds or 0.0 for c in calls)
    loss = _loss_time(step)
    device += loss
    update, update_host = _update_time(step)
    paged = _paging(step)
    device += paged[1]
    update += paged[2]
    layers_host = _layers_host(profile, host_ops, update_host) + kind_host
    host = layers_host + update_host
    if profile.asynchronous:
        # the host queues the forward and backward while the device runs them, then the update; the
        # update cannot start before the backward ends, so each phase takes its slower side
        total = max(layers_host, device) + max(update_host, update)
    else:
        total = host + device + update
    per_call = [(call.name, c.device) for call, c in zip(step.calls, calls)]
    if step.loss:
        per_call.append((f"{step.loss} loss", loss))
    per_call.append((f"{step.optimizer.name} update", update))
    per_call.sort(key=lambda item: -item[1])
    return StepTime(total, host, device + update, tuple(per_call), paged[1] + paged[2], paged[3], paged[0])


def _layers_host(profile, host_ops: float, update_host: float) -> float:
    """Host seconds of the forward and backward: a calibrated step and per-pair cost, else per operation."""
    if profile.step_overhead_s is None or profile.layer_overhead_s is None:
        return (host_ops + LOSS_OPS) * profile.op_overhead_s
    fixed = profile.step_overhead_s
    if not profile.overheads_exclude_update:  # older calibrations timed whole steps, update included
        fixed = max(fixed - update_host, 0.0)
    return fixed + host_ops * profile.layer_overhead_s / PAIR_OPS


def _loss_time(step: Step) -> float:
    """Device seconds of the loss on the first output, forward and backward: cross-entropy runs a
    log-softmax over the output and its backward (the softmax kernel), MSE a pass over the output and
    one back."""
    est = step.est
    if not step.loss or not est.output_shape:
        return 0.0
    elements = prod(est.output_shape)
    pass_over = kernel("softmax" if step.loss == "cross_entropy" else "pass", elements)
    return sum(kernel_seconds(step.profile, pass_over, step.precision.product_dtype, step.precision.activation_bytes))


def _update_time(step: Step) -> tuple[float, float]:
    """(device, host) seconds of the optimizer update."""
    profile, optimizer = step.profile, step.optimizer
    sizes = trainable_tensor_sizes(step.calls)
    measured = profile.update_seconds(optimizer.name, sizes) if all(type(n) is int for n in sizes) else None
    if measured is not None:  # calibrated over tensor counts and sizes: host and device together
        return measured, 0.0
    trainable = step.est.trainable_params
    if optimizer.name in profile.optimizer_seconds:  # measured update cost per parameter
        per_param = profile.optimizer_seconds[optimizer.name]
        update = trainable * per_param
        alone = profile.optimizer_alone_seconds.get(optimizer.name)
        if alone is not None:
            # measured over tensors updated side by side; the first layer's gradients come last in the
            # backward, so its update runs with nothing beside it, at the rate of one tensor alone
            last = sum(next((s for s in map(owned_trainable_sizes, step.calls) if s), []))
            update += last * (alone - per_param)
    else:  # the float32 traffic, in the weights' dtype (its state and gradients are in it too)
        update = profile.memory_seconds(trainable * optimizer.traffic_bytes * step.precision.weight_bytes // 4)
    if step.update_style == "compiled":
        # a compiled step dispatches no update operation from Python: what its graph executor spends per
        # variable is in the calibrated per-layer cost (train_on_batch of Dense layers), not eager dispatches
        return update, 0.0
    # torch's optimizers run foreach kernels over all tensors on GPUs, a loop per tensor on CPUs
    update_ops = optimizer.update_ops * (1 if profile.asynchronous else max(len(sizes), 1))
    return update, update_ops * profile.op_overhead_s


def _paging(step: Step) -> tuple[int, float, float, int]:
    """(bytes, seconds in the passes, seconds in the update, largest block) of the fresh blocks a CPU step
    pages in; nothing on a device without a measured page-in cost."""
    profile = step.profile
    if not profile.page_fault_s_per_byte or profile.asynchronous:
        return 0, 0.0, 0.0, 0
    in_passes, in_update = paged_in_blocks(step)
    seconds = [sum(page_in_seconds(b, profile) for b in blocks) for blocks in (in_passes, in_update)]
    return sum(in_passes) + sum(in_update), seconds[0], seconds[1], max(in_passes + in_update, default=0)


def page_in_seconds(block: int, profile) -> float:
    """What paging in a fresh block costs a CPU step. Blocks of MMAP_CEILING and more come straight from
    the kernel, at the page-in cost measured on such blocks; smaller ones are the heap's, handed back and
    taken again among the step's own tensors, at the cost per byte measured on training steps that do so
    for blocks of that size (the kernel's zeroing of each page also evicts the step's tensors from cache,
    and each block costs kernel calls of its own)."""
    return profile.page_in_seconds(block, churned=block < MMAP_CEILING)


# -- one call -------------------------------------------------------------------------------------------------
def _call_time(step: Step, call) -> CallTime:
    """Device seconds and host cost of one call, forward and backward."""
    work = step.work(call)
    device, ops = _call_device(step, call, work)
    calibrated = _calibrated_host(work, step.profile)
    if calibrated is None:
        return CallTime(device, ops)
    extra_ops = 0.0
    if step.precision.mixed:  # the kind's host cost was measured without autocast: its casts come on top
        _, _, forward_casts, backward_casts = cast_costs(work, step.profile)
        extra_ops = forward_casts + (backward_casts if step.reads_grad(call) or step.trains(call) else 0)
    return CallTime(device, extra_ops, calibrated)


def _calibrated_host(work, profile) -> float | None:
    """Calibrated host time of one call's layers of this family (per layer of a stack, per layer and
    direction of an RNN), or None when the profile has no measurement for it."""
    if work.recurrent is not None and work.recurrent.cell in profile.recurrent:
        return 0.0  # the measured recurrent layers' times hold their host costs
    if work.family not in profile.kind_overheads:
        return None
    return profile.kind_overheads[work.family] * work.host_repeats


def _call_device(step: Step, call, work) -> tuple[float, float]:
    """(device seconds, host operations) of one call, forward and backward."""
    if work.device_free:
        return 0.0, work.host_ops
    dgrad, trains = step.reads_grad(call), step.trains(call)
    casts = cast_costs(work, step.profile) if step.precision.mixed else (0.0, 0.0, 0, 0)
    recurrent = _calibrated_recurrent(work, step.profile)
    if recurrent is not None:  # measured whole, host cost included; autocast's casts come on top
        forward, backward = recurrent
        if not (dgrad or trains):
            return forward + casts[0], casts[2]
        return forward + backward + casts[0] + casts[1], casts[2] + casts[3]
    timing = _Timing(step, call, work, dgrad, trains)
    return timing.total(casts)


def _forward_device(step: Step, call) -> tuple[float, float]:
    """(device seconds, host operations) of one call's forward alone: a checkpointed module's calls run
    it again in the backward."""
    work = step.work(call)
    if work.device_free:
        return 0.0, work.host_ops
    casts = cast_costs(work, step.profile) if step.precision.mixed else (0.0, 0.0, 0, 0)
    recurrent = _calibrated_recurrent(work, step.profile)
    if recurrent is not None:
        return recurrent[0] + casts[0], casts[2]
    return _Timing(step, call, work, False, False).total(casts)


class _Timing:
    """The device seconds of a call's decomposed work, forward then backward, and the operations it
    launches."""

    def __init__(self, step: Step, call, work, dgrad: bool, trains: bool) -> None:
        self.step, self.call, self.work, self.dgrad, self.trains = step, call, work, dgrad, trains
        self.profile, self.dtype = step.profile, step.precision.product_dtype
        self.bytes_per = step.precision.activation_bytes
        self.layouts = PRODUCT_LAYOUTS[step.framework]
        self.forward = self.backward = 0.0
        self.ops, self.backward_ops = work.host_ops, 0
        self.weight_products, self.activation_products, self.kernels = [], [], list(work.kernels)
        self.state_products: list = []
        self.memory_bytes = 0

    def total(self, casts: tuple) -> tuple[float, float]:
        self._decompose()
        mm = self.profile.matmul_seconds
        self.forward += sum(mm(m, k, n, self.dtype, self.layouts["forward"])
                            for m, k, n in self.weight_products + self.state_products)
        self.forward += sum(mm(m, k, n, self.dtype) for m, k, n in self.activation_products)
        self.forward += casts[0]
        self.ops += casts[2]
        self._kernels()
        self.forward += self.profile.memory_seconds(self.memory_bytes)
        if bias_added_apart(self.step, self.work) and self.work.family not in self.profile.own_layers:
            # a pass of its own (read the product, write anew) unless the layer was timed whole; its
            # backward passes the gradient on
            self.forward += self.profile.memory_seconds(2 * prod(self.call.output_shape) * self.bytes_per)
            self.ops += 2
        self._weight_gradients()
        if not (self.dgrad or self.trains):
            return self.forward, self.ops
        self._backward_rest(casts)
        return self.forward + self.backward, self.ops + self.backward_ops

    def _decompose(self) -> None:
        """Products, kernels and memory passes, or the measured convolution and attention cores."""
        work, profile = self.work, self.profile
        conv = _calibrated_conv(work, self.dgrad, self.trains, profile, self.dtype)
        if conv is not None:
            self.forward, self.backward = conv
            self.ops = 1
            self.backward_ops = int(self.dgrad) + int(self.trains)
            self.conv_timed = True
            return
        self.conv_timed = False
        self.weight_products = list(work.weight_products)
        self.state_products = list(work.state_products)
        self.activation_products = list(work.activation_products)
        self.memory_bytes = work.memory_elements * self.bytes_per
        for core in work.attention:
            measured = _calibrated_attention(core, profile, self.dtype, self.step.framework)
            if measured is None:  # not calibrated: its products and per-element kernels
                self.activation_products += core.products()
                self.kernels += core.kernels()
            else:
                self.forward += measured[0]
                self.backward += measured[1]

    def _kernels(self) -> None:
        for each in self.kernels:
            measured = calibrated(self.profile, each, self.dtype)
            if measured is None:  # a memory-bound pass, priced with the call's other passes
                self.memory_bytes += int(each.elements * each.fallback_bytes * self.bytes_per)
                continue
            forward, backward = _bounded(self.profile, each, measured, self.bytes_per)
            self.forward += forward
            self.backward += backward
            self.backward_ops += 1

    def _weight_gradients(self) -> None:
        mm = self.profile.matmul_seconds
        products = [(*p, False) for p in self.weight_products] + [(*p, True) for p in self.state_products]
        for m, k, n, on_state in products:
            if self.dgrad or (on_state and self.trains):  # a recurrence's state gradient feeds its weights
                self.backward += mm(m, n, k, self.dtype, self.layouts["input_grad"])
                self.backward_ops += 1
            if self.trains:
                self.backward += mm(*weight_grad_product(m, k, n, self.step.framework), self.dtype,
                                    self.layouts["weight_grad"])
                self.backward_ops += 1

    def _backward_rest(self, casts: tuple) -> None:
        profile = self.profile
        self.backward += casts[1]
        self.backward_ops += casts[3]
        if self.trains and self.work.bias_elements and not self.conv_timed:
            # the bias gradient: a reduction reading the output gradient (in a measured convolution's time)
            self.backward += profile.memory_seconds(self.work.bias_elements * self.bytes_per)
            self.backward_ops += 1
        self.backward += 2 * sum(profile.matmul_seconds(m, k, n, self.dtype) for m, k, n in self.activation_products)
        self.backward += profile.memory_seconds(int(self.memory_bytes * BACKWARD_BYTES_FACTOR))
        # the activation products' two gradients, the memory pass's, and the autograd node
        self.backward_ops += 2 * len(self.activation_products) + (1 if self.memory_bytes else 0) + 1


def calibrated(profile, each: Kernel, dtype: str) -> tuple[float, float] | None:
    """(forward, backward) seconds the profile measured for a kernel, or for its stand-in; None if neither."""
    measured = profile.kernel_seconds(each.name, each.elements, dtype)
    if measured is None and each.stand_in is not None:
        measured = profile.kernel_seconds(each.stand_in, each.elements, dtype)
    return measured


def kernel_seconds(profile, each: Kernel, dtype: str, bytes_per: int) -> tuple[float, float]:
    """(forward, backward) seconds of a per-element kernel: as calibrated, but no faster than moving its
    bytes (it was measured on tensors that fit in cache); uncalibrated, its passes at the copy bandwidth."""
    return _bounded(profile, each, calibrated(profile, each, dtype) or (0.0, 0.0), bytes_per)


def _bounded(profile, each: Kernel, measured: tuple, bytes_per: int) -> tuple[float, float]:
    passes = int(each.elements * each.fallback_bytes * bytes_per)
    return (max(measured[0], profile.memory_seconds(passes)),
            max(measured[1], profile.memory_seconds(int(passes * BACKWARD_BYTES_FACTOR))))


def cast_costs(work, profile) -> tuple[float, float, int, int]:
    """(forward seconds, backward seconds, forward operations, backward operations) of autocast's casts for
    one call: a pass each, the backward only for trained tensors."""
    trained = [elements for elements, trains in work.autocast_casts if trains]
    return (sum(profile.memory_seconds(elements * CAST_BYTES_PER_ELEMENT) for elements, _ in work.autocast_casts),
            sum(profile.memory_seconds(elements * CAST_BYTES_PER_ELEMENT) for elements in trained),
            len(work.autocast_casts), len(trained))


def weight_grad_product(m: int, k: int, n: int, framework: str) -> tuple:
    """(rows, inner, columns) of the weight-gradient product of a layer whose forward is (m, k) @ (k, n):
    torch keeps the weight as (out, in) and makes dy^T @ x, (n, m, k); Keras keeps (in, out) and makes
    x^T @ dy, (k, m, n). The same work, but a wide input makes torch's output wide, which CPU kernels run
    at two thirds of the rate of Keras' tall one."""
    return (n, m, k) if framework == "torch" else (k, m, n)


def _calibrated_attention(core, profile, dtype: str, framework: str) -> tuple[float, float] | None:
    """(forward, backward) seconds of an attention core from the profile's measured attention layers
    (torch's MultiheadAttention), or None when it has none or Keras trains (it builds attention from its
    own operations)."""
    if framework != "torch":
        return None
    return profile.attention_seconds(core.batch_heads, core.query, core.key, core.head_dim, core.dropout, dtype)


def _calibrated_recurrent(work, profile) -> tuple[float, float] | None:
    """(forward, backward) seconds of a recurrent stack from the profile's measured recurrent layers: each
    layer and direction steps through time at the measured seconds per step for its work."""
    stack = work.recurrent
    if stack is None or stack.cell not in profile.recurrent:
        return None
    forward = backward = 0.0
    for features in stack.layer_inputs():
        per_step = profile.recurrent_step_seconds(stack.cell, stack.step_work(features))
        forward += stack.directions * stack.steps * per_step[0]
        backward += stack.directions * stack.steps * per_step[1]
    return forward, backward


def _calibrated_conv(work, dgrad: bool, trains: bool, profile, dtype: str) -> tuple[float, float] | None:
    """(forward, backward) seconds of a dense 2-D convolution from the profile's measured convolutions; a
    backward that needs one of the two gradients (the first layer's, a frozen layer's) takes half."""
    if work.conv is None:
        return None
    measured = profile.conv_seconds(*work.conv, dtype)
    if measured is None:
        return None
    forward, backward = measured
    return forward, backward * (int(dgrad) + int(trains)) / 2
