"""Every torchvision classification, segmentation and video model, built on the meta device with no
weights: parameters and output shapes exactly as torch has them, and forward FLOPs as torch's
FlopCounterMode counts them (2 x the multiply-adds of matrix products and convolutions, the ops it
counts). Models paramcalc cannot read yet are expected failures that must fail (strict): when one starts
to work, its mark comes off."""

from __future__ import annotations

import pytest

import paramcalc
from paramcalc.core.errors import SpecError

from .torchvision_zoo import build, input_shape, load, truth, zoo

torch = pytest.importorskip("torch")
torchvision = load()
if torchvision is None:
    pytest.skip("torchvision is not installed", allow_module_level=True)
# What stops each: a torchvision function torch.fx keeps whole (torch.fx.wrap), which a trace at the
# ATen level would see through; or einsum.
NOT_YET = {
    **{name: "torchvision's _get_relative_position_bias is a wrapped function"
       for name in ("swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b")},
    **{name: "torchvision's _compute_pad_size_3d is a wrapped function" for name in ("swin3d_t", "swin3d_s", "swin3d_b")},
    **{name: "torchvision's mvit _unsqueeze is a wrapped function" for name in ("mvit_v1_b", "mvit_v2_s")},
    "maxvit_t": "torch.einsum",
}


def _cases():
    for family, name in zoo():
        marks = [pytest.mark.xfail(reason=NOT_YET[name], raises=SpecError, strict=True)] if name in NOT_YET else []
        yield pytest.param(family, name, id=name, marks=marks)


@pytest.mark.parametrize("family,name", list(_cases()))
def test_torchvision_model_is_exact(family, name):
    model = build(family, name)
    shape = input_shape(family, name)
    output_shape, flops = truth(model, shape)
    est = paramcalc.estimate(model, input_shape=shape, batch_size=1)
    assert est.params == sum(p.numel() for p in model.parameters())
    assert est.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert est.output_shape == output_shape
    assert 2 * est.macs_per_batch == flops
