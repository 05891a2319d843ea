"""A layer class paramcalc has no rule for, read from a live model: the framework says what it makes.

A live Keras model holds every layer built: its weights exist (their shapes are exact), and Keras infers
the shapes any call makes (``compute_output_spec``). What such a layer computes is code paramcalc does
not read, so its work is estimated, and the estimate is said wherever it is used: every weight matrix
is taken to be applied once per position of the first input (2 FLOPs per weight per position, as for
a Dense layer), every vector weight to add or scale once per position, a table Keras names
``embeddings`` to be read by position (no FLOPs) unless the call projects onto its rows, and what the backward keeps
to be each product's input and the output. A layer fed integers (token ids) is taken to look its
weights up: no FLOPs. Work outside its weights (attention scores, per-element functions) is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from paramcalc.core.dims import Dim, prod
from paramcalc.core.layer import Context, Inferred, Layer
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import SavingRules, Work, output_kept

# how the estimate is made, as estimates and summaries say it
ESTIMATE_BASIS = ("2 FLOPs per weight per position of the first input (lookup tables, named 'embeddings', "
                  "read without FLOPs), training memory as each product's input and the output; work beyond "
                  "its weights not counted")
LOOKUP_BASIS = "a lookup of its weights by the integer ids it reads (no FLOPs)"
PASS_BASIS = "one pass over its inputs and outputs (no weights, no FLOPs)"


@register_layer("foreign")
@dataclass(frozen=True)
class ForeignLayer(Layer):
    """A live model's layer (or operation) of a class paramcalc has no rule for.

    ``origin``: its class as the framework names it (``keras_hub...TransformerEncoder``);
    ``framework``: who inferred its shapes; ``built_weights``: its weights as built (exact shapes;
    ``tied`` marks those another layer owns); ``oracle``: the front-end's view of the live layer, per
    call (by the call's name): ``shapes(input specs, ctx)`` gives the output specs the framework
    infers, ``looks_up(call name)`` whether that call's first input holds integers (ids it looks its
    weights up by).
    """

    origin: str = ""
    framework: str = "Keras"
    built_weights: tuple = ()
    oracle: object = field(default=None, compare=False, repr=False)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        if self.oracle is None:
            raise ctx.shape_error(f"{self.display_type} ({self.origin}) has no rule and no live layer to ask for "
                                  "its shapes", fix="register a rule for the class, or pass the live model")
        outputs = self.oracle.shapes(list(inputs), ctx)
        products, scaled = self._estimate([spec.shape for spec in inputs], outputs[0].shape, ctx.layer_name,
                                          self.built_weights)
        macs = sum((m * k * n for m, k, n in products), 0)
        return ctx.result(outputs[0], weights=self.built_weights, macs=macs, flops=2 * macs + scaled,
                          extra_outputs=outputs[1:])

    def _estimate(self, input_shapes: list, output_shape: tuple, call_name: str, weights) -> tuple:
        """(the (positions, inputs per output, outputs per position) of each weight matrix taken as a
        product, the elements vector weights add or scale), as estimated for one call."""
        if not input_shapes or self.oracle is None or self.oracle.looks_up(call_name):
            return (), 0
        positions = _positions(input_shapes[0])
        products, scaled = [], 0
        for w in weights:
            if len(w.shape) < 2:
                scaled = scaled + positions * w.numel
            elif not _is_table(w, output_shape):
                products.append((positions, w.shape[0], prod(w.shape[1:])))
        return tuple(products), scaled

    def _products(self, call) -> tuple:
        return self._estimate(list(call.input_shapes), call.output_shape, call.name, call.weights)[0]

    def work(self, call) -> Work:
        moved = sum(prod(s) for s in call.input_shapes) + sum(prod(s) for s in call.output_shapes)
        products = self._products(call)
        return self.described(weight_products=products, memory_elements=moved, host_ops=1 + len(products))

    def saved(self, call, rules: SavingRules) -> list:
        kept = [((call.name, f"product input {i}"), m * k * rules.activation_bytes)
                for i, (m, k, _) in enumerate(self._products(call))]
        return kept + output_kept(call, rules)

    def basis(self, call_name: str) -> str:
        """How the cost of the call ``call_name`` is estimated, in words."""
        if self.oracle is not None and self.oracle.looks_up(call_name):
            return LOOKUP_BASIS
        return ESTIMATE_BASIS if self.built_weights else PASS_BASIS

    @property
    def display_type(self) -> str:
        return f"{self.type_name or self.origin.rsplit('.', 1)[-1]} (estimated)"


def _positions(shape: tuple) -> Dim:
    """Positions of an input a weight is applied at: every axis but the last (the batch for a rank-1
    input)."""
    return prod(shape[:-1]) if len(shape) > 1 else shape[0]


def _is_table(weight, output_shape: tuple) -> bool:
    """A lookup table (Keras names them ``embeddings``): rows are read by position or id, not multiplied,
    unless the call projects onto its rows (a tied embedding's reverse call, whose output's last axis
    is the table's row count)."""
    return weight.name.rsplit("/", 1)[-1] == "embeddings" and not (output_shape and output_shape[-1] == weight.shape[0])
