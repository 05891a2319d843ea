"""Training memory: weights, gradients, optimizer state, saved activations and the input batch, and a
simulated peak.

The peak is a small simulation of autograd rather than a sum of guesses: tensors saved for the
backward pass are keyed by the tensor they keep (a tensor kept by several calls counts once; views alias
their input), each freed once the earliest call that keeps it is done; gradients of activations live
while in flight; weight gradients accumulate (an eager step keeps them all until the update, a compiled
graph updates each layer as its gradients exist). What each call keeps is its kind's own description
(``Layer.saved``), under the training framework's rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from paramcalc.core.dims import Dim, Sym, exact_div, prod, upper_max
from paramcalc.core.spec import dtype_bytes
from paramcalc.cost.parallel import Sharding, checkpoint_segments, chunk
from paramcalc.cost.step import (
    LOSSES,
    Step,
    owned_trainable_sizes,
    trainable_tensor_sizes,
)
from paramcalc.cost.updates import graph_update_temporary, update_temporary


@dataclass(frozen=True)
class PeakMoment:
    """When the simulated peak happens and what is alive then, beyond weights, optimizer state and the
    input batch: ``phase`` ("forward", "loss", "backward" or "update"), the layer running (None for the
    loss and the update) and (part, bytes) pairs that add up to the peak's share above those three."""

    phase: str
    layer: str | None
    parts: tuple


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes of each part of training memory; ``peak`` is the simulated maximum, input batch included;
    ``peak_moment`` says when it happens and what is alive then (None while the batch is symbolic)."""

    weights: Dim
    gradients: Dim
    optimizer: Dim
    activations: Dim  # saved for the backward pass, each tensor once
    input_batch: Dim
    peak: Dim
    peak_moment: PeakMoment | None = None
    # on several ranks (``Parallel``), per rank: parameters gathered whole beyond the rank's shards (FSDP2),
    # and communication buffers (DDP's gradient buckets); 0 on one device
    gathered: Dim = 0
    communication: Dim = 0


@dataclass(frozen=True)
class SavedTensors:
    """What the forward keeps for the backward: bytes by tensor key, and the keys each call (by position)
    is the earliest to keep, which its backward frees. ``recomputed``: keys a checkpointed module's
    forward does not keep, made again when the backward reaches it; ``recompute_at``: bytes made again
    at the backward of a call (by position), the checkpointed module's last."""

    size: dict
    freed_by: dict
    recomputed: frozenset = frozenset()
    recompute_at: dict = field(default_factory=dict)

    @property
    def total(self) -> Dim:
        """What the forward keeps, all together at its end."""
        return sum((n for key, n in self.size.items() if key not in self.recomputed), 0)

    def freed_at(self, position: int) -> list:
        return self.freed_by.get(position, [])


def training_memory(step: Step) -> MemoryBreakdown:
    """Per rank where the step runs on several (``step.parallel``): its shards, what it gathers and
    buffers for communication."""
    precision, est = step.precision, step.est
    sharding = Sharding(step.calls, step.parallel)
    per_state = precision.optimizer_bytes(step.optimizer.state_buffers)
    if sharding.fsdp:  # FSDP2: every rank keeps its shards of the parameters, gradients and state
        weights = sharding.weights_at_rest() * precision.weight_bytes + _buffer_bytes(step)
        gradients = sharding.trained_elements() * precision.gradient_bytes
    else:
        weights = est.params * precision.weight_bytes + _buffer_bytes(step)
        gradients = est.trainable_params * precision.gradient_bytes
    if sharding.ranks > 1 and step.parallel.zero >= 1:
        state = sum(sharding.updated_sizes(), 0) * per_state
    else:
        state = est.trainable_params * per_state
    gathered = sharding.gathered() * precision.weight_bytes
    buckets = sharding.bucket_elements() * precision.gradient_bytes
    batch = est.batch_size if est.batch_size is not None else Sym._from_terms({((est.batch_symbol, 1),): 1})
    input_batch = sum((prod((batch,) + tuple(shape)) * (dtype_bytes(est.input_dtypes[name]) if name in est.input_dtypes
                                                          else precision.activation_bytes)
                       for name, shape in est.inputs), 0)
    saved = saved_tensors(step)
    casts = _weight_casts(step)
    # with several micro-batches per optimizer step, the later ones run with every gradient already held
    held = gradients if sharding.parallel.accumulation > 1 else 0
    # a loss on the output: the output itself stays (the training loop holds it) through the backward
    output = prod(est.output_shape) * precision.activation_bytes if step.loss and est.output_shape else 0
    candidates = [_forward_peak(step, saved, sum(casts), sharding, held),
                  _backward_peak(step, saved, casts, sharding, held, output)]
    if step.loss:
        kept, making = LOSSES[step.loss]
        candidates.append((saved.total + sum(casts) + held + output * (1 + kept + making), PeakMoment(
            "loss", None, (("saved activations", saved.total), ("the output", output),
                           (f"what the {step.loss} loss keeps", output * kept),
                           ("the gradients its backward makes", output * making)))))
    if step.update_style != "compiled":  # an eager optimizer's own phase: every gradient, and its temporaries
        sizes = sharding.updated_sizes() if sharding.ranks > 1 else trainable_tensor_sizes(step.calls)
        temporary = update_temporary(step.optimizer.name, sizes, step.update_style, precision.weight_bytes)
        candidates.append((gradients + temporary, PeakMoment("update", None, (
            ("every gradient", gradients), ("the update's temporaries", temporary)))))
    values = [value for value, _ in candidates]
    # FSDP2's whole parameters and all-gather buffers come and go: the phases count them as they do
    peak = weights + state + (0 if sharding.fsdp else buckets) + upper_max(values) + input_batch
    return MemoryBreakdown(weights, gradients, state, saved.total, input_batch, peak,
                           _moment_of(values, [moment for _, moment in candidates]), gathered, buckets)


def _buffer_bytes(step: Step) -> Dim:
    """Bytes of torch's buffers: floating ones in the weights' dtype (``model.to(dtype)`` converts them,
    autocast leaves them 32-bit), counters at their own size."""
    total: Dim = 0
    for call in step.calls:
        if call.shared_with is None and call.layer is not None:
            for w in call.weights:
                if w.buffer:
                    total = total + w.numel * (w.itemsize or step.precision.weight_bytes)
    return total


def saved_tensors(step: Step) -> SavedTensors:
    """What every call keeps for its backward, each tensor once: views alias their input; the input batch
    is counted apart (under autocast, its 16-bit copy is kept); weights and buffers, and views of them
    (an Embedding's positions sliced from a buffer), are counted as weights; a call no gradient flows
    through keeps nothing."""
    rules = step.saving_rules
    input_names = {name for name, _ in step.est.inputs}
    alias: dict = {}
    shapes: dict = {}
    weights: set = set()
    for call in step.calls:
        for i, shape in enumerate(call.output_shapes):
            shapes[(call.name, i)] = shape
        work = step.work(call)
        if work.is_weight:
            weights.add(call.name)
        if (work.aliases_input or work.writes_input) and call.inbound:  # every output of a view (unbind's
            # q, k, v too), or of an operation that wrote its input in place
            base = alias.get(call.inbound[0], call.inbound[0])
            for i in range(len(call.output_shapes)):
                alias[(call.name, i)] = base
    first_saver: dict = {}
    savers: dict = {}  # key -> every call (by position) that keeps it
    size: dict = {}
    for i, call in enumerate(step.calls):
        if call.name not in step.needs_grad:
            continue  # frozen, or nothing trainable before it
        for key, nbytes in call.layer.saved(call, rules):
            view, key = key, alias.get(key, key)
            if key[0] in weights:
                continue
            if key[0] in input_names:
                if not (step.precision.mixed and step.work(call).float_inputs):
                    continue
                key = (key[0], "cast")
            elif view != key:  # a saved view keeps its base's whole storage
                nbytes = _storage_bytes(nbytes, shapes.get(view), shapes.get(key))
            first_saver.setdefault(key, i)
            savers.setdefault(key, []).append(i)
            size[key] = nbytes if key not in size else upper_max([size[key], nbytes])
    recomputed, recompute_at = _checkpointed(step, first_saver, savers, size, alias, input_names)
    freed_by: dict = {}
    for key, i in first_saver.items():
        freed_by.setdefault(i, []).append(key)
    return SavedTensors(size, freed_by, frozenset(recomputed), recompute_at)


def _storage_bytes(view_bytes: Dim, view_shape, base_shape) -> Dim:
    """The bytes of the storage a saved view keeps alive: its base's, at the view's bytes per element,
    whether the view shows less of it (a slice) or more (an expand repeats its elements without
    storing them)."""
    if view_shape is None or base_shape is None:
        return view_bytes
    itemsize = exact_div(view_bytes, prod(view_shape))
    if type(itemsize) is not int:
        return view_bytes
    return prod(base_shape) * itemsize


def _checkpointed(step: Step, first_saver: dict, savers: dict, size: dict, alias: dict, input_names: set) -> tuple:
    """Checkpointed modules (torch.utils.checkpoint): what their calls keep of tensors made inside is not
    kept by the forward but made again at the backward of the module's last call; every tensor a call
    inside reads from outside is kept by the checkpoint from the module's first call to its backward."""
    recomputed: set = set()
    recompute_at: dict = {}
    segments = checkpoint_segments(step.calls, step.parallel)
    for _, positions in segments:
        inside = {step.calls[j].name for j in positions}
        first, last = positions[0], positions[-1]
        again: Dim = 0
        for key, kept_by in list(savers.items()):
            if key[0] not in inside or not any(first <= i <= last for i in kept_by):
                continue
            outside = [i for i in kept_by if not first <= i <= last]
            if not outside:
                recomputed.add(key)
            else:  # kept by calls after the module too: that tensor stays; the run again makes a copy
                first_saver[key] = min(outside)
                copy = (f"recomputed {key[0]}", key)
                first_saver[copy] = min(i for i in kept_by if first <= i <= last)
                size[copy] = size[key]
                recomputed.add(copy)
            again = again + size[key]
        recompute_at[last] = recompute_at.get(last, 0) + again
    for path, positions in segments:  # what each checkpoint keeps: the tensors its module reads from outside
        inside = {step.calls[j].name for j in positions}
        first = positions[0]
        for j in positions:
            call = step.calls[j]
            if call.name not in step.needs_grad:
                continue
            for ref, shape in zip(call.inbound, call.input_shapes):
                ref = alias.get(ref, ref)
                if ref[0] in inside or ref[0] in input_names:
                    continue  # made inside; or the batch, counted apart
                if ref in first_saver and ref not in recomputed:  # kept anyway: the same storage, longer
                    first_saver[ref] = min(first_saver[ref], first)
                    continue
                key = (f"checkpoint {path}", ref)
                first_saver.setdefault(key, first)
                size[key] = prod(shape) * step.precision.activation_bytes
    return recomputed, recompute_at


def _weight_casts(step: Step) -> list:
    """Bytes of autocast's 16-bit weight copies each call makes (0 without autocast)."""
    cast_bytes = step.precision.cast_bytes
    return [sum(elements for elements, _ in step.work(call).autocast_casts) * cast_bytes
            if cast_bytes and call.shared_with is None and call.layer is not None else 0 for call in step.calls]


def _forward_peak(step: Step, saved: SavedTensors, casts: Dim, sharding: Sharding, held: Dim = 0) -> tuple:
    """The forward's highest point: everything saved so far, plus the output being written; autocast's
    weight copies all alive at its end (its cast cache holds them until the autocast region ends);
    ``held``: gradients of earlier micro-batches, alive throughout. FSDP2: each unit's parameters are
    gathered when the forward reaches it (the root's first), its flat all-gather output alive while they
    are copied out of it, and resharded after it with ``reshard_after_forward``."""
    values, moments = [], []
    alive: Dim = 0
    bytes_per = step.precision.activation_bytes
    units = _Units(step, sharding, forward=True) if sharding.fsdp else None
    gathered: Dim = 0
    current = None
    if units is not None:
        gathered, gathering = units.gather("")
        values.append(held + gathering)
        moments.append(PeakMoment("forward", None, (("the root's parameters being gathered", gathering),)))
    for i, call in enumerate(step.calls):
        for key in saved.freed_at(i):
            if key not in saved.recomputed:
                alive = alive + saved.size[key]
        if units is not None and sharding.unit_of(call) != current:
            if current:
                gathered = units.after_forward(current)
            current = sharding.unit_of(call)
            if current and current not in units.unsharded:
                before = gathered
                gathered, gathering = units.gather(current)
                values.append(alive + held + before + gathering)
                moments.append(PeakMoment("forward", call.name, (
                    ("saved activations so far", alive), ("whole parameters gathered", before),
                    ("this unit's parameters being gathered: its all-gather output and them", gathering))))
        work = step.work(call)
        output = 0 if work.aliases_input or work.writes_input else prod(call.output_shape) * bytes_per
        output = output + step.exchange_buffers(call, backward=False) * bytes_per
        values.append(alive + output + held + gathered)
        moments.append(PeakMoment("forward", call.name, (("saved activations so far", alive),
                                                          ("its output being written", output))
                                  + ((("whole parameters gathered", gathered),) if units is not None else ())
                                  + ((("gradients of the earlier micro-batches", held),) if held else ())))
    moment = _moment_of(values, moments)
    if moment is not None and casts:
        moment = replace(moment, parts=moment.parts + (("autocast's 16-bit weight copies", casts),))
    return upper_max(values) + casts, moment


@dataclass
class _Backward:
    """What the backward pass holds as it walks from the last call to the first."""

    saved_alive: Dim
    casts_alive: Dim
    gradients: Dim = 0  # weight gradients kept for the eager update
    still_updating: Dim = 0  # a compiled graph's previous layer's update, still running
    unit: str | None = None  # FSDP2: the unit whose backward runs, and its whole gradients so far
    unit_gradients: Dim = 0
    unit_shards: Dim = 0  # the shards those gradients become once reduce-scattered
    gathered: Dim = 0  # FSDP2: bytes of the whole parameters alive
    scattered: Dim = 0  # FSDP2: the last reduce-scatter's flat input, kept until the next one waits on it
    accumulating: bool = False  # gradients of earlier micro-batches are held: new ones are added into them


def _backward_peak(step: Step, saved: SavedTensors, casts: list, sharding: Sharding, held: Dim = 0,
                   output: Dim = 0) -> tuple:
    """The highest bytes the backward pass holds beyond weights, optimizer state and the batch.

    Last call first: saved tensors until their first saver is done, the gradient coming in plus the one
    going out, autocast's copies until their call's backward ends (those a backward reads: a call's
    input gradient is made with its weights, a first Dense's or convolution's weight gradient with its
    input alone; recurrent and attention layers read theirs whatever their input needs); weight
    gradients appear as their calls are reached (the step dropped the last ones:
    zero_grad(set_to_none=True), torch's default). ``held``: the gradients of earlier micro-batches of
    the same optimizer step, which each new weight gradient is added into."""
    kept = [c if step.work(call).keeps_weight_casts or step.reads_grad(call) else 0
            for c, call in zip(casts, step.calls)]
    last_updated = min((i for i, call in enumerate(step.calls) if owned_trainable_sizes(call)), default=-1)
    # ``output``: the model's output, which a loss's training loop holds to the end (counted as kept)
    state = _Backward(saved.total + output, sum(kept), gradients=held, accumulating=bool(held))
    values, moments = [], []
    units = _Units(step, sharding) if sharding.fsdp else None
    if units is not None:
        state.gathered = units.gathered_at_backward()
    for i in range(len(step.calls) - 1, -1, -1):
        state.saved_alive = state.saved_alive + saved.recompute_at.get(i, 0)  # a checkpointed module runs again
        if sharding.fsdp and sharding.unit_of(step.calls[i]) != state.unit:
            if state.unit:  # its backward done, a unit reshards its parameters, then reduce-scatters
                state.gathered = units.resharded(state.unit)
            _reduce_scatter(state, values, moments, step.calls[i].name, step.collectives_stage_copies)
            state.unit = sharding.unit_of(step.calls[i])
            entered = units.entered(state.unit)  # resharding after the forward: gathered again
            if entered:
                state.gathered, flat = entered
                values.append(state.saved_alive + state.gathered + flat + state.scattered + state.gradients)
                moments.append(PeakMoment("backward", step.calls[i].name, (
                    ("saved activations still alive", state.saved_alive),
                    ("whole parameters gathered (this unit's and the next one's, prefetched)", state.gathered),
                    ("its all-gather output, for a moment", flat),
                    ("the last reduce-scatter's input", state.scattered),
                    ("weight gradient shards so far", state.gradients))))
        for value, moment in _backward_of(step, i, saved, state, last_updated, sharding):
            values.append(value)
            moments.append(moment)
        for key in saved.freed_at(i):
            state.saved_alive = state.saved_alive - saved.size[key]
        state.casts_alive = state.casts_alive - kept[i]  # its backward done: its weights' copies are freed
    if sharding.fsdp and step.calls:
        _reduce_scatter(state, values, moments, step.calls[0].name, step.collectives_stage_copies)
    if not values:
        return 0, None
    return upper_max(values), _moment_of(values, moments)


def _backward_of(step: Step, i: int, saved: SavedTensors, state: _Backward, last_updated: int,
                 sharding: Sharding) -> list:
    """(bytes, moment) of the points of one call's backward where the peak may fall; updates ``state``'s
    weight gradients and running updates."""
    call, work = step.calls[i], step.work(step.calls[i])
    bytes_per, grad_bytes = step.precision.activation_bytes, step.precision.gradient_bytes
    # a compiled graph (Keras on TensorFlow) runs each variable's update as soon as its gradient exists and
    # frees both; an eager step keeps every gradient until the optimizer runs over all of them
    in_graph = step.update_style == "compiled"
    in_flight = (0 if work.aliases_input else prod(call.output_shape) * bytes_per) + state.casts_alive
    if not work.aliases_input and step.reads_grad(call):
        in_flight = in_flight + sum(prod(s) for s in call.input_shapes) * bytes_per
    in_flight = in_flight + call.layer.backward_workspace(call, step.saving_rules)
    in_flight = in_flight + step.exchange_buffers(call, backward=True) * bytes_per
    own = owned_trainable_sizes(call)
    layer_grads = sum(own[1:], own[0]) * grad_bytes if own else 0
    points = []
    released: Dim = 0
    if work.fused_activation not in (None, "linear"):
        # the activation's backward runs first and is the last to read the call's output (and
        # pre-activation): both are freed before the input gradient is made. Its gradient is a new
        # buffer in an eager step; a graph writes it over the incoming one.
        out_grad = prod(call.output_shape) * bytes_per
        activation_grads = out_grad + (0 if in_graph else out_grad)
        grads = 0 if in_graph else state.gradients
        points.append((state.saved_alive + state.casts_alive + activation_grads + grads, PeakMoment(
            "backward", call.name, (("saved activations still alive", state.saved_alive),
                                    ("its activation's gradients", activation_grads),
                                    ("autocast's weight copies", state.casts_alive), ("weight gradients so far", grads)))))
        released = sum(saved.size[key] for key in saved.freed_at(i) if key[0] == call.name)
    alive = state.saved_alive - released
    if in_graph:
        optimizer = step.optimizer.name
        updating = graph_update_temporary(optimizer, own, last=i == last_updated, nbytes=grad_bytes)
        held = layer_grads + updating + state.still_updating
        points.append((alive + in_flight + held, PeakMoment("backward", call.name, (
            ("saved activations still alive", alive), ("gradients and workspace in flight", in_flight),
            ("its weight gradients and their update", held)))))
        if own:  # its update may still run while the next layer's backward and update start
            state.still_updating = layer_grads + graph_update_temporary(optimizer, own, last=False, nbytes=grad_bytes)
    elif sharding.fsdp:  # its unit's gradients whole until the unit's backward ends and reduce-scatters them
        state.unit_gradients = state.unit_gradients + layer_grads
        state.unit_shards = state.unit_shards + sharding.kept_gradient(call) * grad_bytes
        points.append((alive + in_flight + state.gathered + state.scattered + state.unit_gradients + state.gradients,
                       PeakMoment("backward", call.name, (
                           ("saved activations still alive", alive), ("gradients and workspace in flight", in_flight),
                           ("whole parameters gathered", state.gathered),
                           ("the last reduce-scatter's input", state.scattered),
                           ("its unit's weight gradients, whole before their reduce-scatter", state.unit_gradients),
                           ("weight gradient shards so far", state.gradients)))))
    elif state.accumulating:  # its new gradients, until added into the held ones
        points.append((alive + in_flight + layer_grads + state.gradients, PeakMoment("backward", call.name, (
            ("saved activations still alive", alive), ("gradients and workspace in flight", in_flight),
            ("its new weight gradients", layer_grads), ("gradients of the earlier micro-batches", state.gradients)))))
    else:
        state.gradients = state.gradients + layer_grads
        points.append((alive + in_flight + state.gradients, PeakMoment("backward", call.name, (
            ("saved activations still alive", alive), ("gradients and workspace in flight", in_flight),
            ("weight gradients so far", state.gradients)))))
    return points


class _Units:
    """FSDP2's units through the backward: which hold their parameters whole. Without resharding after
    the forward every unit is whole when the backward starts; with it, only the root (FSDP2 keeps the
    root's, the backward needing them at once), and each unit is gathered again when its backward starts,
    with the next one's prefetched. A unit reshards when its backward ends, before its reduce-scatter."""

    def __init__(self, step: Step, sharding: Sharding, forward: bool = False):
        weight_bytes = step.precision.weight_bytes
        self.staged = step.collectives_stage_copies
        tensors = sharding.unit_tensors()
        self.whole = {u: sum((t.numel for t in ts), 0) * weight_bytes for u, ts in tensors.items()}
        self.flat = {u: sum((chunk(t, sharding.ranks) * sharding.ranks for t in ts), 0) * weight_bytes
                     for u, ts in tensors.items()}
        self.reshard_after_forward = step.parallel.zero == 3
        order: list = []  # the units other than the root, in the order the backward reaches them
        for call in reversed(step.calls):
            unit = sharding.unit_of(call)
            if unit and unit not in order:
                order.append(unit)
        self.order = order
        # every unit is sharded when a step starts (the last backward resharded them all)
        self.unsharded = set() if forward else {""} if self.reshard_after_forward else set(self.whole)
        self.last_flat: Dim = 0  # the last all-gather output, until the next all-gather is copied out

    def _total(self) -> Dim:
        return sum((self.whole.get(u, 0) for u in sorted(self.unsharded)), 0) + self.last_flat

    def gathered_at_backward(self) -> Dim:
        return self._total()

    def resharded(self, unit: str) -> Dim:
        self.unsharded.discard(unit)
        return self._total()

    def gather(self, unit: str) -> tuple:
        """(bytes held once ``unit`` is gathered, what its gathering holds beyond those before: its flat
        all-gather output beside gloo's staging copy of it, then beside the parameters copied out). FSDP2
        keeps the forward's last all-gather output until the next one is copied out (``all_gather_state``):
        it is held between gatherings, and for a moment beside the next."""
        self.unsharded.add(unit)
        flat = self.flat.get(unit, 0)
        gathering = flat + upper_max([flat if self.staged else 0, self.whole.get(unit, 0)])
        self.last_flat = flat
        return self._total(), gathering

    def after_forward(self, unit: str) -> Dim:
        """Bytes held after ``unit``'s forward: FSDP2 reshards it where told to (never the root)."""
        if self.reshard_after_forward and unit:
            self.unsharded.discard(unit)
        return self._total()

    def entered(self, unit: str) -> tuple | None:
        """(bytes gathered now, what its gathering holds for a moment beyond them) where the unit is
        gathered again for its backward; None where it is whole already."""
        if not unit or not self.reshard_after_forward or unit not in self.order:
            return None
        position = self.order.index(unit)
        self.unsharded |= set(self.order[position:position + 2])
        # its all-gather output goes once copied out (in the backward at once), beside gloo's staging
        # copy of it while gathered, beside the parameters while copied out
        flat, whole = self.flat.get(unit, 0), self.whole.get(unit, 0)
        return self._total(), flat + upper_max([flat if self.staged else 0, whole]) - whole


def _reduce_scatter(state: _Backward, values: list, moments: list, at: str, copies_input: bool) -> None:
    """FSDP2 ends a unit's backward: its whole gradients are copied into one flat buffer (both alive
    until the copy ends), reduce-scattered, and the rank keeps its shards. ``copies_input``: the
    collective copies the flat buffer first (gloo), beside the shards it makes."""
    if not state.unit_gradients:
        return
    values.append(state.saved_alive + state.gathered + 2 * state.unit_gradients + state.gradients)
    moments.append(PeakMoment("backward", at, (
        ("saved activations still alive", state.saved_alive), ("whole parameters gathered", state.gathered),
        ("a unit's whole gradients and their copy to reduce-scatter", 2 * state.unit_gradients),
        ("weight gradient shards so far", state.gradients))))
    if copies_input:
        values.append(state.saved_alive + state.gathered + 2 * state.unit_gradients + state.unit_shards
                      + state.gradients)
        moments.append(PeakMoment("backward", at, (
            ("saved activations still alive", state.saved_alive), ("whole parameters gathered", state.gathered),
            ("a unit's flat gradients and the collective's copy of them", 2 * state.unit_gradients),
            ("the unit's new shards", state.unit_shards), ("weight gradient shards so far", state.gradients))))
    if not state.accumulating:  # accumulating, the new shards are added into the held ones
        state.gradients = state.gradients + state.unit_shards
    # FSDP2 waits on a reduce-scatter only when the next one starts (``post_backward_rs_wait``): its flat
    # input stays until then (the one before was freed as this one started)
    state.scattered = state.unit_gradients
    state.unit_gradients = state.unit_shards = 0


def _moment_of(values: list, moments: list) -> PeakMoment | None:
    """The moment of the largest of ``values`` (concrete sizes only: a symbolic batch has none)."""
    if not values or not all(type(v) is int for v in values):
        return None
    return moments[values.index(max(values))]
