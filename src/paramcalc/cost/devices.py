"""Device profiles: what the step-time and memory models need to know about a machine.

Built-in datasheet profiles (dense TFLOP/s, memory, bandwidth: ../shared/reference/conventions.md and
the vendors' datasheets) predict with an uncalibrated efficiency curve; a profile measured by
``paramcalc calibrate`` (or stored under benchmarks/results) carries matmul timings over shapes,
copy bandwidth over sizes and the framework's cost per operation, and is what the accuracy goals are
stated for. Throughputs are floats (seconds are not sizes); byte and FLOP counts stay exact ints.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from paramcalc.core.errors import ParamcalcError
from paramcalc.core.machine import Machine

TB = 1e12


@dataclass(frozen=True)
class DeviceProfile:
    """``peak_flops``: dense FLOP/s by dtype ("float32", "tfloat32", "bfloat16", "float16").
    ``bandwidth``: bytes/s counting bytes read plus written. ``op_overhead_s``: host time per
    framework operation (eager dispatch, launch). ``asynchronous``: the host runs ahead of the device
    (GPUs), so a step takes the longer of host and device time rather than their sum."""

    name: str
    device_type: str  # "gpu" or "cpu"
    memory_bytes: int
    peak_flops: dict
    bandwidth: float
    op_overhead_s: float
    asynchronous: bool
    launch_floor_s: float = 0.0
    matmul: dict = field(default_factory=dict, compare=False)  # dtype -> [(m, k, n, seconds)]
    copies: tuple = field(default=(), compare=False)  # ((bytes, seconds), ...)
    framework: str | None = None
    source: str = "datasheet"
    step_overhead_s: float | None = None  # host cost of a training step beyond its layers (calibrated)
    layer_overhead_s: float | None = None  # host cost of one Linear+ReLU pair, forward and backward
    optimizer_seconds: dict = field(default_factory=dict, compare=False)  # optimizer -> s per parameter
    # optimizer -> s per parameter of one tensor updated with nothing beside it (a compiled step's
    # updates of several tensors run side by side; the last one, the first layer's, alone)
    optimizer_alone_seconds: dict = field(default_factory=dict, compare=False)
    kernels: dict = field(default_factory=dict, compare=False)  # dtype -> kernel -> s per element (fwd, bwd)
    kind_overheads: dict = field(default_factory=dict, compare=False)  # kind -> host s per layer and step
    convs: dict = field(default_factory=dict, compare=False)  # dtype -> [(m, k, n, forward s, backward s)]
    optimizer_sizes: dict = field(default_factory=dict, compare=False)  # optimizer -> [(tensors, params, s)]
    overheads_exclude_update: bool = False  # step/layer/kind host costs were measured without the update
    recurrent: dict = field(default_factory=dict, compare=False)  # cell -> [(work per step, fwd s, bwd s)]
    recurrent_saved: dict = field(default_factory=dict, compare=False)  # cell -> bytes kept per batch x step x unit
    recurrent_workspace: dict = field(default_factory=dict, compare=False)  # cell -> more per unit in its backward
    transformer_saved: dict = field(default_factory=dict, compare=False)  # bytes kept per token feature, ...
    # what the recurrent and Transformer layers keep under autocast (mixed precision): the same three
    # tables by name ("recurrent_saved", "recurrent_workspace", "transformer_saved"), where measured
    mixed_memory: dict = field(default_factory=dict, compare=False)
    page_fault_s_per_byte: float = 0.0  # CPU hosts: cost of paging in a fresh block the allocator mapped
    # CPU hosts: what a training step loses per byte of the heap's blocks it hands back and pages in again,
    # by block size: ((block bytes, s per byte), ...) measured on training steps; () where not measured
    page_churn: tuple = field(default=(), compare=False)
    # CPU hosts: glibc's mmap threshold in a process that imported torch and ran a first training step,
    # where a training process's own blocks find it (bytes; 0 where not measured: glibc's default)
    mmap_threshold: int = 0
    # dtype -> "dropout" | "plain" -> [(batch x heads, query length, key length, head width, fwd s, bwd s)]
    attention: dict = field(default_factory=dict, compare=False)
    own_layers: tuple = ()  # kinds timed as the framework's own layers (Keras' on torch), not torch's
    # "transpose_a" | "transpose_b" -> dtype -> [(m, k, n, seconds)]: products reading an operand
    # transposed, where the framework's kernels run those at rates of their own
    matmul_layouts: dict = field(default_factory=dict, compare=False)
    machine: Machine | None = None  # the host a calibration ran on (None: not recorded, or a datasheet)
    # how devices talk (cost/communication.py): bytes/s one way per device and seconds per message, within
    # a node (NVLink, PCIe) and between nodes (InfiniBand, Ethernet: the device's share of the node's
    # network); devices per node. None: not known, and communication is not timed.
    link_bandwidth: float | None = None
    link_latency_s: float = 0.0
    network_bandwidth: float | None = None
    network_latency_s: float = 0.0
    devices_per_node: int = 8
    contention: dict | None = field(default=None, compare=False)  # what others took of it meanwhile

    def label(self) -> str:
        """How estimates name the profile: its name, and for a CPU the machine it describes."""
        if self.device_type == "cpu" and self.machine is not None and self.machine.cpu not in self.name:
            return f"{self.name} ({self.machine.label()})"
        return self.name

    # -- rates ----------------------------------------------------------------------------------------
    def matmul_seconds(self, m: int, k: int, n: int, dtype: str, layout: str = "plain") -> float:
        """Device time of one (m, k) @ (k, n) product: calibrated shapes when measured, else a curve.
        ``layout``: "transpose_a" or "transpose_b" when the product reads that operand transposed; the
        plain products' rates serve where the profile did not measure that layout."""
        flops = 2 * m * k * n
        if flops == 0:
            return 0.0
        table = (self.matmul_layouts.get(layout) or {}).get(dtype) or self.matmul.get(dtype)
        if table:
            width = 8 if dtype in ("bfloat16", "float16") else 4
            rate = _interpolated_rate(table, m, k, n, self._call_cost(), width)
        else:
            # Uncalibrated: efficiency rises with the work until tiles and waves are full.
            peak = self.peak_flops.get(dtype) or self.peak_flops["float32"]
            rate = peak * 0.75 * flops / (flops + (4e9 if self.device_type == "gpu" else 2e7))
        element_bytes = 2 if dtype in ("bfloat16", "float16") else 4
        traffic = (m * k + k * n + m * n) * element_bytes  # a thin product is bound by memory instead
        return max(self.launch_floor_s, flops / rate, self.memory_seconds(traffic))

    def page_in_seconds(self, block: int, churned: bool) -> float:
        """What paging in a fresh block of ``block`` bytes costs a CPU step: a block the heap hands back
        and takes again among the step's own tensors (``churned``) at the cost measured on training steps
        for blocks of its size (log-log between them, flat beyond), else at the page-in cost measured on
        large blocks mapped apart."""
        if churned and self.page_churn:
            return block * _log_interpolate(list(self.page_churn), block)
        return block * self.page_fault_s_per_byte

    def memory_seconds(self, nbytes: int) -> float:
        """Device time of a memory-bound pass moving ``nbytes`` (read + write)."""
        if nbytes <= 0:
            return 0.0
        rate = self.bandwidth
        if self.copies:
            rate = _bandwidth_at(self.copies, nbytes, self._call_cost())
        return max(self.launch_floor_s, nbytes / rate)

    def kernel_seconds(self, kernel: str, elements: int, dtype: str) -> tuple[float, float] | None:
        """(forward, backward) device seconds of a calibrated per-element kernel over ``elements``,
        or None when the profile did not measure it."""
        dtype = {"tfloat32": "float32", "float16": "bfloat16"}.get(dtype, dtype)
        table = self.kernels.get(dtype) or self.kernels.get("float32") or {}
        entry = table.get(kernel)
        if entry is None:
            return None
        return (max(self.launch_floor_s, elements * entry["forward_s_per_element"]),
                max(self.launch_floor_s, elements * entry["backward_s_per_element"]))

    def conv_seconds(self, m: int, k: int, n: int, dtype: str) -> tuple[float, float] | None:
        """(forward, backward) device seconds of a convolution amounting to an (m, k) @ (k, n) product,
        from the calibrated convolutions, or None when the profile has none. Backward is both gradients."""
        dtype = {"tfloat32": "float32"}.get(dtype, dtype)
        rows = self.convs.get(dtype)
        if not rows or m * k * n == 0:
            return None
        flops = 2 * m * k * n
        forward = [(rm, rk, rn, fwd) for rm, rk, rn, fwd, _ in rows]
        backward = [(rm, rk, rn, bwd) for rm, rk, rn, _, bwd in rows]
        call = self._call_cost()
        return (max(self.launch_floor_s, flops / _interpolated_rate(forward, m, k, n, call)),
                max(self.launch_floor_s, flops / _interpolated_rate(backward, m, k, n, call)))

    def recurrent_step_seconds(self, cell: str, work: int) -> tuple[float, float] | None:
        """(forward, backward) seconds of one time step of one recurrent layer and direction doing
        ``work`` FLOPs per step, from the measured layers of this cell (log-log between them), or None."""
        rows = self.recurrent.get(cell)
        if not rows:
            return None
        top = max(rows)
        if work > top[0]:  # beyond the sweep: the largest measured layer's rate
            return top[1] * work / top[0], top[2] * work / top[0]
        return (_log_interpolate(sorted((w, f) for w, f, _ in rows), work),
                _log_interpolate(sorted((w, b) for w, _, b in rows), work))

    def attention_seconds(self, batch_heads: int, query: int, key: int, head_dim: int, dropout: bool,
                          dtype: str) -> tuple[float, float] | None:
        """(forward, backward) seconds of attention between its projections (scores, softmax, dropout on
        the probabilities when ``dropout``, weighted values) from the measured attention layers: their
        cost per score, weighted towards the rows nearest in scores and head width, or None."""
        dtype = {"tfloat32": "float32", "float16": "bfloat16"}.get(dtype, dtype)
        table = self.attention.get(dtype) or self.attention.get("float32") or {}
        rows = table.get("dropout" if dropout else "plain")
        scores = batch_heads * query * key
        if not rows or scores <= 0:
            return None
        def where(n: int, width: int) -> tuple:  # head width counts double: it sets the products' share
            return (math.log2(n), 2 * math.log2(max(width, 1)))
        point = where(scores, head_dim)
        per_score = [(where(bh * tq * tk, hd), (f / (bh * tq * tk), b / (bh * tq * tk)))
                     for bh, tq, tk, hd, f, b in rows]
        return tuple(scores * _inverse_distance([(at, v[i]) for at, v in per_score], point) for i in (0, 1))

    def update_seconds(self, optimizer: str, tensor_sizes: list) -> float | None:
        """Seconds of one optimizer update over tensors of these sizes, from the calibrated rows: a
        cost per tensor (64 tiny tensors) plus a cost per parameter interpolated by the total, or None."""
        rows = self.optimizer_sizes.get(optimizer)
        if not rows or not tensor_sizes:
            return None
        tiny = min(rows, key=lambda r: r[1] / r[0])
        per_tensor = tiny[2] / tiny[0]
        total = sum(tensor_sizes)
        # per parameter: what a set took beyond its tensors' fixed cost (a floor keeps noise from zeroing it)
        curve = sorted((p, max(s - n * per_tensor, s * 0.01) / p) for n, p, s in rows if (n, p) != tiny[:2])
        return len(tensor_sizes) * per_tensor + total * _log_interpolate(curve, total)

    def _call_cost(self) -> float:
        """What a calibration timing holds besides the kernel: one synchronised call's host cost."""
        return self.op_overhead_s if self.asynchronous else 0.0


def _features(m: int, k: int, n: int, width: int = 0, wide_rows: bool = False) -> tuple:
    """Where a product sits for interpolation: how well its output fills the tiles (the smaller output
    side), how much work each output element gets (the inner dimension), the total work; given a vector
    width in elements, whether a side is not a multiple of it (the kernels for such operands load fewer
    elements at a time); and, where the table measured wide products, whether this one is wide."""
    features = (math.log2(max(min(m, n), 1)), math.log2(max(k, 1)), math.log2(2 * m * k * n))
    if width:
        misaligned = any(d % width for d in (m, k, n) if d > 1)
        features += (MISALIGNED_DISTANCE if misaligned else 0.0,)
    if wide_rows:
        features += (WIDE_DISTANCE if is_wide(m, n) else 0.0,)
    return features


def is_wide(m: int, n: int) -> bool:
    """A product whose output has a few rows and a great many columns (a wide layer's input gradient):
    CPU kernels ran these at two thirds to three quarters of the rate of the same work shaped tall, which
    the smaller output side alone cannot tell apart."""
    return n >= WIDE_RATIO * m and m * n >= WIDE_OUTPUT_ELEMENTS


# How far apart (in the log2 units of the other features) aligned and misaligned products sit, and
# wide and other products.
MISALIGNED_DISTANCE = 4.0
WIDE_DISTANCE = 4.0
WIDE_RATIO = 16  # columns per row from which an output is wide ...
# ... when it also has this many elements (8 MiB in 32 bits): below it a wide output runs about as fast
# as a tall one, above it clearly slower (figures in docs/accuracy.md, "Measurements behind the rules")
WIDE_OUTPUT_ELEMENTS = 2**21


def _interpolated_rate(table: list, m: int, k: int, n: int, call_cost: float, width: int = 0) -> float:
    """FLOP/s for a shape, interpolated over the measured shapes by :func:`_features`.

    Matmul efficiency is governed by how well the output fills the tiles, by the inner dimension (a short
    one gives each output little work for its write), and by how much work there is to fill the machine;
    inverse-distance weighting in that log space keeps the prediction between measured neighbours.
    Measured times include one call's host cost; it is taken out (down to a floor) so the rate describes
    the kernel, which overlaps the host during training.
    """
    # Older profiles measured no wide products: for them, wide ones sit among the rest as before.
    wide_rows = any(is_wide(tm, tn) for tm, _, tn, _ in table)
    rates = [(_features(tm, tk, tn, width, wide_rows), 2 * tm * tk * tn / max(seconds - call_cost, seconds * 0.1))
             for tm, tk, tn, seconds in table]
    return min(max(rate for _, rate in rates), _inverse_distance(rates, _features(m, k, n, width, wide_rows)))


def _inverse_distance(samples: list, point: tuple) -> float:
    """A value at ``point`` from measured (features, value) samples: the geometric mean of the values
    weighted by 1 / distance^4 in feature space, so the nearest measurements dominate; a measured point
    gives its own value."""
    weights = total = 0.0
    for features, value in samples:
        d2 = sum((a - b) ** 2 for a, b in zip(point, features))
        if d2 < 1e-9:
            return value
        w = 1.0 / d2 ** 2
        weights += w
        total += w * math.log(value)
    return math.exp(total / weights)


def _log_interpolate(points: list, x: float) -> float:
    """y at x, linear in log x and log y between sorted (x, y) points, flat beyond the ends."""
    if x <= points[0][0]:
        return points[0][1]
    if x >= points[-1][0]:
        return points[-1][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp(math.log(y0) + t * (math.log(y1) - math.log(y0)))
    return points[-1][1]


def _bandwidth_at(copies: tuple, nbytes: int, call_cost: float) -> float:
    """Bytes/s at a transfer size, interpolated in log size between measured copies."""
    return _log_interpolate([(b, b / max(s - call_cost, s * 0.1)) for b, s in sorted(copies)], nbytes)


# Datasheet figures, dense (no sparsity); bandwidth here counts read + write at ~87% of the one-way
# datasheet figure, as measured on a lent H100 (2.9 of 3.35 TB/s).
_RW = 0.87


def _gpu(name: str, memory_gb: int, fp32: float, tf32: float, half: float, bandwidth: float,
         link: float, network: float) -> DeviceProfile:
    """A datasheet GPU: dense TFLOP/s for fp32, TF32 and bf16/fp16; one-way bandwidth in bytes/s; the
    one-way bytes/s of its links to the node's other GPUs (NVLink, else PCIe) and of its share of the
    network between nodes (one NIC per GPU, as in NVIDIA's reference nodes)."""
    return DeviceProfile(name, "gpu", memory_gb * 10**9,
                         {"float32": fp32 * TB, "tfloat32": tf32 * TB, "bfloat16": half * TB, "float16": half * TB},
                         bandwidth * _RW, op_overhead_s=10e-6, asynchronous=True, launch_floor_s=3e-6,
                         link_bandwidth=link, link_latency_s=_LINK_LATENCY, network_bandwidth=network,
                         network_latency_s=_NETWORK_LATENCY)


# Interconnects, datasheet, one way per GPU: NVLink 4 (H100, H200 SXM) 900 GB/s both ways, NVLink 3 (A100
# SXM) 600 GB/s, PCIe 5 x16 64 GB/s (H100 PCIe), PCIe 4 x16 32 GB/s (L4); between nodes one InfiniBand NIC
# per GPU: NDR 400 Gb/s (H100, H200), HDR 200 Gb/s (A100), 100 Gb/s Ethernet (L4 servers). Latencies: a
# message's start-up cost, NCCL-like, per ring step.
_LINK_LATENCY, _NETWORK_LATENCY = 5e-6, 10e-6


BUILTIN: dict[str, DeviceProfile] = {
    "h100-sxm": _gpu("NVIDIA H100 SXM 80GB", 80, 66.9, 494.7, 989.4, 3.35e12, 450e9, 50e9),
    "h100-pcie": _gpu("NVIDIA H100 PCIe 80GB", 80, 51.2, 378, 756, 2.0e12, 64e9, 50e9),
    "h200": _gpu("NVIDIA H200 SXM 141GB", 141, 66.9, 494.7, 989.4, 4.8e12, 450e9, 50e9),
    "a100-40gb": _gpu("NVIDIA A100 SXM 40GB", 40, 19.5, 156, 312, 1.555e12, 300e9, 25e9),
    "a100-80gb": _gpu("NVIDIA A100 SXM 80GB", 80, 19.5, 156, 312, 2.039e12, 300e9, 25e9),
    "l4": _gpu("NVIDIA L4 24GB", 24, 30.3, 60, 121, 300e9, 32e9, 12.5e9),
    "cpu": DeviceProfile("generic CPU", "cpu", 16 * 2**30, {"float32": 200e9, "bfloat16": 200e9}, 40e9,
                         2e-6, False),
}
ALIASES = {"h100": "h100-sxm", "a100": "a100-80gb", "h100-80gb": "h100-sxm"}
# Profiles measured with `paramcalc calibrate` on real machines, shipped as data (src/paramcalc/profiles).
# a measured GPU's interconnect is its datasheet's (a calibration measures one device)
MEASURED_LINKS = {"h100-sxm-torch": "h100-sxm"}
MEASURED = {"h100-sxm-torch": "h100-sxm-torch.json", "cpu-dev-torch": "cpu-dev-torch.json",
            "cpu-dev-keras": "cpu-dev-keras.json"}


def from_calibration(data: dict) -> DeviceProfile:
    """A profile from ``paramcalc calibrate``'s JSON (or benchmarks/results/*_calibration_*.json)."""
    device = data.get("device", "cpu")
    matmul = {dtype: [(r["m"], r["k"], r["n"], r["seconds"]) for r in rows]
              for dtype, rows in data.get("matmul", {}).items()}
    peaks = {dtype: max(2 * m * k * n / s for m, k, n, s in rows) for dtype, rows in matmul.items()}
    # Elementwise work writes fresh tensors. A calibration that measured the page-fault cost prices the
    # fresh blocks apart (timing.py) and passes at the copy bandwidth; older ones used fresh writes.
    fault = float(data.get("page_fault_s_per_byte") or 0.0)
    rows = (data.get("bandwidth") if fault else data.get("fresh_bandwidth")) or data.get("bandwidth", [])
    copies = tuple((r["bytes"], r["seconds"]) for r in rows)
    bandwidth = max((b / s for b, s in copies), default=40e9)
    gpu = device == "cuda"
    return DeviceProfile(
        name=data.get("name", device), device_type="gpu" if gpu else "cpu",
        memory_bytes=int(data.get("memory_bytes") or 16 * 2**30), peak_flops=peaks, bandwidth=bandwidth,
        op_overhead_s=float(data.get("op_overhead_s") or 0.0), asynchronous=gpu,
        launch_floor_s=3e-6 if gpu else 0.0, matmul=matmul, copies=copies,
        framework=data.get("framework"), source=f"calibrated ({data.get('framework_version', '?')})",
        step_overhead_s=data.get("step_overhead_s"), layer_overhead_s=data.get("layer_overhead_s"),
        optimizer_seconds={k: v["seconds_per_param"] for k, v in (data.get("optimizers") or {}).items()},
        optimizer_alone_seconds={k: v["seconds_per_param_alone"] for k, v in (data.get("optimizers") or {}).items()
                                 if "seconds_per_param_alone" in v},
        kernels=_merged_kernels(data), kind_overheads=data.get("kind_overheads") or {},
        convs={dtype: [(r["m"], r["k"], r["n"], r["forward_s"], r["backward_s"]) for r in rows]
               for dtype, rows in (data.get("convs") or {}).items()},
        optimizer_sizes={name: [(r["tensors"], r["params"], r["seconds"]) for r in v["sizes"]]
                         for name, v in (data.get("optimizers") or {}).items() if v.get("sizes")},
        recurrent={cell: [(r["work_per_step"], r["forward_s_per_step"], r["backward_s_per_step"]) for r in rows]
                   for cell, rows in (data.get("recurrent") or {}).items()},
        recurrent_saved=_recurrent_saved(data),
        recurrent_workspace={cell: m["workspace_bytes_per_unit"]
                             for cell, m in (data.get("recurrent_memory") or {}).items()},
        transformer_saved=data.get("transformer_saved") or {},
        mixed_memory=_mixed_memory(data),
        overheads_exclude_update=bool(data.get("overheads_exclude_update")), page_fault_s_per_byte=fault,
        page_churn=_page_churn(data), mmap_threshold=int(data.get("mmap_threshold_bytes") or 0),
        attention={dtype: {variant: [(r["batch_heads"], r["query"], r["key"], r["head_dim"], r["forward_s"],
                                      r["backward_s"]) for r in rows] for variant, rows in table.items()}
                   for dtype, table in (data.get("attention") or {}).items()},
        own_layers=tuple(data.get("own_layers") or ()),
        matmul_layouts={layout: {dtype: [(r["m"], r["k"], r["n"], r["seconds"]) for r in rows]
                                 for dtype, rows in tables.items()}
                        for layout, tables in (data.get("matmul_layouts") or {}).items()},
        machine=Machine.from_dict(data["machine"]) if data.get("machine") else None,
        contention=data.get("contention"))


def _page_churn(data: dict) -> tuple:
    """The heap churn's cost per byte by block size; older calibrations stored one figure for all sizes."""
    rows = tuple(sorted((r["block_bytes"], r["s_per_byte"]) for r in data.get("page_churn") or ()))
    if not rows and data.get("page_churn_s_per_byte"):
        rows = ((1, float(data["page_churn_s_per_byte"])),)
    return rows


def _mixed_memory(data: dict) -> dict:
    """What a calibration measured the recurrent and Transformer layers keep under autocast."""
    out: dict = {}
    recurrent = data.get("recurrent_memory_mixed") or {}
    if recurrent:
        out["recurrent_saved"] = {cell: m["saved_bytes_per_unit"] for cell, m in recurrent.items()}
        out["recurrent_workspace"] = {cell: m["workspace_bytes_per_unit"] for cell, m in recurrent.items()}
    if data.get("transformer_saved_mixed"):
        out["transformer_saved"] = data["transformer_saved_mixed"]
    return out


def _recurrent_saved(data: dict) -> dict:
    """Bytes a recurrent cell keeps per batch x step x unit: measured with its workspace
    (``recurrent_memory``), or by older calibrations beside its timings."""
    import statistics  # here, not at import: it pulls fractions and decimal into `import paramcalc`

    saved = {cell: statistics.median(r["saved_bytes"] / r["units"] for r in rows)
             for cell, rows in (data.get("recurrent") or {}).items()
             if rows and all("saved_bytes" in r for r in rows)}
    saved.update({cell: m["saved_bytes_per_unit"] for cell, m in (data.get("recurrent_memory") or {}).items()})
    return saved


def _merged_kernels(data: dict) -> dict:
    """Per-element kernel costs by dtype; older calibrations stored the normalisation kernels alone,
    under "norms"."""
    merged: dict = {}
    for key in ("norms", "kernels"):
        for dtype, table in (data.get(key) or {}).items():
            merged.setdefault(dtype, {}).update(table)
    return merged


def machine_notes(profile: DeviceProfile, here: Machine) -> tuple:
    """What an estimate priced on a calibrated CPU profile should say about the machine behind it: that
    it is not this one (step times then move 2x and more), or that others were busy while it measured."""
    from paramcalc.core.contention import too_busy
    from paramcalc.core.machine import differs

    if profile.device_type != "cpu" or profile.source == "datasheet":
        return ()
    notes = []
    reason = differs(profile.machine, here)
    if reason is not None:
        notes.append(f"the {profile.name} profile may not describe this machine: {reason}. Its step times can be "
                     "off by 2x or more here; calibrate this machine once (paramcalc calibrate --out my-cpu.json) "
                     "and pass device='my-cpu.json'")
    if too_busy(profile.contention):
        notes.append(f"the {profile.name} profile was measured while other processes took "
                     f"{profile.contention['others_share']:.0%} of the machine: its times describe a busy machine")
    return tuple(notes)


def resolve(device: object) -> DeviceProfile:
    """A DeviceProfile from a profile, a built-in name, or a path to a calibration JSON."""
    if isinstance(device, DeviceProfile):
        return device
    if isinstance(device, dict):
        return from_calibration(device)
    if isinstance(device, str):
        key = ALIASES.get(device.lower(), device.lower())
        if key in BUILTIN:
            return BUILTIN[key]
        if key in MEASURED:
            from importlib import resources

            text = resources.files("paramcalc.profiles").joinpath(MEASURED[key]).read_text(encoding="utf-8")
            profile = from_calibration(json.loads(text))
            if key in MEASURED_LINKS:
                sheet = BUILTIN[MEASURED_LINKS[key]]
                profile = replace(profile, link_bandwidth=sheet.link_bandwidth, link_latency_s=sheet.link_latency_s,
                                  network_bandwidth=sheet.network_bandwidth,
                                  network_latency_s=sheet.network_latency_s)
            return profile
        path = Path(device)
        if path.suffix == ".json" and path.is_file():
            return from_calibration(json.loads(path.read_text(encoding="utf-8")))
    raise ParamcalcError(f"unknown device {device!r}; built-in: {', '.join(sorted(BUILTIN) + sorted(MEASURED))}",
                         value=device, fix="name a built-in device or pass a calibration JSON path")
