"""KerasHub backbones and task models for the coverage test and benchmarks/coverage.py, built from small
explicit arguments: no preset, no download, weights initialised by Keras (KerasHub builds its models as
functional graphs inside the subclass's ``__init__``, so they are live objects, not configs).

KerasHub's package metadata asks for tensorflow-text, which pulls the full ``tensorflow`` build beside
tensorflow-cpu; KerasHub imports without it (it is needed for string preprocessing only), so the README's
test command installs keras-hub with ``--no-deps`` and lists its other dependencies in the test extra.
"""

from __future__ import annotations

SEQ = 8  # tokens per sample, where an input's length is free
_TEXT = dict(vocabulary_size=100, num_layers=2, hidden_dim=16, intermediate_dim=32)
_GQA = dict(_TEXT, num_query_heads=2, num_key_value_heads=1)
_IMAGE = (32, 32, 3)


def load():
    """keras_hub, imported; None where it is not installed."""
    import importlib.util

    if importlib.util.find_spec("keras_hub") is None:
        return None
    import keras_hub

    return keras_hub


def backbones() -> dict:
    """name -> (family, backbone class name, constructor arguments)."""
    return {
        # text encoders
        "albert": ("text encoder", "AlbertBackbone", dict(_TEXT, num_heads=2, embedding_dim=8)),
        "bert": ("text encoder", "BertBackbone", dict(_TEXT, num_heads=2)),
        "deberta_v3": ("text encoder", "DebertaV3Backbone", dict(_TEXT, num_heads=2)),
        "distil_bert": ("text encoder", "DistilBertBackbone", dict(_TEXT, num_heads=2)),
        "electra": ("text encoder", "ElectraBackbone",
                    dict(vocab_size=100, num_layers=2, num_heads=2, hidden_dim=16, embedding_dim=8, intermediate_dim=32)),
        "esm2": ("text encoder", "ESM2Backbone", dict(_TEXT, num_heads=2)),
        "f_net": ("text encoder", "FNetBackbone", dict(_TEXT)),
        "roberta": ("text encoder", "RobertaBackbone", dict(_TEXT, num_heads=2)),
        "roformer_v2": ("text encoder", "RoformerV2Backbone", dict(_TEXT, num_heads=2, head_size=8)),
        "xlm_roberta": ("text encoder", "XLMRobertaBackbone", dict(_TEXT, num_heads=2)),
        # decoders
        "bloom": ("decoder", "BloomBackbone", dict(_TEXT, num_heads=2)),
        "falcon": ("decoder", "FalconBackbone", dict(_TEXT, num_attention_heads=2)),
        "gemma": ("decoder", "GemmaBackbone", dict(_GQA, head_dim=8)),
        "gpt2": ("decoder", "GPT2Backbone", dict(_TEXT, num_heads=2)),
        "gpt_neo_x": ("decoder", "GPTNeoXBackbone", dict(_TEXT, num_heads=2)),
        "llama": ("decoder", "LlamaBackbone", dict(_GQA)),
        "llama3": ("decoder", "Llama3Backbone", dict(_GQA)),
        "mistral": ("decoder", "MistralBackbone", dict(_GQA)),
        "mixtral": ("decoder", "MixtralBackbone", dict(_GQA, num_experts=2)),
        "opt": ("decoder", "OPTBackbone", dict(_TEXT, num_heads=2)),
        "phi3": ("decoder", "Phi3Backbone", dict(_GQA)),
        "qwen2": ("decoder", "Qwen2Backbone", dict(_GQA)),
        "qwen3": ("decoder", "Qwen3Backbone", dict(_GQA, head_dim=8)),
        # encoder-decoders
        "bart": ("encoder-decoder", "BartBackbone", dict(_TEXT, num_heads=2)),
        "t5": ("encoder-decoder", "T5Backbone", dict(_TEXT, num_heads=2)),
        "whisper": ("encoder-decoder", "WhisperBackbone", dict(_TEXT, num_heads=2, max_encoder_sequence_length=16)),
        # vision
        "resnet": ("vision", "ResNetBackbone",
                   dict(input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 128],
                        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
                        image_shape=_IMAGE)),
        "vgg": ("vision", "VGGBackbone", dict(stackwise_num_repeats=[1, 1], stackwise_num_filters=[8, 16],
                                             image_shape=_IMAGE)),
        "densenet": ("vision", "DenseNetBackbone", dict(stackwise_num_repeats=[1, 1], image_shape=_IMAGE)),
        "xception": ("vision", "XceptionBackbone", dict(stackwise_conv_filters=[[8, 16], [16, 16]],
                                                        stackwise_pooling=[False, True], image_shape=_IMAGE)),
        "vit": ("vision", "ViTBackbone", dict(image_shape=_IMAGE, patch_size=8, num_layers=2, num_heads=2,
                                             hidden_dim=16, mlp_dim=32)),
        "deit": ("vision", "DeiTBackbone", dict(image_shape=_IMAGE, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=16, intermediate_dim=32)),
        "dinov2": ("vision", "DINOV2Backbone", dict(patch_size=8, num_layers=2, hidden_dim=16, num_heads=2,
                                                   intermediate_dim=32, image_shape=_IMAGE)),
        "swin": ("vision", "SwinTransformerBackbone", dict(image_shape=_IMAGE, embed_dim=16, depths=[2, 2],
                                                           num_heads=[2, 2], window_size=4, patch_size=2)),
        "mit": ("vision", "MiTBackbone", dict(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
                                             layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.1,
                                             layerwise_patch_sizes=[3, 3], layerwise_strides=[2, 2],
                                             hidden_dims=[8, 16], image_shape=_IMAGE)),
    }


def tasks() -> dict:
    """name -> (task class name, backbone name, extra task arguments): task models around a backbone
    (a classifier head, a causal LM whose head is the tied token embedding called in reverse)."""
    return {
        "bert_text_classifier": ("BertTextClassifier", "bert", dict(num_classes=3)),
        "gpt2_causal_lm": ("GPT2CausalLM", "gpt2", {}),
        "llama_causal_lm": ("LlamaCausalLM", "llama", {}),
        "resnet_image_classifier": ("ResNetImageClassifier", "resnet", dict(num_classes=5)),
    }


def build(keras_hub, name: str):
    """The backbone ``name`` (or the task model ``name``), built."""
    if name in tasks():
        task, backbone, extra = tasks()[name]
        return getattr(keras_hub.models, task)(build(keras_hub, backbone), preprocessor=None, **extra)
    _, cls, arguments = backbones()[name]
    return getattr(keras_hub.models, cls)(**arguments)


def input_shapes(model) -> dict:
    """One sample's shape for each input, by input name: a length left free (None) is ``SEQ``."""
    return {t._keras_history.operation.name: tuple(SEQ if d is None else d for d in t.shape[1:])
            for t in model.inputs}
