"""Recurrent layers: SimpleRNN / RNN, LSTM, GRU; bidirectional; stacked (torch num_layers).

Per cell ``g`` gates (simple 1, LSTM 4, GRU 3), per direction and layer:
- Keras: kernel (d, g*u), recurrent_kernel (u, g*u), one bias (g*u) — GRU with reset_after=True
  (the default) keeps two, (2, g*u).
- torch: weight_ih (g*h, in), weight_hh (g*h, h_out), bias_ih and bias_hh (g*h each), and for an LSTM
  with proj_size, weight_hr (proj, h); h_out = proj or h; layers after the first read D*h_out.

FLOPs per step and unit, on top of the matrix products: CELL_FLOPS (adding the two products, the gate
nonlinearities and the state update). torch's ``dropout`` runs on each layer's output but the last in
training: a dropout kernel, and its noise and the input it makes are kept.

What the backward keeps: for torch's LSTM on a CPU in float32, oneDNN's kernel's tensors one by one
(``onednn_lstm_workspace``); elsewhere what the device's calibration measured per batch x step x unit,
or a generic rule (gates and states of every step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import Dim
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer, Weight
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import (
    RecurrentWork,
    SavingRules,
    Work,
    inputs_kept,
    kernel,
    weight_casts,
    whole_bytes,
)

GATES = {"simple": 1, "lstm": 4, "gru": 3}
CELL_FLOPS = {
    "simple": 2,  # add the two products, tanh
    "lstm": 22,  # 4 adds, 3 sigmoids (4 each), 2 tanh, 3 products and a sum for c and h
    "gru": 18,  # 3 adds, 2 sigmoids, 1 tanh, r*(W h), (1-z)*n + z*h
}
MERGE_MODES = ("concat", "sum", "mul", "ave", None)


PAGE = 4096  # oneDNN starts each part of an RNN workspace on a page of its own


def _good_row(floats: int) -> int:
    """oneDNN's leading dimension for rows of ``floats`` float32 values (``rnn_utils::get_good_ld``):
    whole 64-byte lines, and one line more where that is a multiple of 256 values (4K aliasing)."""
    row = -(-floats // 16) * 16
    return row + 16 if row % 256 == 0 else row


def _pages(size: Dim) -> Dim:
    return (size + PAGE - 1) // PAGE * PAGE


def onednn_lstm_workspace(steps: Dim, batch: Dim, features: int, units: int) -> Dim:
    """Bytes of the workspace oneDNN's forward-training LSTM keeps for its backward, for one layer and
    one direction over float32 (torch's ``mkldnn_rnn_layer`` on a CPU): the gates of every step, the
    hidden state of every step, three blocks of states of every step and the one before, rows as wide
    as the wider of input and hidden state, and two of cell states; each padded to oneDNN's row width
    and started on a page. Derived from oneDNN 3.x's ``rnn_utils`` and matched to the byte against
    torch 2.13 on AVX-512 and AVX2 CPUs."""
    f32 = 4
    states = 2 * (steps + 1) * batch  # the layer's input and output side, for every step and the first
    return (_pages(steps * batch * _good_row(4 * units) * f32) + _pages(steps * batch * _good_row(units) * f32)
            + 3 * _pages(states * _good_row(max(features, units)) * f32) + 2 * _pages(states * units * f32))


@register_layer("rnn")
@dataclass(frozen=True)
class Recurrent(Layer):
    """One recurrent layer (or a torch stack of ``num_layers``) over (batch, time, features).

    ``layout="keras"``: one bias, returns the last step unless ``return_sequences``, states when
    ``return_state``. ``layout="torch"``: two biases, always returns (output, h_n) — (output, (h_n,
    c_n)) for an LSTM — with ``batch_first`` choosing (N, T, d) or (T, N, d).
    """

    cell: str = "lstm"
    units: Dim = 1
    layout: str = "keras"
    return_sequences: bool = False
    return_state: bool = False
    bidirectional: bool = False
    merge_mode: str | None = "concat"
    num_layers: int = 1
    use_bias: bool = True
    reset_after: bool = True
    batch_first: bool = True
    proj_size: int = 0
    input_size: Dim | None = None
    dropout: float = 0.0  # torch: dropout on each layer's output but the last, in training

    def __post_init__(self) -> None:
        if self.cell not in GATES:
            raise LayerConfigError(f"unknown recurrent cell {shown(self.cell)}; known: {', '.join(GATES)}",
                                   layer=self.name, value=self.cell)
        if self.layout not in ("keras", "torch"):
            raise LayerConfigError(f"layout must be 'keras' or 'torch'. Received: layout={shown(self.layout)}",
                                   layer=self.name, value=self.layout)
        if self.merge_mode not in MERGE_MODES:
            raise LayerConfigError(f"merge_mode must be one of {MERGE_MODES}. Received: {shown(self.merge_mode)}",
                                   layer=self.name, value=self.merge_mode)
        self._set("units", self._size_arg("units", self.units))
        if type(self.num_layers) is not int or self.num_layers < 1:
            raise LayerConfigError(f"num_layers must be a positive integer. Received: {shown(self.num_layers)}",
                                   layer=self.name, value=self.num_layers)
        if type(self.dropout) not in (int, float) or not 0 <= self.dropout < 1:
            raise LayerConfigError(f"dropout must be a number in [0, 1). Received: {shown(self.dropout)}",
                                   layer=self.name, value=self.dropout)
        if self.dropout and self.layout != "torch":
            raise LayerConfigError(f"dropout={shown(self.dropout)} is torch's dropout between stacked layers; "
                                   "Keras' recurrent dropout is not modelled", layer=self.name, value=self.dropout)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if x.rank != 3:
            raise ctx.shape_error(f"{self.display_type} expects a 3-D input (batch, time, features), "
                                  f"received {ctx.format_shape(x.shape)}")
        features = x.shape[-1]
        if self.input_size is not None:
            ctx.require_equal(features, self.input_size,
                              f"{self.display_type} expects input_size {self.input_size}, received {features}")
        if self.layout == "torch":
            return self._infer_torch(x, features, ctx)
        return self._infer_keras(x, features, ctx)

    def _cell_weights(self, prefix: str, d: Dim, h: Dim, h_out: Dim) -> list[Weight]:
        g = GATES[self.cell]
        if self.layout == "keras":
            weights = [Weight(f"{prefix}kernel", (d, g * h)), Weight(f"{prefix}recurrent_kernel", (h, g * h))]
            if self.use_bias:
                two = self.cell == "gru" and self.reset_after
                weights.append(Weight(f"{prefix}bias", (2, g * h) if two else (g * h,)))
            return weights
        weights = [Weight(f"{prefix}weight_ih", (g * h, d)), Weight(f"{prefix}weight_hh", (g * h, h_out))]
        if self.use_bias:
            weights += [Weight(f"{prefix}bias_ih", (g * h,)), Weight(f"{prefix}bias_hh", (g * h,))]
        if self.proj_size:
            weights.append(Weight(f"{prefix}weight_hr", (self.proj_size, h)))
        return weights

    def _step_flops(self, d: Dim, h: Dim, h_out: Dim) -> tuple[Dim, Dim]:
        """(MACs, FLOPs) of one step of one direction for one sample."""
        g = GATES[self.cell]
        macs = g * h * (d + h_out) + (h * self.proj_size if self.proj_size else 0)
        biases = (2 if self.layout == "torch" else 1) * g * h if self.use_bias else 0
        return macs, 2 * macs + biases + CELL_FLOPS[self.cell] * h

    def _infer_keras(self, x: TensorSpec, features: Dim, ctx: Context) -> Inferred:
        batch, steps, u = x.shape[0], x.shape[1], self.units
        weights = []
        prefixes = ["forward_", "backward_"] if self.bidirectional else [""]
        for prefix in prefixes:
            weights += self._cell_weights(prefix, features, u, u)
        macs, flops = self._step_flops(features, u, u)
        scale = batch * steps * self.directions
        width = 2 * u if (self.bidirectional and self.merge_mode == "concat") else u
        seq = (batch, steps) if self.return_sequences else (batch,)
        outputs = [x.with_shape(seq + (u,)), x.with_shape(seq + (u,))] if (self.bidirectional and self.merge_mode is None) \
            else [x.with_shape(seq + (width,))]
        if self.return_state:
            per_direction = 2 if self.cell == "lstm" else 1
            outputs += [x.with_shape((batch, u))] * (per_direction * self.directions)
        merge = 0 if not self.bidirectional or self.merge_mode in (None, "concat") else outputs[0].numel
        return ctx.result(outputs[0], weights=weights, macs=scale * macs, flops=scale * flops + merge,
                          extra_outputs=outputs[1:])

    def _infer_torch(self, x: TensorSpec, features: Dim, ctx: Context) -> Inferred:
        if self.batch_first:
            batch, steps = x.shape[0], x.shape[1]
        else:
            steps, batch = x.shape[0], x.shape[1]
        h = self.units
        h_out = self.proj_size or h
        weights, macs, flops = [], 0, 0
        d = features
        for layer in range(self.num_layers):
            for direction in range(self.directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                weights += [Weight(w.name + suffix, w.shape) for w in self._cell_weights("", d, h, h_out)]
                step_macs, step_flops = self._step_flops(d, h, h_out)
                macs = macs + step_macs
                flops = flops + step_flops
            d = self.directions * h_out
        per_sample_steps = batch * steps
        lead = (batch, steps) if self.batch_first else (steps, batch)
        out = x.with_shape(lead + (self.directions * h_out,))
        states = [x.with_shape((self.directions * self.num_layers, batch, h_out))]
        if self.cell == "lstm":
            states.append(x.with_shape((self.directions * self.num_layers, batch, h)))
        return ctx.result(out, weights=weights, macs=per_sample_steps * macs, flops=per_sample_steps * flops,
                          extra_outputs=states)

    @property
    def output_structure(self):
        """How a torch call returns the outputs: (output, h_n) or (output, (h_n, c_n))."""
        if self.layout == "torch":
            return (0, (1, 2)) if self.cell == "lstm" else (0, 1)
        return None

    # -- for the cost model ----------------------------------------------------------------------------
    def stack(self, call) -> RecurrentWork:
        x = call.input_shapes[0]
        batch, steps = (x[0], x[1]) if self.batch_first else (x[1], x[0])
        return RecurrentWork(self.cell, GATES[self.cell], batch, steps, x[-1], self.units, self.num_layers,
                             self.directions, self.proj_size)

    def work(self, call) -> Work:
        stack = self.stack(call)
        b, t, g, h = stack.batch, stack.steps, stack.gates, stack.units
        products, recurrence = [], []
        for layer, features in enumerate(stack.layer_inputs()):
            for _ in range(stack.directions):
                # the input projection of every step at once; a layer after the first reads the one before,
                # whose weights need its input gradient
                (recurrence if layer else products).append((b * t, features, g * h))
                recurrence += [(b, stack.output_width, g * h)] * t  # the recurrence, step by step
                if stack.projection:
                    recurrence += [(b, h, stack.projection)] * t
        # gates and states of every step, read and written
        memory = self.num_layers * self.directions * t * b * (g + 2) * h * 2
        dropped = self._dropped(stack)
        return self.described(weight_products=tuple(products), state_products=tuple(recurrence),
                              memory_elements=memory,
                              kernels=(kernel("dropout", dropped),) if dropped else (),
                              host_ops=self.num_layers * self.directions * 2, recurrent=stack,
                              autocast_casts=weight_casts(call), keeps_weight_casts=True,
                              host_repeats=self.num_layers * self.directions)

    def saved(self, call, rules: SavingRules) -> list:
        stack = self.stack(call)
        kept = self._onednn_saved(call, stack, rules)
        if kept is not None:
            return kept
        per_unit = rules.measured.get("recurrent_saved", {}).get(self.cell)
        dropped = self._dropped(stack)
        if per_unit is not None:  # measured: the kernel's workspace, its output and states, per layer
            # with dropout between layers, each layer after the first reads a tensor of its own, and the
            # noise that made it is kept too
            kept = self.num_layers * whole_bytes(per_unit) * stack.units_per_layer + 2 * dropped * rules.activation_bytes
        else:  # gates and states of every step, the inputs of the layers after the first, dropout's noise
            per_layer = stack.units_per_layer * (stack.gates + 2)
            kept = (self.num_layers * per_layer + stack.units_per_layer * (self.num_layers - 1) + dropped) \
                * rules.activation_bytes
        return inputs_kept(call, rules)[:1] + [((call.name, "internals"), kept)]

    def _dropped(self, stack: RecurrentWork) -> Dim:
        """Elements dropout runs over in training: every layer's output but the last (torch)."""
        return (self.num_layers - 1) * stack.batch * stack.steps * stack.directions * stack.output_width \
            if self.dropout else 0

    def _onednn_saved(self, call, stack: RecurrentWork, rules: SavingRules) -> list | None:
        """What autograd keeps of a torch LSTM on a CPU in float32, where torch runs oneDNN's LSTM one
        layer and one direction at a time (``mkldnn_rnn_layer``), tensor by tensor; None elsewhere (a GRU,
        a GPU, 16-bit training, a projection, sizes that are not numbers), where the device's measured
        figure or the generic rule decides. Checked against saved-tensor hooks on real CPU runs
        (tests/test_recurrent_onednn.py)."""
        if not (rules.framework == "torch" and rules.cpu and not rules.mixed and rules.activation_bytes == 4
                and self.layout == "torch" and self.cell == "lstm" and not self.proj_size):
            return None
        h, features = stack.units, stack.features
        if type(h) is not int or type(features) is not int:
            return None  # oneDNN pads rows to whole cache lines: the padding needs the numbers
        t, b, d, f32 = stack.steps, stack.batch, stack.directions, 4
        name = call.name
        # the input, time first: the batch-first input is copied so; a time-first one is kept as it is
        kept = [((name, "input, time first"), t * b * features * f32)] if self.batch_first \
            else inputs_kept(call, rules)[:1]
        # the initial states: zeros the module makes, or the (h_0, c_0) it was called with
        kept += inputs_kept(call, rules)[1:3] if len(call.input_shapes) > 1 \
            else [((name, "initial states"), 2 * self.num_layers * d * b * h * f32)]
        for layer, width in enumerate(stack.layer_inputs()):
            if layer and self.dropout:  # between layers in training: the noise, and the input it made
                kept += [((name, f"layer {layer} dropout noise"), t * b * width * f32),
                         ((name, f"layer {layer} input"), t * b * width * f32)]
            elif layer and d == 2:  # the two directions' outputs, joined
                kept.append(((name, f"layer {layer} input"), t * b * width * f32))
            for direction in range(d):
                last = layer == self.num_layers - 1
                # a one-way stack's last output is the module's output, which later layers may keep too
                output = (name, 0) if last and d == 1 else (name, f"layer {layer} output {direction}")
                kept += [(output, t * b * h * f32), ((name, f"layer {layer} final states {direction}"), 2 * b * h * f32),
                         ((name, f"layer {layer} workspace {direction}"), onednn_lstm_workspace(t, b, width, h))]
        return kept

    def backward_workspace(self, call, rules: SavingRules) -> Dim:
        """What the device's calibration measured a recurrent kernel's backward holds (oneDNN's, or Keras'
        loop on torch re-expanding each step's slice of the input projection), one layer at a time."""
        per_unit = rules.measured.get("recurrent_workspace", {}).get(self.cell)
        return whole_bytes(per_unit) * self.stack(call).units_per_layer if per_unit else 0
