"""Every torchvision classification, segmentation and video model, built on the meta device with no
weights: parameters and output shapes exactly as torch has them, and forward FLOPs as torch's
FlopCounterMode counts them (2 x the multiply-adds of matrix products and convolutions, the ops it
counts). Most are read with torch.fx; Swin, MViT and MaxViT by running their forward on meta tensors."""

from __future__ import annotations

import pytest

import paramcalc

from .torchvision_zoo import build, input_shape, load, truth, zoo

torch = pytest.importorskip("torch")
torchvision = load()
if torchvision is None:
    pytest.skip("torchvision is not installed", allow_module_level=True)


def _cases():
    for family, name in zoo():
        yield pytest.param(family, name, id=name)


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
