"""GLU (torch ``nn.GLU(dim)``, ``F.glu``): a gated linear unit, ``a * sigmoid(b)`` of the two halves of its
input along ``axis``. No weights; the axis must have an even size.

The whole kind is this file (and its torch mapping): shapes, FLOPs, and for the cost model its work (a
memory-bound pass: it reads the input and writes half of it) and what its backward keeps (torch's
GluBackward0 keeps the input alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import exact_div, prod
from paramcalc.core.layer import Context, Inferred, Layer
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import SavingRules, Work, inputs_kept
from paramcalc.layers.elementwise import ACTIVATION_FLOPS

# per output element: the sigmoid of the gate, then the product
GLU_FLOPS = ACTIVATION_FLOPS["sigmoid"] + 1


@register_layer("glu")
@dataclass(frozen=True)
class GLU(Layer):
    """``GLU(axis=-1)``; ``axis`` counts the batch axis as 0, as torch's ``dim`` does.

    >>> from paramcalc import estimate, Sequential, Dense, GLU
    >>> estimate(Sequential([Dense(16), GLU()]), input_shape=(8,)).output_shape[1:]
    (8,)
    """

    axis: int = -1

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if not -x.rank <= self.axis < x.rank or self.axis % x.rank == 0:
            raise ctx.shape_error(f"{self.display_type}: axis {self.axis} is out of range for an input of rank "
                                  f"{x.rank} (the batch axis cannot be split)")
        axis = self.axis % x.rank
        half = exact_div(x.shape[axis], 2)
        if half is None:
            raise ctx.shape_error(f"{self.display_type} halves axis {self.axis}, whose size {x.shape[axis]} is not even",
                                  fix="give the axis an even size, e.g. a Linear to twice the width before GLU")
        out = x.with_shape(x.shape[:axis] + (half,) + x.shape[axis + 1:])
        return ctx.result(out, flops=GLU_FLOPS * out.numel)

    def work(self, call) -> Work:
        return self.described(memory_elements=prod(call.input_shapes[0]) + prod(call.output_shape))

    def saved(self, call, rules: SavingRules) -> list:
        return inputs_kept(call, rules)[:1]
