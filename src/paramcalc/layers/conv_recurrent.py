"""Convolutional LSTM: Keras ConvLSTM1D/2D/3D, an LSTM whose four gates are convolutions.

Over (batch, time, *spatial, channels) (channels first: (batch, time, channels, *spatial)), each step
convolves the step's input with a kernel (k..., channels, 4 x filters) on the layer's strides, padding and
dilation, and the previous output h with a recurrent kernel (k..., filters, 4 x filters), "same" padding
and stride 1, so that h keeps the shape of the input convolution's output. One bias (4 x filters). The
gates then update the carry c and the output h as an LSTM's do.

FLOPs per step: both convolutions (2 x MACs), the bias, and an LSTM cell's per-unit arithmetic at every
position (``CELL_FLOPS``). The convolutions of the state are state products (``Work``): their gradients
pass from step to step wherever the backward runs through the layer. What the backward keeps is the generic recurrent rule (the input, and each
step's gates and states), not checked against a framework's allocator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import Dim, prod
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Weight
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import SavingRules, Work, inputs_kept
from paramcalc.layers.conv import _Windowed
from paramcalc.layers.recurrent import CELL_FLOPS, GATES

# framework operations per step: the three splits of the weights Keras makes each step, four input and
# four recurrent convolutions with the bias adds, four gate sums, three sigmoids, two tanh, the carry's
# products and sum
_OPS_PER_STEP = 24


@register_layer("conv_lstm")
@dataclass(frozen=True)
class ConvLSTM(_Windowed):
    """``ConvLSTM(filters, kernel_size, rank=2)``: Keras ConvLSTM1D/2D/3D. Returns the last step's output
    (batch, *spatial out, filters), or every step's with ``return_sequences`` (batch, time, ...), then the
    final h and c with ``return_state``."""

    filters: Dim = 1
    kernel_size: object = 1
    return_sequences: bool = False
    return_state: bool = False

    def __post_init__(self) -> None:
        self._check_common()
        self._set("filters", self._size_arg("filters", self.filters))
        if self.activation not in (None, "linear"):  # the convolutions' field; the cell's tanh and sigmoids are its own
            raise LayerConfigError(f"{self.display_type} applies no activation after its cell. Received: "
                                   f"activation={shown(self.activation)}", layer=self.name, value=self.activation)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if x.rank != self.rank + 3:
            raise ctx.shape_error(f"{self.display_type} expects a {self.rank + 3}-D input (batch, time, "
                                  f"{self.rank} spatial axes and channels), received {ctx.format_shape(x.shape)}")
        batch, steps = x.shape[0], x.shape[1]
        step = x.with_shape((batch,) + tuple(x.shape[2:]))
        axes, channel_axis, lengths = self._spatial(ctx, step)
        channels = step.shape[channel_axis]
        state = self._output(step, axes, channel_axis, lengths, self.filters)
        gates = GATES["lstm"] * self.filters
        weights = self._weights([Weight("kernel", self.kernel_size + (channels, gates)),
                                 Weight("recurrent_kernel", self.kernel_size + (self.filters, gates))], gates)
        window = prod(self.kernel_size)
        step_macs = state.numel * GATES["lstm"] * window * (channels + self.filters)
        step_flops = 2 * step_macs + (GATES["lstm"] if self.use_bias else 0) * state.numel \
            + CELL_FLOPS["lstm"] * state.numel
        out = x.with_shape((batch, steps) + tuple(state.shape[1:])) if self.return_sequences else state
        extra = [state, state] if self.return_state else []
        return ctx.result(out, weights=weights, macs=steps * step_macs, flops=steps * step_flops,
                          extra_outputs=extra)

    # -- for the cost model ----------------------------------------------------------------------------
    def _sizes(self, call) -> tuple:
        """(steps, positions of one step's state over the batch, input channels)."""
        x, state = call.input_shapes[0], call.output_shapes[-1] if self.return_state else None
        steps = x[1]
        channels = x[-1] if self.channels_last else x[2]
        if state is None:
            out = call.output_shape
            state = (out[0],) + tuple(out[2:]) if self.return_sequences else out
        return steps, prod(state) // self.filters, channels

    def work(self, call) -> Work:
        steps, positions, channels = self._sizes(call)
        window, gates = prod(self.kernel_size), GATES["lstm"] * self.filters
        inputs = ((positions, window * channels, gates),) * steps
        recurrence = ((positions, window * self.filters, gates),) * steps
        # each step reads and writes its gates, the carry and the output
        memory = steps * positions * (GATES["lstm"] + 2) * self.filters * 2
        return self.described(weight_products=inputs, state_products=recurrence, memory_elements=memory, host_ops=_OPS_PER_STEP * steps,
                              bias_elements=steps * positions * gates if self.use_bias else 0,
                              has_bias=self.use_bias)

    def saved(self, call, rules: SavingRules) -> list:
        steps, positions, _ = self._sizes(call)
        kept = steps * positions * self.filters * (GATES["lstm"] + 2) * rules.activation_bytes
        return inputs_kept(call, rules)[:1] + [((call.name, "gates and states"), kept)]
