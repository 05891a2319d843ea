"""torch modules translated one by one into paramcalc layers: the table of built-in module classes (matched
exactly by their dotted name, so no torch import is needed to declare them) and the conversion of one
module, with its tied and frozen weights. The walk over a model (``frontends.torch``) and the traced
graphs (``frontends.torch_fx``) both use it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from paramcalc.core.errors import ParamcalcError, SpecError, UnknownLayerError
from paramcalc.core.layer import ALL_TIED
from paramcalc.core.registry import (
    chosen_call_options,
    register_torch_module,
    torch_converter,
)
from paramcalc.layers import (
    GLU,
    Activation,
    AdaptivePool,
    BatchNorm,
    Conv,
    ConvTranspose,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GroupNorm,
    Identity,
    LayerNorm,
    MultiHeadAttention,
    Pad,
    PixelShuffle,
    Pool,
    PReLU,
    Recurrent,
    RMSNorm,
    Transformer,
    Unflatten,
    UpSample,
)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _unknown(cls: type, name: str) -> UnknownLayerError:
    return UnknownLayerError(
        f"unsupported torch module class '{_qualname(cls)}' at '{name}'",
        layer=name, value=cls.__name__,
        fix=f"register a rule: paramcalc.register_torch_module({cls.__name__}, lambda m: "
            "paramcalc.Dense(...)) returning a paramcalc layer",
    )


def forward_parameters(module: object) -> list:
    """The ``inspect.Parameter`` of each argument ``module.forward`` takes (none where Python cannot say)."""
    import inspect

    try:
        return list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return []


def module_tree(root: object) -> tuple:
    """(path, class name) of each module under ``root``, as ``named_modules`` names them."""
    return tuple((name, type(module).__name__) for name, module in root.named_modules() if name)


def module_rule(module: object):
    """The rule paramcalc has for ``module``, or None where its forward must be read instead. A module
    with parametrizations (``weight_norm``, ``spectral_norm``) computes its weight from other parameters
    (weight_norm's g and v): its class's rule would count the weight, not what the module holds."""
    if getattr(module, "parametrizations", None):
        return None
    return torch_converter(type(module))


def _convert(module: object, name: str, memo: dict, options: dict | None = None):
    """``module`` as a paramcalc layer. ``options``: the keyword arguments of the call, of which a rule
    reads those it names in its ``call_options`` (nn.MultiheadAttention's ``need_weights`` picks the path
    its forward takes); a module called again with other options is another layer whose weights are
    the first's (tied)."""
    convert = module_rule(module)
    chosen = chosen_call_options(convert, options)
    key = id(module) if chosen is None else (id(module), chosen)
    if key in memo:  # the same module object again: shared weights
        return memo[key]
    owned = memo.setdefault("parameters", set())
    cls = type(module)
    if convert is None:
        raise _unknown(cls, name)
    try:
        layer = convert(module, **dict(chosen or ()))
    except ParamcalcError as err:
        raise err.with_layer(name) from None
    again = key != id(module) and id(module) in memo  # called before with other options: the same weights
    params = _parameters_of(module)
    layer = replace(layer, name=name, type_name=cls.__name__, trainable=_trainable(params, layer, cls),
                    tied=ALL_TIED if again else _tied(params, owned),
                    stored_shapes=tuple(tuple(p.shape) for _, p in params))
    memo[key] = layer
    memo.setdefault(id(module), layer)  # reached: its parameters are counted by a call
    return layer


def unreached_parameters(root: object, memo: dict, used: set) -> tuple[list, tuple]:
    """Parameters and buffers of modules the forward never called (googlenet's auxiliary classifiers in
    eval mode): still the model's, so counted, each as a (name, Parameter layer) pair with no work; and a
    note naming the modules. ``memo`` holds the converted modules, ``used`` the ids of the tensors the
    forward read directly."""
    import torch

    from paramcalc.layers import Parameter

    modules = dict(root.named_modules())
    reached = set(memo.get("parameters", ())) | used
    for module in modules.values():
        if id(module) in memo:  # a module a rule read: its buffers, and those of the modules it holds
            buffers = module.buffers() if module._modules else module._buffers.values()
            reached.update(id(t) for t in buffers if t is not None)
    missing = [(name, tensor, is_buffer) for tensors, is_buffer in
               ((root.named_parameters(), False), (root.named_buffers(), True))
               for name, tensor in tensors if id(tensor) not in reached]
    if not missing:
        return [], ()
    found = []
    for name, tensor, is_buffer in missing:
        is_param = isinstance(tensor, torch.nn.Parameter) and not is_buffer
        found.append((name, Parameter(shape=tuple(int(d) for d in tensor.shape), buffer=not is_param,
                                      trainable=bool(is_param and tensor.requires_grad), type_name="unused")))
    count = sum(t.numel() for _, t, b in missing if not b)
    if not count:  # buffers alone (a rotary embedding's, which the forward reads through a function)
        return found, ()
    unused = _wholly_unused(modules, {id(t) for _, t, _ in missing})
    return found, (f"{count:,} parameters belong to modules the forward did not call "
                   f"({', '.join(unused[:6])}{', ...' if len(unused) > 6 else ''}): counted, as the model holds "
                   "them, with no activations or work (in training mode a forward may call them)",)


def _wholly_unused(modules: dict, unused: set) -> list:
    """The outermost modules all of whose parameters and buffers are in ``unused``."""
    names = []
    for name, module in modules.items():
        tensors = [id(t) for t in (*module.parameters(), *module.buffers())]
        if name and tensors and all(t in unused for t in tensors):
            if not any(name.startswith(kept + ".") for kept in names):
                names.append(name)
    return names


def _parameters_of(module: object) -> list:
    """``list(module.named_parameters())``, read straight from the module where it holds no other (a
    Linear, a Conv: most of the modules a rule reads, each read once per call of a model)."""
    if module._modules:
        return list(module.named_parameters())
    found, seen = [], set()
    for name, p in module._parameters.items():
        if p is not None and id(p) not in seen:
            seen.add(id(p))
            found.append((name, p))
    return found


def _tied(params: list, owned: set) -> tuple:
    """Positions of a module's parameters (``params``, as ``named_parameters`` gives them) that an
    earlier module already owns (weight tying).

    paramcalc's weights follow the module's parameter order (Linear: weight, bias -> kernel, bias),
    so a tied parameter is matched by its position.
    """
    tied = []
    for position, (_, p) in enumerate(params):
        if id(p) in owned:
            tied.append(position)
        owned.add(id(p))
    return tuple(tied)


# torch parameter names -> paramcalc weight names, where they differ
_WEIGHT_NAMES = {"weight": "kernel"}


def _trainable(params: list, layer, cls: type) -> bool | tuple:
    flags = [p.requires_grad for _, p in params]
    if all(flags):
        return layer.trainable
    if not any(flags):
        return False
    if type(layer).__name__ != "Dense":
        raise SpecError(f"module {cls.__name__} has some parameters frozen and others not; "
                        "paramcalc maps per-weight trainability for Linear only",
                        fix="freeze the whole module, or register a rule for it")
    return tuple(_WEIGHT_NAMES.get(n, n) for n, p in params if p.requires_grad)


def _dtype_of(module: object) -> str:
    for p in module.parameters():
        return str(p.dtype).replace("torch.", "")
    return "float32"


# -- built-in torch modules -----------------------------------------------------------------------------------
def _unflattened(sizes: object) -> tuple:
    sizes = tuple(sizes)
    if any(isinstance(s, tuple) for s in sizes):
        raise SpecError("named-tensor Unflatten (sizes given as (name, size) pairs) is not supported",
                        value=sizes, fix="use integer sizes")
    return sizes


def _activation(function: str, **extra) -> Callable:
    return lambda m: Activation(function, **{k: (getattr(m, v) if getattr(m, v) is not None else -1)
                                              for k, v in extra.items()})


def _padding(m) -> object:
    return m.padding if isinstance(m.padding, str) else tuple(m.padding)


def _conv(rank: int) -> Callable:
    return lambda m: Conv(filters=m.out_channels, kernel_size=tuple(m.kernel_size), strides=tuple(m.stride),
                          padding=_padding(m), dilation=tuple(m.dilation), groups=m.groups,
                          use_bias=m.bias is not None, rank=rank, channels_last=False, in_channels=m.in_channels)


def _conv_transpose(rank: int) -> Callable:
    return lambda m: ConvTranspose(filters=m.out_channels, kernel_size=tuple(m.kernel_size),
                                   strides=tuple(m.stride), padding=tuple(m.padding),
                                   output_padding=tuple(m.output_padding), dilation=tuple(m.dilation),
                                   groups=m.groups, use_bias=m.bias is not None, rank=rank, channels_last=False,
                                   in_channels=m.in_channels)


def _pool(rank: int, op: str) -> Callable:
    return lambda m: Pool(op=op, pool_size=m.kernel_size, strides=m.stride, padding=m.padding,
                          dilation=getattr(m, "dilation", 1), ceil_mode=m.ceil_mode, rank=rank, channels_last=False,
                          whole_window=op == "avg" and rank == 3)


def _batch_norm(m, per_sample: bool = False) -> BatchNorm:
    return BatchNorm(axis=1, center=m.affine, scale=m.affine, num_features=m.num_features,
                     stats="buffers" if m.track_running_stats else "none", per_sample=per_sample)


def _pad(rank: int) -> Callable:
    def convert(m):
        amounts = tuple(m.padding) if not isinstance(m.padding, int) else (m.padding,) * (2 * rank)
        return Pad(tuple((-(i + 1), amounts[2 * i], amounts[2 * i + 1]) for i in range(len(amounts) // 2)))
    return convert


def _rnn(cell: str) -> Callable:
    return lambda m: Recurrent(cell=cell, units=m.hidden_size, layout="torch", num_layers=m.num_layers,
                               bidirectional=m.bidirectional, use_bias=m.bias, batch_first=m.batch_first,
                               proj_size=getattr(m, "proj_size", 0), input_size=m.input_size,
                               dropout=float(m.dropout) if m.num_layers > 1 else 0.0)


def _mha(m, need_weights: bool = True) -> MultiHeadAttention:
    return MultiHeadAttention(num_heads=m.num_heads, key_dim=m.head_dim, value_dim=m.head_dim,
                              output_dim=m.embed_dim, use_bias=m.in_proj_bias is not None, layout="torch",
                              add_bias_kv=m.bias_k is not None, batch_first=m.batch_first, embed_dim=m.embed_dim,
                              dropout=float(m.dropout), need_weights=bool(need_weights))


_mha.call_options = ("need_weights",)


def _transformer_layer(m, decoder: bool, num_layers: int = 1, final_norm: tuple = ()) -> Transformer:
    import torch.nn.functional as F

    act = m.activation
    activation = ("relu" if act is F.relu or type(act).__name__ == "ReLU" else
                  "gelu" if act is F.gelu or type(act).__name__ == "GELU" else None)
    if activation is None:
        raise SpecError("a Transformer layer with a custom activation function is not modelled",
                        fix="use activation='relu' or 'gelu'")
    return Transformer(d_model=m.self_attn.embed_dim, nhead=m.self_attn.num_heads,
                       dim_feedforward=m.linear1.out_features, decoder=decoder, num_layers=num_layers,
                       final_norm=final_norm, bias=m.linear1.bias is not None, activation=activation,
                       batch_first=m.self_attn.batch_first, dropout=float(m.dropout.p))


def _transformer_stack(decoder: bool) -> Callable:
    return lambda m: _transformer_layer(m.layers[0], decoder, m.num_layers, _norm_weights(m.norm))


def _norm_weights(norm) -> tuple:
    if norm is None:
        return ()
    return tuple(name for name, _ in norm.named_parameters())


BUILTINS: dict[str, Callable] = {
    "torch.nn.modules.linear.Linear": lambda m: Dense(m.out_features, in_features=m.in_features,
                                                      use_bias=m.bias is not None),
    "torch.nn.modules.linear.Identity": lambda m: Identity(),
    "torch.nn.modules.flatten.Flatten": lambda m: Flatten(m.start_dim, m.end_dim, strict=True),
    "torch.nn.modules.flatten.Unflatten": lambda m: Unflatten(m.dim, _unflattened(m.unflattened_size)),
    "torch.nn.modules.activation.Softmax": _activation("softmax", axis="dim"),
    "torch.nn.modules.activation.LogSoftmax": _activation("log_softmax", axis="dim"),
    "torch.nn.modules.activation.PReLU": lambda m: PReLU(num_parameters=m.num_parameters),
    "torch.nn.modules.activation.GLU": lambda m: GLU(axis=m.dim),
    "torch.nn.modules.activation.MultiheadAttention": _mha,
    "torch.nn.modules.sparse.Embedding": lambda m: Embedding(m.num_embeddings, m.embedding_dim),
    "torch.nn.modules.normalization.LayerNorm": lambda m: LayerNorm(
        normalized_shape=tuple(m.normalized_shape), scale=m.elementwise_affine,
        center=m.elementwise_affine and m.bias is not None),
    "torch.nn.modules.normalization.GroupNorm": lambda m: GroupNorm(
        groups=m.num_groups, axis=1, center=m.affine, scale=m.affine, num_channels=m.num_channels),
    "torch.nn.modules.normalization.RMSNorm": lambda m: RMSNorm(normalized_shape=tuple(m.normalized_shape),
                                                                scale=m.elementwise_affine),
    "torch.nn.modules.pixelshuffle.PixelShuffle": lambda m: PixelShuffle(m.upscale_factor),
    "torch.nn.modules.pixelshuffle.PixelUnshuffle": lambda m: PixelShuffle(m.downscale_factor, inverse=True),
    "torch.nn.modules.upsampling.Upsample": lambda m: UpSample(axes=None, sizes=m.size, factors=m.scale_factor,
                                                               interpolation=m.mode),
    "torch.nn.modules.transformer.TransformerEncoderLayer": lambda m: _transformer_layer(m, False),
    "torch.nn.modules.transformer.TransformerDecoderLayer": lambda m: _transformer_layer(m, True),
    "torch.nn.modules.transformer.TransformerEncoder": _transformer_stack(False),
    "torch.nn.modules.transformer.TransformerDecoder": _transformer_stack(True),
    "torch.nn.modules.rnn.RNN": _rnn("simple"),
    "torch.nn.modules.rnn.LSTM": _rnn("lstm"),
    "torch.nn.modules.rnn.GRU": _rnn("gru"),
}
for _r in (1, 2, 3):
    BUILTINS[f"torch.nn.modules.conv.Conv{_r}d"] = _conv(_r)
    BUILTINS[f"torch.nn.modules.conv.ConvTranspose{_r}d"] = _conv_transpose(_r)
    BUILTINS[f"torch.nn.modules.pooling.MaxPool{_r}d"] = _pool(_r, "max")
    BUILTINS[f"torch.nn.modules.pooling.AvgPool{_r}d"] = _pool(_r, "avg")
    BUILTINS[f"torch.nn.modules.pooling.AdaptiveAvgPool{_r}d"] = (
        lambda m, r=_r: AdaptivePool("avg", m.output_size, rank=r))
    BUILTINS[f"torch.nn.modules.pooling.AdaptiveMaxPool{_r}d"] = (
        lambda m, r=_r: AdaptivePool("max", m.output_size, rank=r))
    BUILTINS[f"torch.nn.modules.batchnorm.BatchNorm{_r}d"] = _batch_norm
    BUILTINS[f"torch.nn.modules.instancenorm.InstanceNorm{_r}d"] = lambda m: _batch_norm(m, per_sample=True)
    for _kind in ("Zero", "Constant", "Reflection", "Replication", "Circular"):
        BUILTINS[f"torch.nn.modules.padding.{_kind}Pad{_r}d"] = _pad(_r)
for _name in ("Dropout", "AlphaDropout", "FeatureAlphaDropout"):
    BUILTINS[f"torch.nn.modules.dropout.{_name}"] = lambda m: Dropout(m.p)
for _r in (1, 2, 3):  # whole channels: one noise value per sample and channel
    BUILTINS[f"torch.nn.modules.dropout.Dropout{_r}d"] = lambda m: Dropout(m.p, noise_axes=(0, 1))
for _name, _function in {
    "ReLU": "relu", "ReLU6": "relu6", "LeakyReLU": "leaky_relu", "ELU": "elu", "CELU": "celu",
    "SELU": "selu", "GELU": "gelu", "SiLU": "silu", "Mish": "mish", "Sigmoid": "sigmoid",
    "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign", "Hardtanh": "hard_tanh",
    "Hardsigmoid": "hard_sigmoid", "Hardswish": "hard_silu",
}.items():
    BUILTINS[f"torch.nn.modules.activation.{_name}"] = _activation(_function)

for _name, _convert_fn in BUILTINS.items():
    register_torch_module(_name, _convert_fn)


def leaves(value, keep_none: bool = False) -> list:
    """Tensors (and other leaves) of nested tuples, lists and dicts (a Hugging Face ModelOutput is a dict),
    in order."""
    out, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(reversed(list(v.values())))
        elif isinstance(v, (tuple, list)):
            stack.extend(reversed(v))
        elif v is not None or keep_none:
            out.append(v)
    return out


def attributes_kept(root: object):
    """A function that puts back the modules' attributes as they are now. A forward may cache what it
    computed in an attribute (timm's attention-bias cache in eval mode): the second run must start where
    the first did, and the user's model must not keep meta tensors (nor torch.fx's constants)."""
    kept = []
    for module in root.modules():
        attributes = dict(module.__dict__)
        contents = {k: (type(v), list(v.items()) if isinstance(v, dict) else list(v))
                    for k, v in attributes.items() if type(v) in (dict, list, set)}
        kept.append((module, attributes, contents))

    def restore() -> None:
        for module, attributes, contents in kept:
            state = module.__dict__
            for k in [k for k in state if k not in attributes]:
                del state[k]
            state.update(attributes)
            for k, (kind, items) in contents.items():
                value = state[k]
                value.clear()
                if kind is dict:
                    value.update(items)
                elif kind is list:
                    value.extend(items)
                else:
                    value.update(items)

    return restore
