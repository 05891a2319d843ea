"""Text renderings of an Estimate. The Estimate never formats itself; this module only formats."""

from __future__ import annotations

import textwrap

from paramcalc.core.dims import format_count
from paramcalc.core.units import FLOP_CONVENTION, format_bytes, format_seconds


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "─" * (sum(widths) + 2 * (len(widths) - 1))
    return [rule, line(headers), rule.replace("─", "═"), *(line(r) for r in rows), rule]


_STYLES = {"bold": "\x1b[1m", "warning": "\x1b[33m", "info": "\x1b[36m", "reset": "\x1b[0m"}


def _style(text: str, style: str, color: bool) -> str:
    return f"{_STYLES[style]}{text}{_STYLES['reset']}" if color else text


def render_text(est, *, width: int = 100, diagnostics: bool = True, color: bool = False,
                depth: int | None = None) -> str:
    """A Keras-summary-like table, then totals, diagnostics, assumptions and notes.

    ``color`` adds ANSI styles (the CLI sets it on a terminal, never when piped or with NO_COLOR).
    ``depth`` shows the user's module tree to that depth instead of one row per layer call (a torch model
    read by running its forward shows depth 3 unless told, as torchinfo does); 0 shows every row.
    """
    out = [_style(_head(est), "bold", color)]
    depth = est.summary_depth if depth is None else depth
    out += _module_table(est, depth) if depth else _layer_table(est)
    out.append(_style(f" Total params: {format_count(est.params)} ({format_bytes(est.param_bytes)} in {est.dtype})",
                      "bold", color))
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
            out.append(" " + _style(head, d.severity if d.severity in _STYLES else "bold", color))
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


def _layer_table(est) -> list[str]:
    connected = _is_graph(est)
    rows = []
    for row in est.layers:
        params = format_count(row.params)
        if row.shared_with:
            params = f"(shared with {row.shared_with})"
        cells = [f"{row.name} ({row.type})", est.format_shape(row.output_shape), params, format_count(row.flops)]
        if connected:
            cells.append(", ".join(_reference(ref) for ref in row.inbound))
        rows.append(cells)
    headers = ["Layer (type)", "Output Shape", "Param #", "FLOPs/sample"] + (["Connected to"] if connected else [])
    return _table(headers, rows, right={2, 3})


def _module_table(est, depth: int) -> list[str]:
    """One row per module down to ``depth``, indented by level, each with its subtree's figures."""
    rows = [["  " * (row.depth - 1) + (f"{row.name} ({row.type})" if row.type else row.name),
             est.format_shape(row.output_shape), format_count(row.params), format_count(row.flops)]
            for row in est.by_module(depth)]
    return _table(["Module (type)", "Output Shape", "Param #", "FLOPs/sample"], rows, right={2, 3})


def _head(est) -> str:
    framework = f" [{est.framework}]" if est.framework else ""
    return f'Model: "{est.name}"{framework}  {_inputs_text(est)}'


def _inputs_text(est) -> str:
    """The model's input, or, with several inputs or outputs, every one of them by name."""
    batch = (est.batch_size,)
    if len(est.inputs) <= 1 and len(est.output_shapes) <= 1:
        return f"input {est.format_shape(batch + tuple(est.input_shape))}"
    inputs = ", ".join(f"{name} {est.format_shape(batch + tuple(shape))}" for name, shape in est.inputs)
    names = est.output_names or tuple(f"output {i}" for i in range(len(est.output_shapes)))
    outputs = ", ".join(f"{name} {est.format_shape(shape)}" for name, shape in zip(names, est.output_shapes))
    return f"inputs {inputs}; outputs {outputs}"


def _is_graph(est) -> bool:
    """Whether the model is more than a chain (several inputs, a branch, a merge): then each row says
    what it reads, as Keras' summary does for functional models."""
    previous = est.inputs[0][0] if est.inputs else None
    for row in est.layers:
        if tuple(row.inbound) != ((previous, 0),):
            return True
        previous = row.name
    return len(est.output_shapes) > 1


def _reference(ref: tuple) -> str:
    name, index = ref
    return name if index == 0 else f"{name}:{index}"


def _training_lines(cost) -> list[str]:
    m = cost.memory
    from paramcalc.cost.step import FRAMEWORK_NAMES

    per_rank = f"; per rank, {cost.parallel.label}" if cost.parallel is not None else ""
    lines = ["", f"Training step ({cost.optimizer}, {cost.precision}, batch {format_count(cost.batch_size)}; "
                 f"{FRAMEWORK_NAMES[cost.framework]}{per_rank}):"]
    spread = "".join(f" + {label} {format_bytes(nbytes)}" for label, nbytes in (
        ("parameters gathered whole", m.gathered), ("communication buffers", m.communication)) if nbytes)
    lines.append(f" Memory: weights {format_bytes(m.weights)} + gradients {format_bytes(m.gradients)} + optimizer "
                 f"{format_bytes(m.optimizer)} + saved activations {format_bytes(m.activations)} + input batch "
                 f"{format_bytes(m.input_batch)}{spread}; predicted peak {format_bytes(m.peak)}")
    for c in cost.collectives:
        lines.append(f" {c.name}: {c.calls} call{'s' if c.calls != 1 else ''}, {format_bytes(c.payload)} "
                     f"({c.purpose}); a ring sends {format_bytes(c.sent)} from each rank")
    if m.peak_moment is not None:
        lines.append(" " + _peak_text(m, cost.optimizer))
    lines.append(f" FLOPs per step: forward {format_count(cost.forward_flops)}, input gradients "
                 f"{format_count(cost.dgrad_flops)}, weight gradients {format_count(cost.wgrad_flops)}"
                 + (f", checkpointed modules run again {format_count(cost.recompute_flops)}" if cost.recompute_flops else ""))
    if cost.step_seconds is not None:
        rate = cost.samples_per_second
        lines.append(f" On {cost.device_label or cost.device}: {format_seconds(cost.step_seconds)} per step"
                     + (f", {rate:,.0f} samples/s" if rate else "")
                     + f" (host {format_seconds(cost.host_seconds)}, device {format_seconds(cost.device_seconds)})")
        if cost.communication_seconds is not None:
            lines.append(f" Communication: {format_seconds(cost.communication_seconds)} on the interconnect "
                         f"({cost.communication_link}), {format_seconds(cost.exposed_communication_seconds)} of it "
                         "not hidden by the compute and counted in the step (datasheet links, uncalibrated)")
        top = ", ".join(f"{name} {format_seconds(sec)}" for name, sec in cost.layer_seconds[:3] if sec > 0)
        if top:
            lines.append(f" Slowest layers: {top}")
    return lines


def _peak_text(m, optimizer: str) -> str:
    """What is alive at the peak, so that it reads as a sum beside the parts above."""
    moment = m.peak_moment
    when = {"forward": f"in the forward pass, at '{moment.layer}'",
            "loss": "at the loss, between the passes",
            "backward": f"in the backward pass, at '{moment.layer}'",
            "update": f"in the {optimizer} update"}[moment.phase]
    parts = [("weights", m.weights), ("optimizer state", m.optimizer), ("input batch", m.input_batch),
             ("parameters gathered whole", m.gathered), ("communication buffers", m.communication), *moment.parts]
    return (f"Peak {when}: " + " + ".join(f"{label} {format_bytes(nbytes)}" for label, nbytes in parts if nbytes)
            + f" = {format_bytes(m.peak)}")


def render_markdown(est) -> str:
    """The summary as a Markdown table, for docs, pull requests and notebooks."""
    connected = _is_graph(est)
    lines = [f"**{est.name}** ({est.framework or 'paramcalc'}), {_inputs_text(est)}", "",
             "| Layer (type) | Output Shape | Param # | FLOPs/sample |" + (" Connected to |" if connected else ""),
             "|---|---|---:|---:|" + ("---|" if connected else "")]
    for row in est.layers:
        params = f"(shared with {row.shared_with})" if row.shared_with else format_count(row.params)
        reads = f" {', '.join(_reference(ref) for ref in row.inbound)} |" if connected else ""
        lines.append(f"| {row.name} ({row.type}) | `{est.format_shape(row.output_shape)}` | {params} | "
                     f"{format_count(row.flops)} |{reads}")
    lines += ["", f"Total params: **{format_count(est.params)}** ({format_bytes(est.param_bytes)} in {est.dtype}); "
              f"trainable {format_count(est.trainable_params)}, non-trainable {format_count(est.non_trainable_params)}. "
              f"Forward FLOPs per sample: {format_count(est.flops)} ({FLOP_CONVENTION})."]
    if est.training is not None:
        lines += ["", *[line.strip() for line in _training_lines(est.training) if line.strip()]]
    for d in est.diagnostics:
        lines += ["", f"> **{d.severity}: {d.code}** at `{d.layer}`: {d.message} *Fix:* {d.fix}"]
    return "\n".join(lines)


def render_comparison(a, b) -> str:
    """Two estimates side by side, and what changed between them, layer by layer."""
    def fig(est, value):
        return format_count(value)

    rows = [("input", a.format_shape((a.batch_size,) + tuple(a.input_shape)),
             b.format_shape((b.batch_size,) + tuple(b.input_shape))),
            ("output", a.format_shape(a.output_shape), b.format_shape(b.output_shape)),
            ("params", fig(a, a.params), fig(b, b.params)),
            ("FLOPs/sample", fig(a, a.flops), fig(b, b.flops))]
    if a.training is not None and b.training is not None:
        rows.append(("training peak", format_bytes(a.training.memory.peak), format_bytes(b.training.memory.peak)))
        if a.training.step_seconds and b.training.step_seconds:
            rows.append(("step time", format_seconds(a.training.step_seconds), format_seconds(b.training.step_seconds)))
    width = max(len(r[1]) for r in rows) + 2
    out = [f"{'':<15}{a.name:<{width}}{b.name}"] + [f"{k:<15}{x:<{width}}{y}" for k, x, y in rows]
    if type(a.params) is int and type(b.params) is int and a.params:
        out.append(f"{'':<15}{b.name} has {b.params / a.params:,.2f}x the parameters of {a.name}")
    out += ["", "Layers:"]
    a_rows, b_rows = {r.name: r for r in a.layers}, {r.name: r for r in b.layers}
    for name in list(dict.fromkeys(list(a_rows) + list(b_rows))):
        ra, rb = a_rows.get(name), b_rows.get(name)
        if ra is None:
            out.append(f" + {name} ({rb.type}) {b.format_shape(rb.output_shape)}, {format_count(rb.params)} params")
        elif rb is None:
            out.append(f" - {name} ({ra.type}) {a.format_shape(ra.output_shape)}, {format_count(ra.params)} params")
        elif ra.params != rb.params or ra.output_shape[1:] != rb.output_shape[1:]:
            out.append(f" ~ {name}: {a.format_shape(ra.output_shape)} -> {b.format_shape(rb.output_shape)}, "
                       f"params {format_count(ra.params)} -> {format_count(rb.params)}")
    new = [d for d in b.diagnostics if d.code not in {x.code for x in a.diagnostics}]
    if new:
        out += ["", f"Why ({b.name} has findings that {a.name} has not):"]
        for d in new:
            out += textwrap.wrap(f"[{d.severity}] {d.code} at '{d.layer}': {d.message}", 100,
                                 initial_indent=" ", subsequent_indent="   ")
            out += textwrap.wrap(f"Fix: {d.fix}", 100, initial_indent="   ", subsequent_indent="   ")
    return "\n".join(out)


def render_explanation(est) -> str:
    """The diagnostics as prose."""
    if not est.diagnostics:
        return f"{est.name}: no pitfalls found ({format_count(est.params)} parameters)."
    out = [f"{est.name}: {len(est.diagnostics)} finding(s)."]
    for i, d in enumerate(est.diagnostics, 1):
        out += [""] + textwrap.wrap(f"{i}. {d.message}", 100, subsequent_indent="   ")
        out += textwrap.wrap(f"What to do: {d.fix}.", 100, initial_indent="   ", subsequent_indent="   ")
    return "\n".join(out)
