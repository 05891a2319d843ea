"""Train on several processes with torch.distributed (gloo, CPU) and record, per rank, what it holds and
what it communicates, for comparison with ``paramcalc.estimate(..., parallel=Parallel(...))``.

    python benchmarks/distributed_measure.py [--world 2,4] [--out results.json]
    python benchmarks/distributed_measure.py --seed 500 [--out results.json]   # the seed model instead

Modes: ``ddp`` (DistributedDataParallel), ``zero1`` (DDP + ZeroRedundancyOptimizer), ``fsdp2`` and
``fsdp3`` (FSDP2 ``fully_shard`` on each block and the root, ``reshard_after_forward`` off and on), ``tp``
(``parallelize_module`` over every rank: ``TP_PLAN``'s Linears ColwiseParallel and RowwiseParallel),
``tp_gpt`` and ``sp_gpt`` (a GPT block, ``gpt_block``, split by ``GPT_PLAN``: attention by heads, the MLP
by columns then rows; ``sp_gpt`` adds sequence parallelism, torch's ``SequenceParallel`` on the norms, the
blocks' inputs all-gathered once by ``PrepareModuleInput``, the rowwise outputs reduce-scattered).
``--seed FEATURES``: the seed model reshaped to (FEATURES, 1) (its Flatten feeding a 300 x FEATURES wide
Dense), a regression trained with MSE, under the data-parallel modes.
Two Adam steps are taken to warm up (DDP rebuilds its buckets in the second, broadcasting their
assignment once), then one measured step:

- model states per rank: the bytes of the parameters (local shards for FSDP2), of the gradients after
  the backward, and of the optimizer's state tensors (Adam's ``step`` counters excluded: paramcalc does
  not count them), from the tensors themselves;
- bytes handed to each collective: a dispatch mode sees every c10d operation the step runs (DDP's
  reducer goes through the same operations) and sums its tensors: an all-reduce's buffers, an
  all-gather's whole output, a reduce-scatter's whole input, a broadcast's tensors;
- peak memory per rank: the highest running sum of the CPU allocator's events under torch.profiler
  from before the batch and model are made to the end of the third step (as train_measure.py measures
  a step), the median of ``--repeat`` runs: it moves by about a gradient's size from run to run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import socket
import sys

MODES = ("ddp", "zero1", "fsdp2", "fsdp3", "tp", "tp_gpt", "sp_gpt")
# tensor parallelism over every rank (DTensor): each pair of blocks' Linears split colwise then rowwise,
# the head rowwise after the third block's colwise Linear
TP_PLAN = {"0.0": "colwise", "1.0": "rowwise", "2.0": "colwise", "3": "rowwise"}
# tensor parallelism of gpt_block: Megatron's split of attention (by heads) and of the MLP
GPT_PLAN = {"attn.q": "colwise", "attn.k": "colwise", "attn.v": "colwise", "attn.proj": "rowwise",
            "mlp.fc1": "colwise", "mlp.fc2": "rowwise"}
# c10d operation -> (collective, the argument holding the tensors whose bytes are its payload)
COLLECTIVES = {"allreduce_": ("all_reduce", 0), "allreduce_coalesced_": ("all_reduce", 0),
               "_allgather_base_": ("all_gather", 0), "allgather_into_tensor_coalesced_": ("all_gather", 0),
               "allgather_": ("all_gather", 0),
               # functional collectives (DTensor's redistributions)
               "all_reduce": ("all_reduce", 0), "all_gather_into_tensor": ("all_gather", 0),
               "reduce_scatter_tensor": ("reduce_scatter", 0),
               "_reduce_scatter_base_": ("reduce_scatter", 1), "reduce_scatter_tensor_coalesced_": ("reduce_scatter", 1),
               "reduce_scatter_": ("reduce_scatter", 1), "broadcast_": ("broadcast", 0)}


def mlp(width: int, depth: int, classes: int):
    """Blocks of Linear + ReLU (each block an FSDP2 unit), then a head."""
    import torch

    blocks = [torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU()) for _ in range(depth)]
    return torch.nn.Sequential(*blocks, torch.nn.Linear(width, classes))


def gpt_block(width: int, heads: int):
    """A GPT block as Korthikanti et al. count it (norm, attention with softmax and dropout on the
    scores, projection, dropout, norm, 4x MLP with GeLU, dropout), its attention and MLP submodules
    (where a tensor-parallel plan gathers their input), heads sized from the projection's output so a rank
    runs its share of them."""
    import torch

    nn = torch.nn

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.proj = (nn.Linear(width, width) for _ in range(4))
            self.drop_scores, self.drop = nn.Dropout(0.1), nn.Dropout(0.1)

        def forward(self, x):
            b, s, _ = x.shape
            d = width // heads
            q, k, v = (f(x).view(b, s, -1, d).transpose(1, 2) for f in (self.q, self.k, self.v))
            scores = self.drop_scores((q @ k.transpose(-2, -1) / d ** 0.5).softmax(dim=-1))
            return self.drop(self.proj((scores @ v).transpose(1, 2).reshape(b, s, -1)))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.drop = nn.Linear(width, 4 * width), nn.Linear(4 * width, width), nn.Dropout(0.1)

        def forward(self, x):
            return self.drop(self.fc2(nn.functional.gelu(self.fc1(x))))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.attn, self.ln2, self.mlp = nn.LayerNorm(width), Attention(), nn.LayerNorm(width), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    return Block()


def _bytes(value) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_bytes(v) for v in value)
    return 0


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def _wrapped(mode: str, cfg: dict):
    """The model as ``mode`` wraps it, and its optimizer. Sharded modes build the model on the meta
    device and make only the rank's shards (``to_empty``), as large models are built: the measured peak is
    the training's, not a whole model made and then split."""
    import torch

    sharded = mode not in ("ddp", "zero1")
    with torch.device("meta") if sharded else contextlib.nullcontext():
        model = _model(mode, cfg)
    model = _wrap(mode, model, cfg)
    if sharded:
        model.to_empty(device="cpu")
        with torch.no_grad():
            for p in model.parameters():  # the values do not change what a step allocates
                p.fill_(0.01)
    if mode == "zero1":
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return model, ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.Adam, lr=1e-3)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def _model(mode: str, cfg: dict):
    """The GPT block, the seed model (``cfg["seed"]`` features, reshaped to (features, 1): Dense per
    position, Flatten, the 300-wide Dense that explodes), or the MLP."""
    if mode.endswith("_gpt"):
        return gpt_block(cfg["width"], cfg["heads"])
    if cfg.get("seed"):
        from zoo import seed

        return seed("reshaped_flatten", cfg["seed"])
    return mlp(cfg["width"], cfg["depth"], cfg["classes"])


def unit_paths(cfg: dict) -> tuple:
    """The modules FSDP2 shards as units of their own: the MLP's blocks; the seed model's Linears but its
    last (the root unit keeps it)."""
    if cfg.get("seed"):
        return ("0", "3", "5")
    return tuple(str(i) for i in range(cfg["depth"]))


def _wrap(mode: str, model, cfg: dict):
    import torch

    if mode in ("ddp", "zero1"):
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)
    if mode in ("fsdp2", "fsdp3"):
        from torch.distributed.fsdp import fully_shard

        reshard = mode == "fsdp3"
        for path in unit_paths(cfg):
            fully_shard(model.get_submodule(path), reshard_after_forward=reshard)
        return fully_shard(model, reshard_after_forward=reshard)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    plan = {path: styles[style]() for path, style in (TP_PLAN if mode == "tp" else GPT_PLAN).items()}
    if mode == "sp_gpt":
        gathered = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))
        plan.update({"ln1": SequenceParallel(), "ln2": SequenceParallel(), "attn": gathered, "mlp": gathered,
                     "attn.proj": RowwiseParallel(output_layouts=Shard(1)),
                     "mlp.fc2": RowwiseParallel(output_layouts=Shard(1))})
    return parallelize_module(model, mesh, plan)


def _worker(rank: int, world: int, port: int, mode: str, cfg: dict, queue, peak: bool = False) -> None:
    import torch
    import torch.distributed as dist
    from torch.utils._python_dispatch import TorchDispatchMode

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    found: dict = {}

    class Collectives(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.payload, self.calls = collections.Counter(), collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen = COLLECTIVES.get(func._overloadpacket.__name__)
            if seen is not None:
                name, position = seen
                # a functional all-gather is handed the rank's part: its whole output is group_size parts
                parts = args[1] if func._overloadpacket.__name__ == "all_gather_into_tensor" else 1
                self.payload[name] += _bytes(args[position]) * parts
                self.calls[name] += 1
            return func(*args, **(kwargs or {}))

    gpt = mode.endswith("_gpt")
    if gpt:
        # the GPT block's loss is linear in its output, (out * direction).sum(): its backward makes exactly
        # the output's gradient and keeps nothing else; ``direction`` exists before the measured steps, as
        # paramcalc counts no loss and no target
        direction = torch.randn(cfg["batch"], cfg["seq"] // (world if mode == "sp_gpt" else 1), cfg["width"])

    def train():
        """Everything the rank allocates: the batch, the model, its wrappers' buffers, three steps."""
        if gpt:  # with sequence parallelism each rank is handed its part of the sequence
            x = torch.randn(direction.shape)
        elif cfg.get("seed"):  # a regression on (features, 1) samples, as the seed case trains
            x, y = torch.randn(cfg["batch"], cfg["seed"], 1), torch.randn(cfg["batch"], 1)
        else:
            x = torch.randn(cfg["batch"], cfg["width"])
            y = torch.randint(0, cfg["classes"], (cfg["batch"],))
        model, optimizer = _wrapped(mode, cfg)
        loss_of = torch.nn.functional.mse_loss if cfg.get("seed") else torch.nn.functional.cross_entropy

        def step(record):
            optimizer.zero_grad(set_to_none=True)
            with record:
                # the output is not held in a variable: nothing but the loss keeps it through the backward
                loss = (model(x) * direction).sum() if gpt else loss_of(model(x), y)
                loss.backward()
                states = {"weights": sum(_bytes(_local(p)) for p in model.parameters()),
                          "gradients": sum(_bytes(_local(p.grad)) for p in model.parameters() if p.grad is not None)}
                optimizer.step()
            inner = getattr(optimizer, "optim", optimizer)  # ZeroRedundancyOptimizer wraps this rank's optimizer
            states["optimizer"] = sum(_bytes(_local(v)) for state in inner.state.values() for k, v in state.items()
                                      if k != "step")
            return states

        for _ in range(3):
            step(contextlib.nullcontext())
        found["step"] = step

    if peak:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
        from paramcalc.calibration.sweeps import peak_rise

        found["peak"] = peak_rise(torch, "cpu", train)
    else:
        train()
    # the collectives of a fourth step, counted by a dispatch mode: under a Python dispatch mode a
    # DTensor step holds an activation more, so the peak is measured without one
    record = Collectives()
    states = found["step"](record)
    queue.put({"rank": rank, "mode": mode, "world": world, **states, "peak": found.get("peak"),
               "collectives": {n: {"calls": record.calls[n], "payload": record.payload[n]} for n in record.payload}})
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(mode: str, world: int, cfg: dict, peak: bool = False) -> list:
    """One measured step of ``mode`` on ``world`` processes: a dict per rank, rank 0 first (with
    ``peak``, the highest bytes torch's allocator held on that rank, batch included)."""
    import queue as queues

    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_worker, args=(r, world, port, mode, cfg, queue, peak)) for r in range(world)]
    for p in processes:
        p.start()
    results = []
    try:
        for _ in processes:
            results.append(queue.get(timeout=300))
    except queues.Empty:
        codes = [p.exitcode for p in processes]
        for p in processes:
            p.kill()
        raise RuntimeError(f"{mode} on {world} processes: {world - len(results)} rank(s) measured nothing "
                           f"(exit codes {codes})") from None
    for p in processes:
        p.join(60)
    # every rank reported its step: a rank that then aborts while gloo tears its connections down (the
    # peer closed first; seen now and then as -6) does not change what was measured; it is recorded
    codes = {p.name: p.exitcode for p in processes}
    for result, process in zip(sorted(results, key=lambda r: r["rank"]), processes):
        result["exit_code"] = process.exitcode
    if any(code not in (0, -6) for code in codes.values()):
        raise RuntimeError(f"{mode} on {world} processes: a rank exited with {sorted(codes.values())}")
    return sorted(results, key=lambda r: r["rank"])


def predict(mode: str, world: int, cfg: dict):
    """paramcalc's estimate of the same step, one rank's, on the CPU (built on the meta device: nothing
    allocated)."""
    import torch

    import paramcalc

    if mode.endswith("_gpt"):
        with torch.device("meta"):
            model = gpt_block(cfg["width"], cfg["heads"])
        parallel = paramcalc.Parallel(tensor=world, tensor_plan=GPT_PLAN, sequence=mode == "sp_gpt")
        return paramcalc.estimate(model, input_shape=(cfg["seq"], cfg["width"]), batch_size=cfg["batch"],
                                  optimizer="adam", parallel=parallel, device="cpu")
    with torch.device("meta"):
        model = _model(mode, cfg)
    if mode == "tp":
        parallel = paramcalc.Parallel(data=1, tensor=world, tensor_plan=TP_PLAN)
    else:
        units = unit_paths(cfg) if mode.startswith("fsdp") else ()
        zero = {"ddp": 0, "zero1": 1, "fsdp2": 2, "fsdp3": 3}[mode]
        parallel = paramcalc.Parallel(data=world, zero=zero, units=units)
    shape = (cfg["seed"], 1) if cfg.get("seed") else (cfg["width"],)
    return paramcalc.estimate(model, input_shape=shape, batch_size=cfg["batch"], optimizer="adam",
                              parallel=parallel, device="cpu")


def main() -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default="2,4")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4, help="the GPT block's attention heads")
    parser.add_argument("--seq", type=int, default=64, help="the GPT block's sequence length")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seed", type=int, default=0, help="FEATURES: the seed model reshaped to (FEATURES, 1) "
                        "instead of the MLP, under DDP, ZeRO-1 and FSDP2 (--modes narrows them)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode: the peak is their median "
                        "(it moves by a gradient's size between runs, as threads interleave)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    cfg = {"width": args.width, "depth": args.depth, "classes": 10, "batch": args.batch, "heads": args.heads,
           "seq": args.seq, "seed": args.seed}
    modes = [m for m in args.modes.split(",") if not args.seed or m in ("ddp", "zero1", "fsdp2", "fsdp3")]
    rows, peak_errors = [], []
    for world in (int(w) for w in args.world.split(",")):
        for mode in modes:
            runs = [measure(mode, world, cfg, peak=True) for _ in range(args.repeat)]
            measured = runs[0]
            est = predict(mode, world, cfg)
            memory, predicted = est.training.memory, {c.name: c for c in est.training.collectives}
            fullest = {part: max(r[part] for r in measured) for part in ("weights", "gradients", "optimizer")}
            row = {"mode": mode, "world": world, "config": cfg, "measured": measured,
                   "predicted": {"weights": memory.weights, "gradients": memory.gradients,
                                 "optimizer": memory.optimizer, "peak": memory.peak,
                                 "collectives": {n: {"calls": c.calls, "payload": c.payload} for n, c in predicted.items()}}}
            rows.append(row)
            states = ", ".join(f"{part} {fullest[part]}/{row['predicted'][part]}" for part in fullest)
            comms = ", ".join(f"{n} {m['payload']}/{predicted[n].payload if n in predicted else 0} bytes"
                              for n, m in measured[0]["collectives"].items())
            peaks = sorted(max(r["peak"] for r in run) for run in runs)
            measured_peak = peaks[len(peaks) // 2]
            row["measured_peaks"] = peaks
            peak_errors.append((memory.peak - measured_peak) / measured_peak)
            print(f"{mode:<7} x{world}: measured/predicted (fullest rank) {states}, peak {measured_peak}/"
                  f"{memory.peak} ({peak_errors[-1] * 100:+.1f}%; runs {min(peaks)}-{max(peaks)}); rank 0 {comms}")
    errors = sorted(abs(e) for e in peak_errors)
    print(f"peak per rank error: median {errors[len(errors) // 2] * 100:.1f}%, worst {errors[-1] * 100:.1f}% "
          f"(n={len(errors)})")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
