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
def test_transformers_model_is_exact(name, replays):
    model, shapes = build(name)
    output_shape, flops = truth(model, shapes)
    est = paramcalc.estimate(model, input_shape=shapes, batch_size=1)
    assert replays == ["replayed"]  # the second batch size replayed, not run (and checked against a run)
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


def test_a_value_read_that_only_checks_the_inputs_says_which_input_spares_it():
    """Hugging Face reads values only to check the inputs. DeBERTa looks for padding in the ids when no
    mask is given, so the estimate needs a mask. BERT reads a given mask to decide whether it can skip it,
    so the estimate needs none. Each message names the line and the input that avoids it, and that way
    gives the model exactly."""
    import torch

    transformers = load()
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000)
    with torch.device("meta"):
        deberta = transformers.DebertaModel(transformers.DebertaConfig(**small)).eval()
    with pytest.raises(paramcalc.SpecError, match="warn_if_padding_and_no_attention_mask") as info:
        paramcalc.estimate(deberta, input_shape={"input_ids": (16,)})
    assert "pass the attention mask too" in str(info.value)
    shapes = {"input_ids": (16,), "attention_mask": (16,)}
    est = paramcalc.estimate(deberta, input_shape=shapes, batch_size=1)
    assert est.params == sum(p.numel() for p in deberta.parameters()) and est.output_shape == (1, 16, 64)

    bert, shapes = build("bert")
    with pytest.raises(paramcalc.SpecError, match="_ignore_bidirectional_mask_sdpa") as info:
        paramcalc.estimate(bert, input_shape={**shapes, "attention_mask": shapes["input_ids"]})
    assert "leave the mask out" in str(info.value)
