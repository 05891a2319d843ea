"""Hugging Face transformers architectures (encoders, decoders with tied embeddings, encoder-decoders,
vision, audio) built from small configs on the meta device: parameters and the first output's shape
exactly as torch has them, and forward FLOPs as torch's FlopCounterMode counts them (2 x the
multiply-adds of matrix products, convolutions and attention). torch.fx cannot trace these models:
paramcalc reads them by running the forward on meta tensors."""

from __future__ import annotations

import pytest

import paramcalc

from .transformers_zoo import build, cases, load, truth

pytest.importorskip("torch")
if load() is None:
    pytest.skip("transformers is not installed", allow_module_level=True)


@pytest.mark.parametrize("name", list(cases()))
def test_transformers_model_is_exact(name):
    model, shapes = build(name)
    output_shape, flops = truth(model, shapes)
    est = paramcalc.estimate(model, input_shape=shapes, batch_size=1)
    assert est.params == sum(p.numel() for p in model.parameters())
    assert est.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert est.output_shape == output_shape
    assert 2 * est.macs_per_batch == flops


def test_a_model_that_reads_tensor_values_names_the_module_and_the_way_out():
    model, shapes = build("bart")
    model.config._attn_implementation = "sdpa"  # its mask code asks `if mask.all()` of a tensor
    for module in model.modules():
        if hasattr(module, "config"):
            module.config._attn_implementation = "sdpa"
    with pytest.raises(paramcalc.SpecError, match="reads the value of a tensor") as info:
        paramcalc.estimate(model, input_shape=shapes)
    assert "model.decoder" in str(info.value) and 'attn_implementation="eager"' in str(info.value)


def test_a_default_size_7b_class_causal_lm_is_exact():
    import torch

    transformers = load()
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig()).eval()  # Llama-2-7B's sizes
    shapes = {"input_ids": (64,)}
    output_shape, flops = truth(model, shapes)
    est = paramcalc.estimate(model, input_shape=shapes, batch_size=1)
    assert est.params == sum(p.numel() for p in model.parameters()) == 6_738_415_616
    assert est.output_shape == output_shape and 2 * est.macs_per_batch == flops
