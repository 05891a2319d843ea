"""Ways to train a model on several devices, ranked: ``paramcalc plan MODEL --devices 8xh100``.

The model is estimated once (the batch left symbolic); each configuration is then a training cost of
that estimate: data parallelism over every device with each ZeRO stage, with and without activation
checkpointing of its repeated blocks, at every micro-batch that divides the global batch; and where the
model has Megatron's pairs of Linear layers (``megatron_plan``), tensor parallelism over 2, 4 and 8 of
the devices, with and without sequence parallelism, DDP or ZeRO-1 across the groups. Those whose peak
per rank fits the device's memory are ranked by the time of one optimizer step (the micro-batches'
forward and backward, one update, the communication the compute does not hide).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from paramcalc.core.errors import ParamcalcError

STAGES = (0, 1, 2, 3)
TENSOR_DEGREES = (2, 4, 8)


@dataclass(frozen=True)
class Option:
    """One way to train: the Parallel it describes, its micro-batch, and what it costs per rank."""

    parallel: object
    micro_batch: int
    peak_bytes: int
    fits: bool
    step_seconds: float | None  # one optimizer step (every micro-batch)
    communication_bytes: int  # handed to collectives per optimizer step
    samples_per_second: float | None


def parse_devices(text: str) -> tuple[int, str]:
    """'8xh100' -> (8, 'h100')."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\S+)\s*", text or "")
    if not match or int(match.group(1)) < 1:
        raise ParamcalcError(f"--devices {text!r}: expected COUNTxDEVICE, e.g. 8xh100", value=text,
                             fix="pass --devices 8xh100 (a built-in device name or a calibration JSON)")
    return int(match.group(1)), match.group(2)


def repeated_blocks(est) -> tuple:
    """Module paths of the model's repeated blocks (the most frequent module class holding weights, at the
    shallowest depth it repeats): each an FSDP2 unit and a checkpointed module; () where none repeats."""
    modules = [(path, cls) for path, cls in getattr(est, "modules", ()) if path]
    with_weights = {row.module.split(":")[0] for row in est.layers if row.module and row.params}
    holders = [(path, cls) for path, cls in modules
               if any(w == path or w.startswith(path + ".") for w in with_weights)]
    counts = Counter((cls, path.count(".")) for path, cls in holders)  # by class and depth
    repeated = [(cls, depth, n) for (cls, depth), n in counts.items() if n > 1]
    if not repeated:
        return ()
    best_cls, best_depth, _ = min(repeated, key=lambda item: (item[1], -item[2]))
    return tuple(path for path, cls in holders if cls == best_cls and path.count(".") == best_depth)


def plan(est, devices: int, device, batch: int, optimizer: str = "adam", precision: str = "float32",
         nodes: int | None = None, skipped: list | None = None, loss: str | None = None) -> list[Option]:
    """Every configuration, fitting ones first, each group fastest first. ``skipped`` (a list) receives a
    line for each tensor-parallel layout the model cannot take, and why; ``loss``: the loss whose memory
    each configuration counts (``estimate(loss=...)``)."""
    from paramcalc.cost.devices import resolve
    from paramcalc.cost.parallel import Parallel
    from paramcalc.cost.training import training_cost

    profile = resolve(device)
    if type(batch) is not int or batch < devices or batch % devices:
        raise ParamcalcError(f"--batch {batch}: the global batch must be a multiple of the {devices} devices",
                             value=batch, fix=f"pass --batch {devices * max(1, (batch or 0) // devices or 1)}")
    blocks = repeated_blocks(est)
    options = []
    for tensor, sequence, tensor_plan in _tensor_layouts(est, devices, skipped if skipped is not None else []):
        data = devices // tensor
        per_rank = batch // data
        for micro in (m for m in range(1, per_rank + 1) if per_rank % m == 0):
            for zero in (STAGES if tensor == 1 else (0, 1)) if data > 1 else (0,):
                for checkpointed in ((), blocks) if blocks else ((),):
                    parallel = Parallel(data=data, zero=zero, accumulation=per_rank // micro,
                                        units=blocks if tensor == 1 else (), checkpointed=checkpointed, nodes=nodes,
                                        tensor=tensor, tensor_plan=tensor_plan, sequence=sequence)
                    cost = training_cost(est, optimizer=optimizer, precision=precision, device=profile,
                                         batch_size=micro, parallel=parallel, loss=loss)
                    options.append(_option(cost, parallel, micro, profile, batch))
    options.sort(key=lambda o: (not o.fits, o.step_seconds if o.step_seconds is not None else float("inf")))
    return options


def _tensor_layouts(est, devices: int, skipped: list) -> list:
    """(tensor degree, sequence parallelism, tensor plan) to try: no tensor parallelism, then each degree
    that divides the devices where Megatron's plan splits the model that many ways."""
    from paramcalc.cost.tensor_parallel import megatron_plan

    layouts: list = [(1, False, {})]
    for tensor in (t for t in TENSOR_DEGREES if t <= devices and devices % t == 0):
        for sequence in (False, True) if _has_sequence(est) else (False,):
            label = f"tensor parallel over {tensor}" + (" with sequence parallelism" if sequence else "")
            try:
                found = megatron_plan(est, tensor, sequence)
            except ParamcalcError as err:
                skipped.append(f"{label}: {err.message}")
                continue
            if not found:
                skipped.append(f"{label}: no Linear layers whose split a rowwise Linear ends (Megatron's pairs)")
                break
            layouts.append((tensor, sequence, found))
    return layouts


def _option(cost, parallel, micro: int, profile, batch: int) -> Option:
    k = parallel.accumulation
    step = None
    if cost.step_seconds is not None:
        exposed = cost.exposed_communication_seconds or 0.0
        update = dict(cost.layer_seconds).get(f"{cost.optimizer} update", 0.0)
        step = k * (cost.step_seconds - exposed - update) + update + exposed
    payload = sum(c.payload for c in cost.collectives)
    return Option(parallel, micro, cost.memory.peak, cost.memory.peak <= profile.memory_bytes, step, payload,
                  batch / step if step else None)


def _has_sequence(est) -> bool:
    """Whether the inputs have a sequence axis to split: (sequence, features) samples, or ids a lookup
    reads (a call whose work takes no float inputs: token ids)."""
    names = {name for name, _ in est.inputs}
    looked_up = {row.inbound[0][0] for row in est.layers
                 if row.layer is not None and row.inbound and row.inbound[0][0] in names
                 and not row.layer.work(row).float_inputs}
    return all(len(shape) >= 2 or name in looked_up for name, shape in est.inputs) and bool(names)


def render(options: list[Option], devices: int, profile_name: str, batch: int, memory_bytes: int, limit: int = 12,
           skipped: tuple = ()) -> str:
    from paramcalc.core.units import format_bytes, format_seconds

    lines = [f"{devices} x {profile_name}, global batch {batch}; {format_bytes(memory_bytes)} per device",
             f"{'configuration':<52}{'micro x acc':>12}{'peak/rank':>12}{'fits':>6}{'step':>11}{'samples/s':>11}"
             f"{'comm/step':>12}"]
    for o in options[:limit]:
        p = o.parallel
        name = {0: "DDP", 1: "ZeRO-1", 2: "ZeRO-2 (FSDP2)", 3: "ZeRO-3 (FSDP2)"}[p.zero]
        if p.tensor > 1:
            name = f"TP {p.tensor}{' + SP' if p.sequence else ''}, {name} over {p.data}"
        if p.checkpointed:
            name += f", checkpointing {len(p.checkpointed)} blocks"
        rate = f"{o.samples_per_second:,.0f}" if o.samples_per_second else "-"
        step = format_seconds(o.step_seconds) if o.step_seconds is not None else "-"
        lines.append(f"{name:<52}{f'{o.micro_batch} x {p.accumulation}':>12}{format_bytes(o.peak_bytes):>12}"
                     f"{'yes' if o.fits else 'no':>6}{step:>11}{rate:>11}{format_bytes(o.communication_bytes):>12}")
    if len(options) > limit:
        lines.append(f"({len(options) - limit} more; --json lists them all)")
    lines += [f"not tried: {reason}" for reason in skipped]
    return "\n".join(lines)
