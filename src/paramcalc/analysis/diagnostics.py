"""Rules that read a propagated Estimate and explain its pitfalls.

Each rule has a stable code, and each finding names the layer, says what happens with the model's own
numbers, and gives a one-line fix. ``RULES`` lists every rule, so tests and docs can enumerate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from paramcalc.core.dims import (
    dominates,
    equal,
    exact_div,
    format_count,
    is_positive,
    prod,
)


@dataclass(frozen=True)
class Diagnostic:
    """One finding. ``severity``: "warning" (likely a mistake) or "info" (worth knowing)."""

    code: str
    severity: str
    layer: str | None
    message: str
    fix: str

    def to_dict(self) -> dict:
        return {"code": self.code, "severity": self.severity, "layer": self.layer,
                "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Rule:
    code: str
    summary: str
    check: Callable[..., Iterator[Diagnostic]]


RULES: dict[str, Rule] = {}


def rule(code: str, summary: str):
    def decorate(check):
        RULES[code] = Rule(code, summary, check)
        return check
    return decorate


def diagnose(est) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    for r in RULES.values():
        found.extend(r.check(est))
    return found


def _percent(part: int, total: int) -> str:
    """An exact percentage to three decimals, from ints (no float rounding surprises)."""
    thousandths = part * 100_000 // total
    return f"{thousandths // 1000}.{thousandths % 1000:03d}%"


def _is_per_position_dense(row) -> bool:
    return row.kind == "dense" and len(row.input_shapes[0]) >= 3


def _dense_word(est) -> str:
    return "Linear" if est.framework == "torch" else "Dense"


@rule("dense-per-position",
      "A Dense/Linear layer on an input of rank >= 3 acts on the last axis only, once per position, where "
      "that looks unintended: one feature per position, a Flatten after it, or a per-position output "
      "against a per-sample target. Sequence models (Transformer feed-forward layers) are left alone.")
def _dense_per_position(est) -> Iterator[Diagnostic]:
    rows = est.layers
    i = 0
    while i < len(rows):
        row = rows[i]
        if not _is_per_position_dense(row):
            i += 1
            continue
        # One finding per run of per-position Dense layers: the first explains, the rest are counted.
        run_end = i + 1
        while run_end < len(rows) and (_is_per_position_dense(rows[run_end])
                                       or not rows[run_end].weights):
            run_end += 1
        in_shape = row.input_shapes[0]
        features = in_shape[-1]
        flattened = any(r.kind == "flatten" for r in rows[i + 1:run_end + 1])
        ends_per_position = run_end >= len(rows) and len(est.output_shape) >= 3
        against_target = (ends_per_position and est.target_shape is not None
                          and len(est.target_shape) < len(est.output_shape) - 1)
        if not (equal(features, 1) is True or flattened or against_target):
            i = run_end  # per position by design, as a sequence model's layers are
            continue
        later = [r.name for r in rows[i + 1:run_end] if _is_per_position_dense(r)]
        positions = prod(in_shape[1:-1])
        units = row.output_shape[-1]
        word = _dense_word(est)
        message = (f"{word} '{row.name}' receives {est.format_shape(in_shape)}, an input of rank "
                   f"{len(in_shape)}: {word} acts on the last axis only, so its ({est.format_dim(features)}, "
                   f"{est.format_dim(units)}) kernel is applied to each of the {format_count(positions)} "
                   f"positions separately and outputs {est.format_shape(row.output_shape)}.")
        single = equal(features, 1) is True
        if single:
            message += (" The last axis has size 1: each position sees a single feature, so no unit "
                        "ever combines two features.")
        if later:
            message += f" {len(later)} later {word} layer(s) act per position too ({', '.join(later)})."
        if run_end >= len(rows) and len(est.output_shape) >= 3:
            message += (f" The model's output stays per position: {est.format_shape(est.output_shape)}, "
                        "one prediction per position rather than per sample.")
        features_total = prod(in_shape[1:])
        mix = f"to mix all {format_count(features_total)} features in one layer"
        if est.framework == "torch":
            fix = (f"{mix}, feed a 2-D input (x.reshape(len(x), -1)) or put nn.Flatten() before "
                   f"'{row.name}'; if per-position is intended, nothing to change")
        else:
            fix = (f"{mix}, feed 2-D data of shape (samples, {est.format_dim(features_total)}) or put "
                   f"Flatten() before '{row.name}'; if per-position is intended, nothing to change")
        yield Diagnostic("dense-per-position", "warning" if single else "info", row.name, message, fix)
        i = run_end


@rule("batch-axis-in-input-shape",
      "The input shape seems to include the batch axis (torchinfo's input_size does; input_shape is one "
      "sample's shape), so every layer sees one axis too many.")
def _batch_axis_in_input_shape(est) -> Iterator[Diagnostic]:
    if len(est.inputs) != 1 or len(est.input_shape) < 2 or not est.layers:
        return
    leading = est.input_shape[0]
    if type(leading) is not int:
        return
    if type(est.batch_size) is int and leading == est.batch_size and est.batch_size > 1:
        severity, why = "warning", f"equals batch_size={est.batch_size}"
    elif (leading in COMMON_BATCH_SIZES and est.batch_size is None and len(est.output_shape) >= 3
          and equal(est.output_shape[1], leading) is True and _is_per_position_dense(est.layers[0])):
        severity, why = "info", "is a common batch size and stays in the output, which is per position"
    else:
        return
    sample = est.format_shape(tuple(est.input_shape[1:]))
    message = (f"input_shape {est.format_shape(tuple(est.input_shape))} begins with {leading}, which {why}: "
               f"input_shape is one sample's shape, without the batch axis, so each sample is read as {leading} "
               f"rows of {sample} and every layer sees one axis too many.")
    yield Diagnostic("batch-axis-in-input-shape", severity, est.layers[0].name, message,
                     f"if {leading} is the batch size, pass input_shape={sample}, batch_size={leading} "
                     "(torchinfo's input_size includes the batch axis; paramcalc's input_shape, like Keras' "
                     "Input(shape=...), does not)")


# Batch sizes people train with: a leading axis of one of these that a model keeps to its output reads
# as a batch axis given by mistake.
COMMON_BATCH_SIZES = frozenset(2 ** p for p in range(3, 13))


@rule("flatten-explosion",
      "A Flatten feeds a layer that then holds most of the model's parameters.")
def _flatten_explosion(est) -> Iterator[Diagnostic]:
    rows = est.layers
    for i, row in enumerate(rows):
        if row.kind != "flatten":
            continue
        consumer = next((r for r in rows[i + 1:] if r.weights), None)
        if consumer is None or consumer.kind != "dense" or consumer.shared_with:
            continue
        if not dominates(consumer.params, est.params):
            continue
        in_shape = row.input_shapes[0]
        if len(in_shape) < 3:
            continue  # nothing was merged: Flatten on (batch, d) changes nothing
        last = in_shape[-1]
        units = consumer.output_shape[-1]
        per_axis = units * (last + (1 if consumer.layer is not None and consumer.layer.use_bias else 0))
        features = row.output_shape[-1]
        message = (f"Flatten '{row.name}' turns {est.format_shape(in_shape)} into {format_count(features)} "
                   f"features per sample, so the next layer '{consumer.name}' ({consumer.type} "
                   f"{est.format_dim(units)}) holds {format_count(consumer.params)} parameters")
        if type(consumer.params) is int and type(est.params) is int and est.params:
            message += f", {_percent(consumer.params, est.params)} of the model"
        if type(per_axis) is int and type(consumer.params) is int and per_axis:
            message += (f" and {format_count(consumer.params // per_axis)}x the {format_count(per_axis)} it "
                        f"would hold on the unflattened last axis ({format_count(last)} features)")
        else:
            message += (f", against {format_count(per_axis)} on the unflattened last axis "
                        f"({format_count(last)} features)")
        message += "."
        widened = _widening_dense(rows[:i])
        if widened is not None:
            before = widened.input_shapes[0][-1]
            ratio = exact_div(features, prod(est.input_shape))
            message += (f" The flattened axis was widened from {format_count(before)} to "
                        f"{format_count(widened.output_shape[-1])} features per position by "
                        f"'{widened.name}', a {widened.type} acting per position")
            if ratio is not None and is_positive(ratio - 1):
                message += (f": the model flattens {format_count(ratio)}x as many features as its input "
                            f"has ({format_count(prod(est.input_shape))})")
            message += "."
        fix = ("flatten (or reshape) the input before the first Dense instead, so it sees "
               f"{format_count(prod(est.input_shape))} features once; or shrink the positions before "
               "Flatten (pooling, a strided convolution, fewer units per position)")
        yield Diagnostic("flatten-explosion", "warning", row.name, message, fix)


def _widening_dense(rows):
    """The per-position Dense closest before a Flatten that made its last axis wider, if any."""
    for row in reversed(rows):
        if row.weights:
            if _is_per_position_dense(row) and is_positive(row.output_shape[-1] - row.input_shapes[0][-1]):
                return row
            return None
    return None


@rule("loss-broadcast",
      "The model's output per sample does not match target_shape; a loss would broadcast them silently.")
def _loss_broadcast(est) -> Iterator[Diagnostic]:
    if est.target_shape is None or not est.layers:
        return
    out = tuple(est.output_shape[1:])
    target = tuple(est.target_shape)
    if _same_shape(out, target):
        return
    last = est.layers[-1].name
    out_s = est.format_shape(est.output_shape)
    tgt_s = est.format_shape((est.output_shape[0],) + target)
    trailing_one = ((len(out) == len(target) + 1 and _same_shape(out[:-1], target) and equal(out[-1], 1))
                    or (len(target) == len(out) + 1 and _same_shape(target[:-1], out)
                        and equal(target[-1], 1)))
    if trailing_one:
        if est.framework == "keras":
            return  # Keras squeezes the trailing 1 before computing the loss: no broadcasting
        n = est.format_dim(est.output_shape[0])
        # Keras squeezes the trailing 1 (handled above); torch does not. Unknown framework: worth knowing.
        yield Diagnostic(
            "loss-broadcast", "warning" if est.framework == "torch" else "info", last,
            f"the output {out_s} and the target {tgt_s} differ by a trailing axis of size 1: torch's "
            f"mse_loss and l1_loss broadcast them to ({n}, {n}) with only a UserWarning, comparing every "
            "prediction with every target of the batch.",
            "squeeze the output (output.squeeze(-1)) or give the target the same shape (y.unsqueeze(-1))",
        )
        return
    extra = prod(out) if not target else None
    message = (f"the output {out_s} does not match the target {tgt_s}: a loss such as MSE broadcasts "
               "them without an error (Keras silently, torch with only a UserWarning)")
    if extra is not None and is_positive(extra - 1):
        message += (f", so each of the {format_count(extra)} output values per sample is fit to the same "
                    "target instead of one prediction per sample")
    message += "."
    yield Diagnostic("loss-broadcast", "warning", last, message,
                     "end the model in the target's shape, e.g. Flatten before the last Dense or a 2-D "
                     "input, so each sample gets one prediction")


def _same_shape(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(equal(x, y) is not False for x, y in zip(a, b))


@rule("empty-tensor", "A tensor or the batch has a zero-size axis, so figures downstream are 0.")
def _empty_tensor(est) -> Iterator[Diagnostic]:
    if type(est.batch_size) is int and est.batch_size == 0:
        yield Diagnostic("empty-tensor", "warning", None,
                         "batch_size is 0: every per-batch figure (FLOPs, activations) is 0.",
                         "give a positive batch_size")
    for row in est.layers:
        zero_axes = [i for i, d in enumerate(row.output_shape[1:], 1) if type(d) is int and d == 0]
        if zero_axes:
            yield Diagnostic(
                "empty-tensor", "warning", row.name,
                f"'{row.name}' outputs {est.format_shape(row.output_shape)}, a tensor with no elements "
                f"(axis {zero_axes[0]} has size 0): it has {format_count(row.params)} parameters and every "
                "layer after it computes nothing.",
                "check the layer's size arguments (units, target shapes) for a 0",
            )
            return


@rule("opaque-layer", "A layer whose code paramcalc never runs (a Keras Lambda) was taken at its declared shape.")
def _opaque(est) -> Iterator[Diagnostic]:
    for row in est.layers:
        if row.kind == "opaque":
            yield Diagnostic(
                "opaque-layer", "warning", row.name,
                f"'{row.name}' is {row.layer.origin or 'an opaque layer'}: paramcalc never decodes or runs its code, "
                f"so it takes the declared output {est.format_shape(row.output_shape)} and counts no weights or work.",
                "replace the Lambda with a built-in layer, or register a rule for it (register_keras_layer)")


# Share of a CPU step's predicted time spent paging in fresh blocks from which the rule speaks up.
PAGE_CHURN_SHARE = 0.2
GLIBC_MMAP_MAX = 32 * 2**20  # the largest M_MMAP_THRESHOLD glibc accepts on 64-bit hosts


@rule("cpu-page-churn", "On a CPU host, a large share of the training step goes to paging in memory the C "
                        "library returned to the kernel the step before.")
def _cpu_page_churn(est) -> Iterator[Diagnostic]:
    cost = est.training
    if cost is None or not cost.step_seconds or cost.paged_in_seconds < PAGE_CHURN_SHARE * cost.step_seconds:
        return
    block = cost.largest_paged_block
    share = cost.paged_in_seconds / cost.step_seconds
    if block < GLIBC_MMAP_MAX:
        fix = (f"run training with MALLOC_MMAP_THRESHOLD_={GLIBC_MMAP_MAX} MALLOC_TRIM_THRESHOLD_={4 * GLIBC_MMAP_MAX} "
               "(glibc), so freed blocks stay in the heap; on the development CPU this made 512- and 1024-wide "
               "MLPs' Adam updates 2.5-4x faster and a 2-layer LSTM's training step 2x")
    else:
        fix = ("glibc maps blocks of 32 MiB and more from the kernel whatever its settings: preload a caching "
               "allocator (jemalloc or tcmalloc, LD_PRELOAD=...) for training, or make the largest tensors smaller")
    from paramcalc.core.units import format_seconds

    yield Diagnostic(
        "cpu-page-churn", "info", None,
        f"about {share:.0%} of the predicted {format_seconds(cost.step_seconds)} step on {cost.device} is paging in "
        f"fresh memory: glibc's malloc hands blocks of this step (up to {format_count(block)} bytes) back to "
        "the kernel when they are freed and maps them again at the next step.", fix)
