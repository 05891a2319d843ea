"""Hugging Face transformers architectures for the coverage test and benchmarks/coverage.py, built from
small explicit configs on the meta device: no weights, no download.

transformers imports torchvision where it is installed; ``load()`` goes through torchvision_zoo first
(see there for why torchvision needs two operators declared beside the CPU build of torch).
"""

from __future__ import annotations

import copy

SEQ = 16  # tokens per sample
_SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
_TEXT = dict(_SMALL, vocab_size=1000)
_SEQ2SEQ = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=1000)
_TOKENS = {"input_ids": (SEQ,)}
_PAIR = {"input_ids": (SEQ,), "decoder_input_ids": (8,)}
_IMAGE = {"pixel_values": (3, 32, 32)}


def load():
    """transformers, imported; None where it is not installed."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        return None
    from .torchvision_zoo import load as load_torchvision

    load_torchvision()
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def cases() -> dict:
    """name -> (family, model class name, config class name, config arguments, input shapes)."""
    return {
        # encoders
        "bert": ("encoder", "BertModel", "BertConfig", _TEXT, _TOKENS),
        "bert-mlm": ("encoder", "BertForMaskedLM", "BertConfig", _TEXT, _TOKENS),
        "roberta": ("encoder", "RobertaModel", "RobertaConfig", _TEXT, _TOKENS),
        "distilbert": ("encoder", "DistilBertModel", "DistilBertConfig",
                       dict(dim=64, n_layers=2, n_heads=4, hidden_dim=128, vocab_size=1000), _TOKENS),
        "albert": ("encoder", "AlbertModel", "AlbertConfig", dict(_TEXT, embedding_size=32), _TOKENS),
        "electra": ("encoder", "ElectraModel", "ElectraConfig", dict(_TEXT, embedding_size=32), _TOKENS),
        "mobilebert": ("encoder", "MobileBertModel", "MobileBertConfig",
                       dict(_TEXT, embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32,
                            num_feedforward_networks=2), _TOKENS),
        # decoders (causal-LM heads, most with tied embeddings)
        "gpt2": ("decoder", "GPT2LMHeadModel", "GPT2Config", dict(n_layer=2, n_embd=64, n_head=4, vocab_size=1000),
                 _TOKENS),
        "gpt_neo": ("decoder", "GPTNeoForCausalLM", "GPTNeoConfig",
                    dict(num_layers=2, hidden_size=64, num_heads=4, vocab_size=1000,
                         attention_types=[[["global", "local"], 1]]), _TOKENS),
        "gptj": ("decoder", "GPTJForCausalLM", "GPTJConfig",
                 dict(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, rotary_dim=8), _TOKENS),
        "opt": ("decoder", "OPTForCausalLM", "OPTConfig",
                dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, ffn_dim=128, vocab_size=1000,
                     word_embed_proj_dim=64), _TOKENS),
        "llama": ("decoder", "LlamaForCausalLM", "LlamaConfig", dict(_TEXT, num_key_value_heads=2), _TOKENS),
        "mistral": ("decoder", "MistralForCausalLM", "MistralConfig", dict(_TEXT, num_key_value_heads=2), _TOKENS),
        "qwen2": ("decoder", "Qwen2ForCausalLM", "Qwen2Config", dict(_TEXT, num_key_value_heads=2), _TOKENS),
        "gemma": ("decoder", "GemmaForCausalLM", "GemmaConfig", dict(_TEXT, num_key_value_heads=2, head_dim=16),
                  _TOKENS),
        "phi": ("decoder", "PhiForCausalLM", "PhiConfig", _TEXT, _TOKENS),
        "bloom": ("decoder", "BloomForCausalLM", "BloomConfig", dict(hidden_size=64, n_layer=2, n_head=4,
                                                                     vocab_size=1000), _TOKENS),
        "falcon": ("decoder", "FalconForCausalLM", "FalconConfig",
                   dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000), _TOKENS),
        # mixtures of experts (Hugging Face's experts layers run torch's _grouped_mm)
        "mixtral": ("decoder", "MixtralForCausalLM", "MixtralConfig",
                    dict(_TEXT, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2), _TOKENS),
        "qwen2_moe": ("decoder", "Qwen2MoeForCausalLM", "Qwen2MoeConfig",
                      dict(_TEXT, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                           shared_expert_intermediate_size=64), _TOKENS),
        "gpt_oss": ("decoder", "GptOssForCausalLM", "GptOssConfig",
                    dict(_TEXT, num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                         layer_types=["sliding_attention", "full_attention"]), _TOKENS),
        # encoder-decoders
        "t5": ("encoder-decoder", "T5ForConditionalGeneration", "T5Config",
               dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, vocab_size=1000), _PAIR),
        "bart": ("encoder-decoder", "BartForConditionalGeneration", "BartConfig",
                 dict(_SEQ2SEQ, attn_implementation="eager"), _PAIR),
        # vision
        "vit": ("vision", "ViTForImageClassification", "ViTConfig", dict(_SMALL, image_size=32, patch_size=8),
                _IMAGE),
        "clip_vision": ("vision", "CLIPVisionModel", "CLIPVisionConfig", dict(_SMALL, image_size=32, patch_size=8),
                        _IMAGE),
        "convnext": ("vision", "ConvNextForImageClassification", "ConvNextConfig",
                     dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]), {"pixel_values": (3, 64, 64)}),
        "resnet": ("vision", "ResNetForImageClassification", "ResNetConfig",
                   dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], embedding_size=16),
                   {"pixel_values": (3, 64, 64)}),
        "swin": ("vision", "SwinModel", "SwinConfig",
                 dict(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4),
                 {"pixel_values": (3, 64, 64)}),
        # audio
        "whisper": ("audio", "WhisperModel", "WhisperConfig",
                    dict(_SEQ2SEQ, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                         num_mel_bins=80, max_source_positions=50), {"input_features": (80, 100), "decoder_input_ids": (8,)}),
        "wav2vec2": ("audio", "Wav2Vec2Model", "Wav2Vec2Config",
                     dict(_SMALL, conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=4), {"input_values": (4000,)}),
    }


def full_size_cases() -> dict:
    """Models at their configs' default sizes, as published (12 to 32 layers): where repeated blocks
    are many. Same form as ``cases()``."""
    return {
        "bert-base": ("encoder", "BertModel", "BertConfig", {}, {"input_ids": (128,)}),
        "gpt2-124m": ("decoder", "GPT2LMHeadModel", "GPT2Config", {}, {"input_ids": (128,)}),
        "llama-2-7b": ("decoder", "LlamaForCausalLM", "LlamaConfig", {}, {"input_ids": (128,)}),
        "t5-small": ("encoder-decoder", "T5ForConditionalGeneration", "T5Config", {},
                     {"input_ids": (128,), "decoder_input_ids": (32,)}),
        "vit-base": ("vision", "ViTForImageClassification", "ViTConfig", {}, {"pixel_values": (3, 224, 224)}),
    }


def build(name: str):
    """The model ``name`` (of ``cases()`` or ``full_size_cases()``) on the meta device, in eval mode, and
    its input shapes."""
    import torch

    transformers = load()
    _, model_class, config_class, arguments, shapes = {**cases(), **full_size_cases()}[name]
    arguments = dict(arguments)
    attention = arguments.pop("attn_implementation", None)
    config = getattr(transformers, config_class)(**arguments)
    if attention:
        config._attn_implementation = attention
    with torch.device("meta"):
        model = getattr(transformers, model_class)(config)
    return model.eval(), shapes


def truth(model, shapes: dict) -> tuple:
    """What torch says of one sample: (first output's shape, FlopCounterMode's forward FLOPs). Inputs named
    ``*_ids`` are token ids."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    inputs = {name: torch.zeros(1, *shape, device="meta", dtype=torch.long if name.endswith("_ids") else torch.float32)
              for name, shape in shapes.items()}

    def run(model):
        counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten._grouped_mm: _grouped_mm_flops})
        with torch.no_grad(), counter:
            out = model(**inputs)
        return out, counter.get_total_flops()

    try:
        out, flops = run(model)
    except RuntimeError as err:
        # torch's meta _grouped_mm takes bfloat16 alone (it ports the CUDA kernel's checks; the CPU's
        # multiplies float32 too): a mixture of experts is counted in bfloat16, with the same shapes
        if "BF16" not in str(err):
            raise
        out, flops = run(copy.deepcopy(model).to(torch.bfloat16))
    first = out if isinstance(out, torch.Tensor) else out[0]
    return tuple(first.shape), flops


def _grouped_mm_flops(a, b, *args, out_shape=None, **kwargs) -> int:
    """2 FLOPs per multiply-add of torch's _grouped_mm (FlopCounterMode has no formula for it): each row of
    ``a`` meets one group's columns (a 2-D, b 3-D: a mixture's tokens and its experts; both 3-D: one
    product per group), or each group is a slice of the contraction (both 2-D) or of b's columns (a 3-D)."""
    if len(a) == 2 and len(b) == 3:
        return 2 * a[0] * a[1] * b[2]
    if len(a) == 3 and len(b) == 3:
        return 2 * a[0] * a[1] * a[2] * b[2]
    if len(a) == 2:
        return 2 * a[0] * a[1] * b[1]
    return 2 * a[1] * a[2] * b[1]
