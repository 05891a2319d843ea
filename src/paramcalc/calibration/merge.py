"""The median of several calibrations of one device and framework, entry by entry.

On a shared machine each calibration run catches busy moments of its own: on the 2-core development CPU
two runs of the same code minutes apart measured Keras' Adam at 1.5 and 2.2 ns per parameter and its
3x3 convolutions at 200 and 400 GFLOP/s. Sweeps within one run are interleaved and take medians, but a
busy spell lasting minutes moves a whole run; the median of three runs does not follow one of them.

    paramcalc calibrate --merge run1.json run2.json run3.json --out cpu.json

Pure data: no framework is imported.
"""

from __future__ import annotations

import statistics
from typing import Any

from paramcalc.core.errors import ParamcalcError

# Entries that name what was measured: every calibration merged must agree on them.
IDENTITY = ("framework", "device", "machine")
# Entries of a table's rows that say where it measured (a product's sides, a copy's size, a set of
# tensors, an attention layer's shape, a recurrent layer's work, a churned block's size): rows are merged
# only where these agree.
SWEEP_KEYS = {"m", "k", "n", "bytes", "params", "tensors", "batch_heads", "query", "key", "head_dim",
              "work_per_step", "block_bytes"}


def merge(profiles: list[dict], names: list[str] | None = None) -> dict:
    """One calibration whose every measured number is the median of that number in ``profiles`` (shapes,
    sizes and counts must agree); a table only some of them measured is merged over those.

    >>> a = {"framework": "keras", "device": "cpu", "op_overhead_s": 1.0, "matmul": {"float32": [{"m": 8, "seconds": 2.0}]}}
    >>> b = {"framework": "keras", "device": "cpu", "op_overhead_s": 3.0, "matmul": {"float32": [{"m": 8, "seconds": 4.0}]}}
    >>> c = {"framework": "keras", "device": "cpu", "op_overhead_s": 2.0, "matmul": {"float32": [{"m": 8, "seconds": 9.0}]}}
    >>> merged = merge([a, b, c])
    >>> merged["op_overhead_s"], merged["matmul"]["float32"][0]["seconds"], merged["merged_from"]
    (2.0, 4.0, 3)
    """
    names = names or [f"calibration {i + 1}" for i in range(len(profiles))]
    if len(profiles) < 2:
        raise ParamcalcError(f"merging needs two calibrations or more, got {len(profiles)}",
                             value=names, fix="pass every calibration JSON of this device to --merge")
    for key in IDENTITY:
        seen = {str(p.get(key)) for p in profiles}
        if len(seen) > 1:
            raise ParamcalcError(f"the calibrations measured different {key}s: "
                                 + ", ".join(f"{n}: {p.get(key)}" for n, p in zip(names, profiles)),
                                 value=sorted(seen), fix=f"merge only calibrations of one {key}")
    merged = _merge(profiles, "")
    merged["merged_from"] = len(profiles)
    return merged


def _merge(values: list, where: str) -> Any:
    first = values[0]
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for v in values for k in v))
        for k in SWEEP_KEYS.intersection(keys):
            if len({repr(v.get(k)) for v in values}) > 1:
                raise ParamcalcError(f"the calibrations' {where} measured different {k}s "
                                     f"({', '.join(str(v.get(k)) for v in values)}): different sweeps",
                                     value=where, fix="merge calibrations run with the same options (--quick or not)")
        return {k: _merge([v[k] for v in values if k in v], f"{where}.{k}" if where else k) for k in keys}
    if isinstance(first, list):
        if len({len(v) for v in values}) > 1:
            raise ParamcalcError(f"the calibrations' {where} have different lengths "
                                 f"({', '.join(str(len(v)) for v in values)}): different sweeps",
                                 value=where, fix="merge calibrations run with the same options (--quick or not)")
        return [_merge(list(items), f"{where}[{i}]") for i, items in enumerate(zip(*values))]
    if isinstance(first, bool) or not isinstance(first, (int, float)):
        return first  # names, versions, flags: the first calibration's
    if isinstance(first, int) and all(isinstance(v, int) and v == first for v in values):
        return first  # a shape, a size, a count
    median = statistics.median(values)
    return round(median) if all(isinstance(v, int) for v in values) else float(median)


def spread(profiles: list[dict]) -> dict:
    """How far the runs' timings lie from their median: over every number measured in seconds, the
    median and the worst of (largest distance from the median) / median, and where the worst is.

    >>> spread([{"a_s": 1.0}, {"a_s": 1.2}, {"a_s": 0.9}])["worst"]
    0.2
    """
    found: list = []
    _spreads(profiles, "", found)
    if not found:
        return {"count": 0, "median": 0.0, "worst": 0.0, "where": None}
    worst = max(found)
    return {"count": len(found), "median": round(statistics.median(v for v, _ in found), 4),
            "worst": round(worst[0], 4), "where": worst[1]}


def _spreads(values: list, where: str, found: list) -> None:
    first = values[0]
    if isinstance(first, dict):
        for key in first:
            if all(isinstance(v, dict) and key in v for v in values):
                _spreads([v[key] for v in values], f"{where}.{key}" if where else key, found)
    elif isinstance(first, list):
        if len({len(v) if isinstance(v, list) else -1 for v in values}) == 1:
            for i, items in enumerate(zip(*values)):
                _spreads(list(items), f"{where}[{i}]", found)
    elif _is_timing(where) and all(isinstance(v, float) and v > 0 for v in values):
        middle = statistics.median(values)
        found.append((max(abs(v - middle) for v in values) / middle, where))


def _is_timing(where: str) -> bool:
    """Whether an entry holds seconds (a timing, which a busy machine moves): its key says so."""
    key = where.rsplit(".", 1)[-1].split("[", 1)[0]
    return key == "seconds" or key.endswith("_s") or "_s_per_" in key or key.startswith("seconds_per")
