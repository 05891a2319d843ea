"""Text renderings of an Estimate. The Estimate never formats itself; this module only formats."""

from __future__ import annotations

import textwrap

from .dims import format_count
from .estimate import FLOP_CONVENTION

_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(value) -> str:
    """1,801,831,101 * 4 bytes -> '6.71 GiB' (display only; the exact int stays on the Estimate)."""
    if type(value) is not int:
        return f"{value} B"
    size, unit = value, 0
    while size >= 1024 ** (unit + 1) and unit < len(_BINARY_UNITS) - 1:
        unit += 1
    if unit == 0:
        return f"{value} B"
    hundredths = value * 100 // 1024 ** unit
    return f"{hundredths // 100:,}.{hundredths % 100:02d} {_BINARY_UNITS[unit]}"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "─" * (sum(widths) + 2 * (len(widths) - 1))
    return [rule, line(headers), rule.replace("─", "═"), *(line(r) for r in rows), rule]


def render_text(est, *, width: int = 100, diagnostics: bool = True) -> str:
    """A Keras-summary-like table, then totals, diagnostics, assumptions and notes."""
    framework = f" [{est.framework}]" if est.framework else ""
    out = [f'Model: "{est.name}"{framework}  input {est.format_shape((est.batch_size if est.batch_size is not None else None,) + tuple(est.input_shape))}']
    rows = []
    for row in est.layers:
        params = format_count(row.params)
        if row.shared_with:
            params = f"(shared with {row.shared_with})"
        rows.append([f"{row.name} ({row.type})", est.format_shape(row.output_shape), params,
                     format_count(row.flops)])
    out += _table(["Layer (type)", "Output Shape", "Param #", "FLOPs/sample"], rows, right={2, 3})
    out.append(f" Total params: {format_count(est.params)} ({format_bytes(est.param_bytes)} in {est.dtype})")
    out.append(f" Trainable params: {format_count(est.trainable_params)}")
    out.append(f" Non-trainable params: {format_count(est.non_trainable_params)}")
    if est.buffers != 0:
        out.append(f" Buffers: {format_count(est.buffers)}")
    out.append(f" Forward FLOPs per sample: {format_count(est.flops)} (MACs: {format_count(est.macs)})")
    if est.batch_size is not None:
        out.append(f" Forward FLOPs per batch of {format_count(est.batch_size)}: "
                   f"{format_count(est.flops_per_batch)}")
    out.append(f" ({FLOP_CONVENTION})")
    if est.training is not None:
        out += _training_lines(est.training)
    if diagnostics and est.diagnostics:
        out.append("")
        out.append("Diagnostics:")
        for d in est.diagnostics:
            head = f"[{d.severity}] {d.code}" + (f" at '{d.layer}'" if d.layer else "")
            out.append(f" {head}")
            out += textwrap.wrap(d.message, width, initial_indent="   ", subsequent_indent="   ")
            out += textwrap.wrap(f"Fix: {d.fix}", width, initial_indent="   ", subsequent_indent="   ")
    if est.assumptions:
        out.append("")
        out.append("Assumptions (undecidable from the symbols; checked again by subs()):")
        out += [f" - '{a.layer}': {a}" for a in est.assumptions]
    if est.notes:
        out.append("")
        out += [f"Note: {n}" for n in est.notes]
    return "\n".join(out)


def _training_lines(cost) -> list[str]:
    m = cost.memory
    lines = ["", f"Training step ({cost.optimizer}, {cost.precision}, batch {format_count(cost.batch_size)}):"]
    lines.append(f" Memory: weights {format_bytes(m.weights)} + gradients {format_bytes(m.gradients)} + optimizer "
                 f"{format_bytes(m.optimizer)} + saved activations {format_bytes(m.activations)} + input batch "
                 f"{format_bytes(m.input_batch)}; predicted peak {format_bytes(m.peak)}")
    lines.append(f" FLOPs per step: forward {format_count(cost.forward_flops)}, input gradients "
                 f"{format_count(cost.dgrad_flops)}, weight gradients {format_count(cost.wgrad_flops)}")
    if cost.step_seconds is not None:
        rate = cost.samples_per_second
        lines.append(f" On {cost.device}: {format_seconds(cost.step_seconds)} per step"
                     + (f", {rate:,.0f} samples/s" if rate else "")
                     + f" (host {format_seconds(cost.host_seconds)}, device {format_seconds(cost.device_seconds)})")
        top = ", ".join(f"{name} {format_seconds(sec)}" for name, sec in cost.layer_seconds[:3] if sec > 0)
        if top:
            lines.append(f" Slowest layers: {top}")
    return lines


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"
