"""The training cost of an estimated model: FLOPs by phase, memory by part, and step time on a device.

Pure: reads an Estimate, imports no framework. Each call's work is its kind's own description
(``paramcalc.core.work``); the modules beside this one price it without asking which kind it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from paramcalc.core.dims import Dim, Sym
from paramcalc.core.errors import ParamcalcError
from paramcalc.cost.flops import phase_flops
from paramcalc.cost.memory import MemoryBreakdown, training_memory
from paramcalc.cost.parallel import Collective, Parallel, Sharding, checkpoint_segments
from paramcalc.cost.step import LOSSES, build_step, optimizer_named, precision_named
from paramcalc.cost.tensor_parallel import megatron_plan, rank_share


@dataclass(frozen=True)
class TrainingSetup:
    """How a model trains: ``optimizer`` (None: Adam, and the estimate says so), ``precision``, the
    ``device`` (a resolved profile or None) and, for a Keras model, the ``keras_backend`` that trains it."""

    optimizer: str | None = None
    precision: str = "float32"
    device: object = None
    keras_backend: str | None = None
    parallel: object = None  # a Parallel: the cost is one rank's
    loss: str | None = None  # "cross_entropy" or "mse" on the first output; None: not counted

    DEFAULT_OPTIMIZER = "adam"

    @property
    def optimizer_name(self) -> str:
        return self.optimizer or self.DEFAULT_OPTIMIZER


@dataclass(frozen=True)
class TrainingCost:
    """Per training step (one batch): FLOPs by phase, memory by part, and predicted time."""

    batch_size: Dim
    optimizer: str
    precision: str
    forward_flops: Dim
    dgrad_flops: Dim
    wgrad_flops: Dim
    memory: MemoryBreakdown
    device: str | None = None  # the profile's name
    device_label: str | None = None  # the same, with the machine a CPU profile describes
    step_seconds: float | None = None
    host_seconds: float | None = None
    device_seconds: float | None = None
    layer_seconds: tuple = field(default=(), compare=False)  # (layer name, seconds) by cost
    layer_flops: tuple = field(default=(), compare=False)  # (layer name, forward, dgrad, wgrad) in order
    paged_in_seconds: float = 0.0  # CPU hosts: the step's time paging in fresh blocks
    largest_paged_block: int = 0  # bytes of the largest of those blocks
    paged_in_bytes: int = 0  # bytes of those blocks, all together
    framework: str = "torch"  # whose training step the memory follows (step.training_framework)
    parallel: object = None  # the Parallel the cost is one rank's of (None: one device)
    collectives: tuple = ()  # cost.parallel.Collective of one optimizer step on that rank
    recompute_flops: Dim = 0  # the forward of checkpointed modules, run again in the backward
    communication_seconds: float | None = None  # the step's collectives on the interconnect, all of them
    exposed_communication_seconds: float | None = None  # what the compute does not hide (in step_seconds)
    communication_link: str | None = None  # "within a node" or "between nodes"

    @property
    def flops(self) -> Dim:
        return self.forward_flops + self.dgrad_flops + self.wgrad_flops + self.recompute_flops

    @property
    def samples_per_second(self) -> float | None:
        if self.step_seconds is None or type(self.batch_size) is not int:
            return None
        return self.batch_size / self.step_seconds

    def epoch_seconds(self, samples: int) -> float | None:
        """Time for one pass over ``samples`` samples (the last batch may be partial)."""
        if self.step_seconds is None or type(self.batch_size) is not int or self.batch_size == 0:
            return None
        steps = -(-samples // self.batch_size)
        return steps * self.step_seconds

    def to_dict(self) -> dict:
        def v(x: Any) -> Any:
            return x if x is None or isinstance(x, (int, float, str)) else str(x)
        m = self.memory
        return {"batch_size": v(self.batch_size), "optimizer": self.optimizer, "precision": self.precision,
                "framework": self.framework,
                "flops": {"forward": v(self.forward_flops), "dgrad": v(self.dgrad_flops),
                          "wgrad": v(self.wgrad_flops), "recompute": v(self.recompute_flops),
                          "total": v(self.flops)},
                "memory_bytes": {"weights": v(m.weights), "gradients": v(m.gradients),
                                 "optimizer": v(m.optimizer), "activations": v(m.activations),
                                 "input_batch": v(m.input_batch), "gathered": v(m.gathered),
                                 "communication": v(m.communication), "peak": v(m.peak)},
                "parallel": None if self.parallel is None else {
                    "label": self.parallel.label, "data": self.parallel.data, "zero": self.parallel.zero,
                    "accumulation": self.parallel.accumulation,
                    "collectives": [{"name": c.name, "calls": c.calls, "payload_bytes": v(c.payload),
                                     "sent_bytes": v(c.sent), "purpose": c.purpose} for c in self.collectives]},
                "peak_moment": None if m.peak_moment is None else {
                    "phase": m.peak_moment.phase, "layer": m.peak_moment.layer,
                    "parts": [{"part": label, "bytes": v(nbytes)} for label, nbytes in m.peak_moment.parts]},
                "device": self.device, "step_seconds": self.step_seconds,
                "communication_seconds": self.communication_seconds,
                "exposed_communication_seconds": self.exposed_communication_seconds,
                "samples_per_second": self.samples_per_second,
                "slowest_layers": [{"layer": n, "seconds": s} for n, s in self.layer_seconds[:5]],
                "layer_flops": [{"layer": n, "forward": v(f), "dgrad": v(d), "wgrad": v(w)}
                                for n, f, d, w in self.layer_flops]}


def training_cost(est, *, optimizer: str = "adam", precision: str = "float32", device: object = None,
                  batch_size: object = None, keras_backend: str | None = None, parallel=None,
                  loss: str | None = None) -> TrainingCost:
    """Training FLOPs, memory and (with ``device``) step time of an Estimate.

    Sizes other than the batch must be concrete (``est.subs(n=...)`` first); an unset batch gives FLOPs
    and memory as formulas in ``B`` (with a device, by its rules) and no step time, which needs a
    concrete batch. Memory follows the framework that trains: for a Keras model, ``keras_backend``
    ("tensorflow", "jax" or "torch") when the device profile does not say. With ``parallel`` (a
    :class:`~paramcalc.cost.parallel.Parallel`), memory and collectives are one rank's (the fullest), and
    the step time adds what the compute does not hide of the collectives' time on the profile's
    interconnect (``cost/communication.py``; untimed where the profile knows none).
    """
    chosen_optimizer, chosen_precision = optimizer_named(optimizer), precision_named(precision)
    if batch_size is not None:
        est = est.subs({est.batch_symbol: batch_size})
    others = est.symbols - {est.batch_symbol}
    if others:
        raise ParamcalcError(f"training cost needs concrete sizes; substitute {', '.join(sorted(others))} first "
                             f"(est.subs({sorted(others)[0]}=...))", value=sorted(others))
    profile = None
    if device is not None:
        from paramcalc.cost.devices import resolve

        profile = resolve(device)
    if parallel is not None and not isinstance(parallel, Parallel):
        raise ParamcalcError(f"parallel must be a paramcalc.Parallel, received {type(parallel).__name__}",
                             value=parallel, fix="pass parallel=paramcalc.Parallel(data=8, zero=3)")
    exchanges: tuple = ()
    if parallel is not None and parallel.tensor_plan == "auto":
        parallel = _with_plan_found(est, parallel)
    if parallel is not None and parallel.tensor > 1:
        est, exchanges = rank_share(est, parallel)  # one tensor-parallel rank's share of the model
    if loss not in LOSSES:
        raise ParamcalcError(f"loss must be one of {', '.join(repr(k) for k in LOSSES)}, received {loss!r}",
                             value=loss, fix='pass loss="cross_entropy" (classification, language models) or "mse"')
    step = build_step(est, chosen_optimizer, chosen_precision, profile, keras_backend, parallel, exchanges, loss)
    if parallel is not None and step.framework == "keras":
        raise ParamcalcError("parallel= models torch's DDP, ZeroRedundancyOptimizer and FSDP2; this Keras model "
                             "trains as a compiled TensorFlow or JAX step, whose distribution strategies differ",
                             value=parallel.label, fix='train it on Keras\' torch backend (keras_backend="torch"), '
                             "or leave parallel out")
    per_call = [(call.name, *phase_flops(step, call)) for call in step.calls]
    forward, dgrad, wgrad = (sum(row[i] for row in per_call) for i in (1, 2, 3))
    batch = est.batch_size if est.batch_size is not None else Sym._from_terms({((est.batch_symbol, 1),): 1})
    collectives = () if parallel is None else Sharding(step.calls, parallel).collectives(
        chosen_precision.gradient_bytes, chosen_precision.weight_bytes)
    if exchanges:
        collectives += _tensor_collectives(step, parallel, exchanges)
    again = {i for _, positions in checkpoint_segments(step.calls, parallel) for i in positions}
    recompute = sum((per_call[i][1] for i in sorted(again)), 0)
    cost = TrainingCost(batch, optimizer, precision, forward, dgrad, wgrad, training_memory(step),
                        layer_flops=tuple(per_call), framework=step.framework, parallel=parallel,
                        collectives=collectives, recompute_flops=recompute)
    if profile is None:
        return cost
    cost = replace(cost, device=profile.name, device_label=profile.label())
    if type(est.batch_size) is not int:  # memory as a formula in B, by the device's rules; no time yet
        return cost
    from paramcalc.cost.timing import step_time

    time = step_time(step)
    cost = replace(cost, step_seconds=time.step_seconds, host_seconds=time.host_seconds,
                   device_seconds=time.device_seconds, layer_seconds=time.layer_seconds,
                   paged_in_seconds=time.paged_in_seconds, largest_paged_block=time.largest_paged_block,
                   paged_in_bytes=time.paged_in_bytes)
    if collectives:
        from paramcalc.cost.communication import communication_time

        share = cost.forward_flops / cost.flops if cost.flops else 0.5  # the forward's part of the compute
        comm = communication_time(collectives, parallel, profile, time.step_seconds * share,
                                  time.step_seconds * (1 - share))
        if comm is not None:
            cost = replace(cost, step_seconds=time.step_seconds + comm.exposed, communication_seconds=comm.seconds,
                           exposed_communication_seconds=comm.exposed, communication_link=comm.link)
    return cost


def _with_plan_found(est, parallel: Parallel) -> Parallel:
    plan = megatron_plan(est, parallel.tensor, parallel.sequence) if parallel.tensor > 1 else {}
    if parallel.tensor > 1 and not plan:
        raise ParamcalcError(f"tensor_plan=\"auto\" found no Linear layers in '{est.name}' whose split a rowwise "
                             "Linear ends (Megatron's pairs)", value="auto",
                             fix='name the layers: tensor_plan={"mlp.fc": "colwise", "mlp.proj": "rowwise"}')
    return replace(parallel, tensor_plan=plan)


def _tensor_collectives(step, parallel, exchanges: tuple) -> tuple:
    """Tensor parallelism's collectives of one optimizer step, per rank, by kind (every micro-batch has
    them); those that carry an input gradient only where the call makes one."""
    rows = {row.name: row for row in step.est.layers}
    t, k = parallel.tensor, parallel.accumulation
    found: dict = {}
    for e in exchanges:
        if e.for_input_gradient and not step.reads_grad(rows[e.call]):
            continue
        calls, elements, phases = found.get(e.name, (0, 0, set()))
        found[e.name] = (calls + 1, elements + e.elements, phases | {"backward" if e.backward else "forward"})
    out = []
    for name, (calls, elements, phases) in found.items():
        payload = elements * step.precision.activation_bytes * k
        sent = (2 if name == "all_reduce" else 1) * (t - 1) * payload // t
        out.append(Collective(name, calls * k, payload, sent, f"tensor parallel ({' and '.join(sorted(phases))}): "
                              + _TENSOR_PURPOSES[name]))
    return tuple(out)


_TENSOR_PURPOSES = {"all_reduce": "rowwise layers' outputs, colwise layers' input gradients",
                    "all_gather": "sequence-split inputs of colwise layers, output gradients of rowwise layers",
                    "reduce_scatter": "rowwise layers' outputs along the sequence, input gradients of colwise "
                                      "layers"}


def autocast_casts(call) -> tuple:
    """(elements, trained) of each weight tensor torch's autocast casts to 16 bits for one call."""
    return call.layer.work(call).autocast_casts
