"""Training on several devices with data parallelism: what each rank holds and what it communicates.

``Parallel`` says how a step is spread, as torch spreads it:

- ``zero=0``: ``DistributedDataParallel``. Every rank holds the whole model, its gradients and optimizer
  state; gradients are all-reduced in buckets, and unless ``gradient_as_bucket_view=True`` the buckets
  are flat buffers of their own, as large as every trained gradient together.
- ``zero=1``: ``ZeroRedundancyOptimizer`` over DDP. Each parameter tensor's optimizer state lives on one
  rank only (torch assigns whole tensors, largest first, each to the rank holding least so far); after
  its update, each rank broadcasts the tensors it owns.
- ``zero=2`` and ``zero=3``: FSDP2 ``fully_shard`` with ``reshard_after_forward`` off and on. Every
  parameter is split on its first axis into ``data`` equal chunks (padded: rank 0 holds
  ceil(rows / data) rows), and so are its gradients and optimizer state. The forward all-gathers the
  parameters; with resharding (stage 3) it frees them after each unit and the backward gathers them
  again, without it (stage 2) they stay whole until the backward ends. Gradients are reduce-scattered.
  ``units`` names the modules given their own ``fully_shard`` (a Transformer's blocks): each is gathered
  alone; the root unit holds every parameter outside them. With stage 3, a unit's parameters are whole
  from its all-gather to the end of its forward (and its backward), with the next unit prefetched.

``checkpointed`` names the modules run under ``torch.utils.checkpoint`` (per layer or per block): their
forward keeps only the tensors they read from outside, and the backward runs them again (what they keep
comes back then, one module at a time) before going through them.

``tensor`` and ``tensor_plan`` add tensor parallelism (``cost/tensor_parallel.py``): each tensor-parallel
group of ``tensor`` ranks splits the Linear layers the plan names, and the calls between them (attention
by heads) work on their parts; ``data`` counts the groups. ``tensor_plan="auto"`` finds Megatron's plan in
the model (``tensor_parallel.megatron_plan``): the estimate's ``training.parallel`` holds the plan found. ``sequence=True`` adds sequence parallelism:
what lies outside the split layers works on 1/``tensor`` of the sequence.

``nodes``: how many nodes the ranks span (unset: as few as hold them); the step's collectives are timed on
the device profile's links within a node and its network between nodes (``cost/communication.py``).

``batch_size`` in an estimate is each rank's micro-batch; ``accumulation`` micro-batches make one
optimizer step (DDP under ``no_sync`` communicates once per step; FSDP2 by default reduce-scatters and,
resharding, gathers at every micro-batch).

Collective bytes are the payloads torch hands its process group, per rank and optimizer step, and what a
ring moves for them: an all-reduce of S bytes sends 2 (N-1)/N S from each rank, an all-gather or
reduce-scatter of a full size S sends (N-1)/N S, and broadcasts of S bytes in all, pipelined along the
ring, (N-1)/N S on average.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from paramcalc.core.dims import Dim, prod
from paramcalc.core.errors import ParamcalcError

DDP_BUCKET_MIB = 25  # torch's bucket_cap_mb default


@dataclass(frozen=True)
class Parallel:
    """How a training step is spread over ``data`` ranks (see the module's text for each stage).

    >>> import paramcalc
    >>> model = paramcalc.Sequential([paramcalc.Dense(1000), paramcalc.Dense(10)])
    >>> est = paramcalc.estimate(model, input_shape=(1000,), batch_size=32,
    ...                          parallel=paramcalc.Parallel(data=8, zero=3))
    >>> est.training.memory.optimizer  # Adam's two buffers of rank 0's padded eighth of each tensor
    1011016
    """

    data: int = 1
    zero: int = 0
    accumulation: int = 1
    gradient_as_bucket_view: bool = False
    units: tuple = ()
    checkpointed: tuple = ()
    tensor: int = 1
    tensor_plan: dict = field(default_factory=dict, hash=False)
    sequence: bool = False
    nodes: int | None = None

    def __post_init__(self) -> None:
        for name in ("data", "accumulation"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ParamcalcError(f"Parallel({name}=...) must be a positive integer, received {value!r}",
                                     value=value, fix=f"pass {name}=1 or more")
        if self.zero not in (0, 1, 2, 3):
            raise ParamcalcError(f"Parallel(zero=...) is a ZeRO stage, 0 to 3; received {self.zero!r}",
                                 value=self.zero, fix="0: DDP, 1: ZeroRedundancyOptimizer, 2 and 3: FSDP2 "
                                 "fully_shard with reshard_after_forward off and on")
        if self.nodes is not None and (type(self.nodes) is not int or not 1 <= self.nodes <= self.data * self.tensor):
            raise ParamcalcError(f"Parallel(nodes=...) must be a positive integer no larger than the ranks "
                                 f"({self.data * self.tensor}), received {self.nodes!r}", value=self.nodes,
                                 fix="leave nodes unset: as few nodes as hold the ranks (the profile's devices per node)")
        if type(self.tensor) is not int or self.tensor < 1:
            raise ParamcalcError(f"Parallel(tensor=...) must be a positive integer, received {self.tensor!r}",
                                 value=self.tensor, fix="pass tensor=1 or more")
        plan = "auto" if self.tensor_plan == "auto" else dict(self.tensor_plan)
        bad = [] if plan == "auto" else [(path, style) for path, style in plan.items() if not isinstance(path, str)
               or style not in ("colwise", "rowwise")]
        if bad:
            raise ParamcalcError(f"Parallel(tensor_plan=...) maps module paths to \"colwise\" or \"rowwise\", received "
                                 f"{bad[0]!r}", value=bad[0], fix='e.g. tensor_plan={"mlp.fc": "colwise", '
                                 '"mlp.proj": "rowwise"}, as parallelize_module takes ColwiseParallel and RowwiseParallel')
        if self.tensor > 1 and not plan:
            raise ParamcalcError(f"Parallel(tensor={self.tensor}) needs a tensor_plan: which Linear layers split how",
                                 value=self.tensor, fix='pass tensor_plan={"mlp.fc": "colwise", "mlp.proj": "rowwise"}')
        if self.sequence is not False and (self.sequence is not True or self.tensor == 1):
            raise ParamcalcError(f"Parallel(sequence=...) turns on sequence parallelism beside tensor parallelism: "
                                 f"True with tensor=2 or more, received sequence={self.sequence!r} with "
                                 f"tensor={self.tensor}", value=self.sequence,
                                 fix='pass tensor=t, tensor_plan={...}, sequence=True')
        if self.tensor > 1 and self.zero >= 2:
            raise ParamcalcError("FSDP2 with tensor parallelism (a 2-D mesh) is not modelled yet", value=self.zero,
                                 fix="use zero=0 or 1 with tensor parallelism, or tensor=1 with FSDP2")
        object.__setattr__(self, "tensor_plan", plan)
        for name in ("units", "checkpointed"):
            paths = getattr(self, name)
            if isinstance(paths, str) or not all(isinstance(u, str) for u in paths):
                raise ParamcalcError(f"Parallel({name}=...) is a tuple of module paths, received {paths!r}",
                                     value=paths, fix=f'e.g. {name}=("transformer.h.0", "transformer.h.1")')
            object.__setattr__(self, name, tuple(paths))

    @property
    def label(self) -> str:
        kind = {0: "DDP", 1: "ZeRO-1 (ZeroRedundancyOptimizer)", 2: "ZeRO-2 (FSDP2, no reshard after forward)",
                3: "ZeRO-3 (FSDP2)"}[self.zero]
        extra = f", {self.accumulation} micro-batches per step" if self.accumulation > 1 else ""
        if self.tensor > 1:
            extra += f", tensor parallel over {self.tensor}" + (" with sequence parallelism" if self.sequence else "")
        if self.checkpointed:
            extra += f", {len(self.checkpointed)} module{'s' if len(self.checkpointed) > 1 else ''} checkpointed"
        return f"{kind} over {self.data} ranks{extra}"


@dataclass(frozen=True)
class Collective:
    """One kind of collective in a step, for one rank: how many calls, the bytes handed to them
    (``payload``: an all-reduce's buffer, an all-gather's or reduce-scatter's whole output or input,
    a broadcast's tensors) and the bytes a ring sends from this rank for them (``sent``)."""

    name: str
    calls: int
    payload: Dim
    sent: Dim
    purpose: str


@dataclass(frozen=True)
class Tensor:
    """A weight tensor as the ranks share it: its shape, whether it trains, and the module it is in."""

    shape: tuple
    trainable: bool
    module: str

    @property
    def numel(self) -> Dim:
        return prod(self.shape)


def weight_tensors(calls) -> list:
    """Every weight tensor once (a shared layer's later calls and tied weights are another's), buffers
    apart: they are replicated, never sharded."""
    tensors = []
    for call in calls:
        if call.shared_with is not None or call.layer is None:
            continue
        stored = list(call.layer.stored_shapes)
        for position, w in enumerate(call.weights):
            if w.buffer or position in call.layer.tied:
                continue
            tensors.append(Tensor(_as_stored(tuple(w.shape), stored), call.layer.trains(w), call.module or call.name))
    return tensors


def _as_stored(shape: tuple, stored: list) -> tuple:
    """The weight's shape as the framework stores it: the first stored shape with the same sizes (taken,
    so that each is used once); the kind's own where the front-end recorded none."""
    for i, candidate in enumerate(stored):
        if sorted(candidate, key=str) == sorted(shape, key=str):
            return stored.pop(i)
    return shape


def chunk(tensor: Tensor, ranks: int) -> Dim:
    """Elements of rank 0's FSDP2 shard of a tensor: its first axis split in ``ranks`` padded chunks."""
    if not tensor.shape:
        return 1
    rows = tensor.shape[0]
    return -(-rows // ranks) * prod(tensor.shape[1:])


def zero1_owned(tensors: list, ranks: int) -> list:
    """Elements each rank updates under ZeroRedundancyOptimizer: whole tensors, largest first, each to the
    rank holding least so far (ties: the lowest rank), as torch partitions them."""
    loads = [0] * ranks
    owned: list = [[] for _ in range(ranks)]
    for numel in sorted((t.numel for t in tensors if t.trainable), reverse=True):
        rank = loads.index(min(loads))
        loads[rank] += numel
        owned[rank].append(numel)
    return owned


class Sharding:
    """What one rank holds of the model's state under ``parallel`` (the fullest rank: rank 0 for FSDP2's
    padded chunks, the most loaded for ZeroRedundancyOptimizer). With one rank or ``parallel=None``
    everything is whole, as on one device."""

    def __init__(self, calls, parallel: Parallel | None) -> None:
        self.parallel = parallel or Parallel()
        self.ranks = self.parallel.data
        self._calls = calls
        self.fsdp = self.parallel.zero >= 2 and self.ranks > 1

    @cached_property
    def tensors(self) -> list:
        """Every weight tensor once (read only where the rank's share differs from the whole model)."""
        return weight_tensors(self._calls)

    def _elements(self, tensors) -> Dim:
        if self.fsdp:
            return sum((chunk(t, self.ranks) for t in tensors), 0)
        return sum((t.numel for t in tensors), 0)

    def weights_at_rest(self) -> Dim:
        """Parameter elements a rank keeps between steps (FSDP2: its shards)."""
        return self._elements(self.tensors)

    def trained_elements(self) -> Dim:
        """Gradient elements a rank keeps to the update."""
        return self._elements([t for t in self.tensors if t.trainable])

    def updated_sizes(self) -> list:
        """Elements of each tensor (or shard) this rank's optimizer updates."""
        trained = [t for t in self.tensors if t.trainable]
        if self.parallel.zero == 1 and self.ranks > 1:
            owned = zero1_owned(trained, self.ranks)
            return max(owned, key=lambda sizes: sum(sizes))
        if self.fsdp:
            return [chunk(t, self.ranks) for t in trained]
        return [t.numel for t in trained]

    def gathered(self) -> Dim:
        """Parameter elements whole at once on a rank during the forward and backward, beyond its shards
        (FSDP2's unsharded parameters): every parameter without resharding; with it, the largest two
        units (one running, the next prefetched)."""
        if not self.fsdp:
            return 0
        if self.parallel.zero == 2:
            return sum((t.numel for t in self.tensors), 0)
        sizes = sorted((sum(t.numel for t in ts) for ts in self.unit_tensors().values()), reverse=True)
        return sum(sizes[:2], 0)

    def unit_of(self, call) -> str:
        """The FSDP2 unit a call runs in: the innermost of ``units`` holding its module, else the root ("")."""
        module = call.module or call.name
        return next((u for u in sorted(self.parallel.units, key=len, reverse=True)
                     if module == u or module.startswith(u + ".")), "")

    def unit_tensors(self) -> dict:
        """Tensors by FSDP2 unit: the innermost of ``units`` whose module path holds the tensor's, else
        the root ("")."""
        units: dict = {}
        ordered = sorted(self.parallel.units, key=len, reverse=True)
        for t in self.tensors:
            owner = next((u for u in ordered if t.module == u or t.module.startswith(u + ".")), "")
            units.setdefault(owner, []).append(t)
        return units

    def kept_gradient(self, call) -> Dim:
        """Elements of a call's weight gradients kept to the update once its backward is done (FSDP2
        keeps the reduce-scattered shard; the whole gradient is in flight until then)."""
        if call.shared_with is not None or call.layer is None:
            return 0
        stored = list(call.layer.stored_shapes)
        owned = [Tensor(_as_stored(tuple(w.shape), stored), True, "") for p, w in enumerate(call.weights)
                 if call.layer.trains(w) and p not in call.layer.tied]
        return self._elements(owned)

    def bucket_elements(self) -> Dim:
        """Elements of the flat buffers a rank communicates through: DDP's gradient buckets, beside the
        gradients (none as bucket views); FSDP2's all-gather output for its largest unit (padded whole),
        alive beside that unit's whole parameters while they are copied out of it."""
        if self.ranks == 1:
            return 0
        if self.fsdp:
            return max((sum(chunk(t, self.ranks) * self.ranks for t in ts) for ts in self.unit_tensors().values()),
                       default=0)
        if self.parallel.gradient_as_bucket_view:
            return 0
        return sum((t.numel for t in self.tensors if t.trainable), 0)

    def collectives(self, gradient_bytes: int, weight_bytes: int) -> tuple:
        """The collectives of one optimizer step on one rank."""
        n, p = self.ranks, self.parallel
        if n == 1:
            return ()
        trained = [t for t in self.tensors if t.trainable]
        ring = n - 1
        if p.zero <= 1:
            grads = sum((t.numel for t in trained), 0) * gradient_bytes
            out = [Collective("all_reduce", _ddp_buckets(trained, gradient_bytes), grads, 2 * ring * grads // n,
                              "gradients, averaged across ranks (DDP buckets)")]
            if p.zero == 1:
                params = sum((t.numel for t in trained), 0) * weight_bytes
                out.append(Collective("broadcast", len(trained), params, ring * params // n,
                                      "each rank's updated parameters, to the others"))
            return tuple(out)
        steps = p.accumulation
        units = self.unit_tensors()
        whole = sum((chunk(t, n) * n for t in self.tensors), 0) * weight_bytes
        whole_grads = sum((chunk(t, n) * n for t in trained), 0) * gradient_bytes
        gathers = 2 if p.zero == 3 else 1  # resharded after the forward: gathered again for the backward
        trained_units = sum(1 for ts in units.values() if any(t.trainable for t in ts))
        return (Collective("all_gather", gathers * len(units) * steps, gathers * whole * steps,
                           gathers * whole * ring // n * steps, "parameters, gathered whole for the forward"
                           + (" and again for the backward" if gathers == 2 else "")),
                Collective("reduce_scatter", trained_units * steps, whole_grads * steps, whole_grads * ring // n * steps,
                           "gradients, summed and split across ranks"))


def checkpoint_segments(calls, parallel: Parallel | None) -> list:
    """(module path, positions of its calls in order) of each checkpointed module that runs."""
    if parallel is None or not parallel.checkpointed:
        return []
    segments = []
    for path in parallel.checkpointed:
        positions = [i for i, call in enumerate(calls) if (call.module or call.name) == path
                     or (call.module or call.name).startswith(path + ".")]
        if positions:
            segments.append((path, positions))
    return segments


def _ddp_buckets(trained: list, nbytes: int) -> int:
    """How many buckets DDP fills: parameters in reverse order, the first bucket capped at 1 MiB (torch's
    first bucket), the others at bucket_cap_mb."""
    buckets, filled, cap = 0, 0, 1 << 20
    for t in reversed(trained):
        size = t.numel * nbytes
        if type(size) is not int:
            return len(trained)
        if filled == 0:
            buckets += 1
        filled += size
        if filled >= cap:
            filled, cap = 0, DDP_BUCKET_MIB << 20
    return max(buckets, 1 if trained else 0)
