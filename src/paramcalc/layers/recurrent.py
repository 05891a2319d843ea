"""Recurrent layers: SimpleRNN / RNN, LSTM, GRU; bidirectional; stacked (torch num_layers).

Per cell ``g`` gates (simple 1, LSTM 4, GRU 3), per direction and layer:
- Keras: kernel (d, g*u), recurrent_kernel (u, g*u), one bias (g*u) — GRU with reset_after=True
  (the default) keeps two, (2, g*u).
- torch: weight_ih (g*h, in), weight_hh (g*h, h_out), bias_ih and bias_hh (g*h each), and for an LSTM
  with proj_size, weight_hr (proj, h); h_out = proj or h; layers after the first read D*h_out.

FLOPs per step and unit, on top of the matrix products: CELL_FLOPS (adding the two products, the gate
nonlinearities and the state update).
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
        products = []
        for features in stack.layer_inputs():
            for _ in range(stack.directions):
                products.append((b * t, features, g * h))  # the input projection of every step at once
                products += [(b, stack.output_width, g * h)] * t  # the recurrence, step by step
                if stack.projection:
                    products += [(b, h, stack.projection)] * t
        # gates and states of every step, read and written
        memory = self.num_layers * self.directions * t * b * (g + 2) * h * 2
        return self.described(weight_products=tuple(products), memory_elements=memory,
                              host_ops=self.num_layers * self.directions * 2, recurrent=stack,
                              autocast_casts=weight_casts(call), keeps_weight_casts=True,
                              host_repeats=self.num_layers * self.directions)

    def saved(self, call, rules: SavingRules) -> list:
        stack = self.stack(call)
        per_unit = rules.measured.get("recurrent_saved", {}).get(self.cell)
        if per_unit is not None:  # measured: the kernel's workspace, its output and states, per layer
            kept = self.num_layers * whole_bytes(per_unit) * stack.units_per_layer
        else:  # gates and states of every step, and the inputs of the layers after the first
            per_layer = stack.units_per_layer * (stack.gates + 2)
            kept = (self.num_layers * per_layer + stack.units_per_layer * (self.num_layers - 1)) * rules.activation_bytes
        return inputs_kept(call, rules)[:1] + [((call.name, "internals"), kept)]

    def backward_workspace(self, call, rules: SavingRules) -> Dim:
        """What the device's calibration measured a recurrent kernel's backward holds (oneDNN's, or Keras'
        loop on torch re-expanding each step's slice of the input projection), one layer at a time."""
        per_unit = rules.measured.get("recurrent_workspace", {}).get(self.cell)
        return whole_bytes(per_unit) * self.stack(call).units_per_layer if per_unit else 0
