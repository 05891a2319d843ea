"""Hugging Face transformers architectures (encoders, decoders with tied embeddings, encoder-decoders,
vision, audio) built from small configs on the meta device: parameters and the first output's shape
exactly as torch has them, and forward FLOPs as torch's FlopCounterMode counts them (2 x the
multiply-adds of matrix products, convolutions and attention). torch.fx cannot trace these models:
paramcalc reads them by running the forward on meta tensors."""

from __future__ import annotations

import pytest

import paramcalc

from .autograd_kept import kept_by_autograd
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


# SpecAugment draws its training masks from tensor values, which meta tensors do not have
_TRAINING_READS_VALUES = {"wav2vec2"}


@pytest.mark.parametrize("name", [n for n in cases() if n not in _TRAINING_READS_VALUES])
def test_transformers_model_keeps_what_a_real_cpu_run_keeps(name):
    """Training mode, random weights, on the CPU: what autograd saves (with the input batch) against
    the activations and input batch predicted with the CPU's rules, to the byte."""
    import torch

    transformers = load()
    _, cls, config_cls, arguments, shapes = cases()[name]
    torch.manual_seed(0)
    model = getattr(transformers, cls)(getattr(transformers, config_cls)(**arguments)).train()
    data = {n: torch.randint(0, 100, (2, *s)) if n.endswith("_ids") else torch.randn(2, *s) for n, s in shapes.items()}
    kept = kept_by_autograd(model, lambda: model(**data), list(data.values()))
    est = paramcalc.estimate(model.to("meta"), input_shape=shapes, batch_size=2, optimizer="sgd", device="cpu")
    assert est.training.memory.activations + est.training.memory.input_batch == kept


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
