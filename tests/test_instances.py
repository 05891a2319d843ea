"""Instances made without __init__ (core/instances.py) equal those their constructor makes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from paramcalc.analysis.estimate import LayerRow
from paramcalc.core.graph import GraphNode
from paramcalc.core.instances import made
from paramcalc.layers.captured import CapturedOp


def test_rows_nodes_and_captured_operations_made_without_init_equal_constructed_ones():
    op = dict(name="blocks.0:mul", type_name="mul", op="aten.mul", input_forms=((2, 3), (3,)),
              output_forms=((2, 3),), output_dtypes=("float32",), reads=2, saves=((("x", 0), (2, 3), None),))
    assert made(CapturedOp, op) == CapturedOp(**op)
    assert made(CapturedOp, op).infer is not None
    node = dict(name="blocks.0:mul", layer=CapturedOp(**op), inbound=(("x", 0),), module="blocks.0")
    assert made(GraphNode, node) == GraphNode(**node)
    row = dict(name="fc", type="Linear", kind="dense", input_shapes=((2, 3),), output_shape=(2, 4), params=16,
               trainable_params=16, non_trainable_params=0, buffers=0, macs=12, flops=24, macs_per_batch=24,
               flops_per_batch=48)
    assert made(LayerRow, row) == LayerRow(**row)
    assert made(LayerRow, row).weights == () and made(LayerRow, row).module is None


def test_a_class_that_checks_its_fields_is_refused():
    @dataclass
    class Checked:
        size: int
        parts: list = field(default_factory=list)

        def __post_init__(self):
            assert self.size > 0

    with pytest.raises(TypeError, match="__post_init__"):
        made(Checked, {"size": -1})
