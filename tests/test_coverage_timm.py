"""timm, one architecture per model module (tests/timm_zoo.py): total and trainable parameters, output
shape and 2 x MACs against the model itself on the meta device (torch's FlopCounterMode), exactly. A
model torch itself cannot build or run on the meta device is skipped, with torch's error."""

from __future__ import annotations

import pytest

import paramcalc

from . import timm_zoo

timm = timm_zoo.load()
pytestmark = pytest.mark.skipif(timm is None, reason="timm is not installed")
NAMES = timm_zoo.names(timm) if timm is not None else []


def test_the_zoo_spans_timms_families():
    assert len(NAMES) >= 90


@pytest.mark.parametrize("name", NAMES)
def test_timm_model_is_exact(name):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    try:  # building runs some models' own forward on plain tensors (hybrid embeddings probe their size)
        model, shape = timm_zoo.build(timm, name)
        # not under no_grad: FlopCounterMode's module tracker then fails on models that call a module on a
        # parameter (CaiT's class token, PiT's), with "Expected gradient function to be set"
        with counter:
            output = model(torch.empty(1, *shape, device="meta"))
    except Exception as error:  # torch's own meta device: nothing paramcalc could read
        pytest.skip(f"torch cannot build or run {name} on the meta device: {str(error).splitlines()[0][:120]}")
    est = paramcalc.estimate(model, input_shape=shape, batch_size=1)
    assert (est.params, est.trainable_params) == (sum(p.numel() for p in model.parameters()),
                                                  sum(p.numel() for p in model.parameters() if p.requires_grad))
    assert est.output_shape == tuple(output.shape)
    assert 2 * est.macs_per_batch == counter.get_total_flops()
