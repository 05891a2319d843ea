"""torch modules, read from their attributes and, beyond nn.Sequential, a torch.fx trace.

No forward pass runs on data and no weight is touched (the meta device works). ``nn.Sequential``
trees of known modules are walked directly (nested ones flattened, named "1.0" as ``named_modules``
names them). Anything else is traced with torch.fx, keeping every module paramcalc knows as one node;
the traced functions and methods (flatten, view, permute, cat, +, matmul, F.relu, size, ...) become
paramcalc layers. A module object called twice shares its weights; parameters read directly
(``self.cls_token``) count as weights once. Classes are matched exactly, by name: a subclass may have its
own forward.
"""

from __future__ import annotations

import operator
from dataclasses import replace
from typing import Callable

from ..errors import ParamcalcError, SpecError, UnknownLayerError
from ..graph import Graph, GraphNode, Sequential
from ..layers import (Activation, AdaptivePool, BatchNorm, Concatenate, Conv, ConvTranspose, Dense, Dropout,
                      Embedding, Expand, Flatten, GroupNorm, Identity, Index, LayerNorm, MatMul, Merge,
                      MultiHeadAttention, Pad, Parameter, Pool, PReLU, Recurrent, Reduce, RMSNorm, ScalarOp,
                      SizeOf, Squeeze, Transformer, Transpose, Unflatten, Unsqueeze, UpSample, ValueOp, View)
from ..registry import register_torch_module, torch_converter

MAX_NESTING = 64
_SEQUENTIAL = "torch.nn.modules.container.Sequential"


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def from_torch_module(module: object):
    """A torch module as a paramcalc model: a Sequential when it is one of known modules, else traced."""
    name = type(module).__name__
    dtype = _dtype_of(module)
    if torch_converter(type(module)) is not None:
        layer = _convert(module, name.lower(), {})
        arguments = _tensor_arguments(module)
        if len(arguments) == 1:
            return Sequential([layer], name=name, framework="torch", dtype=dtype)
        return Graph(tuple((a, None) for a in arguments), (GraphNode(layer.name, layer, tuple((a, 0) for a in arguments)),),
                     ((layer.name, 0),), name=name, framework="torch", dtype=dtype)
    if _qualname(type(module)) == _SEQUENTIAL and _all_known(module):
        layers: list = []
        _walk(module, "", layers, {})
        return Sequential(layers, name=name, framework="torch", dtype=dtype)
    return _traced(module, name, dtype)


def _tensor_arguments(module: object) -> list[str]:
    """The required positional arguments of ``forward``: the tensors a lone module is called on
    (query, key, value for attention; tgt, memory for a decoder layer)."""
    import inspect

    params = inspect.signature(module.forward).parameters.values()
    names = [p.name for p in params if p.default is inspect.Parameter.empty
             and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names or ["input"]


def _all_known(root: object) -> bool:
    stack = [root]
    while stack:
        m = stack.pop()
        for child in m._modules.values():
            if child is None:
                continue
            if _qualname(type(child)) == _SEQUENTIAL:
                stack.append(child)
            elif torch_converter(type(child)) is None:
                return False
    return True


def _walk(root: object, prefix: str, layers: list, memo: dict) -> None:
    """Append the leaves of nested Sequentials in order, iteratively (no recursion limit)."""
    stack = [(iter(root._modules.items()), prefix, 0)]
    while stack:
        children, base, depth = stack[-1]
        item = next(children, None)
        if item is None:
            stack.pop()
            continue
        key, child = item
        if child is None:
            continue
        name = f"{base}{key}"
        if _qualname(type(child)) == _SEQUENTIAL:
            if depth + 1 > MAX_NESTING:
                raise SpecError(f"nesting too deep (limit {MAX_NESTING}) at module '{name}'", where=name)
            stack.append((iter(child._modules.items()), f"{name}.", depth + 1))
            continue
        layers.append(_convert(child, name, memo))


def _unknown(cls: type, name: str) -> UnknownLayerError:
    return UnknownLayerError(
        f"unsupported torch module class '{_qualname(cls)}' at '{name}'",
        layer=name, value=cls.__name__,
        fix=f"register a rule: paramcalc.register_torch_module({cls.__name__}, lambda m: "
            "paramcalc.Dense(...)) returning a paramcalc layer",
    )


def _convert(module: object, name: str, memo: dict):
    if id(module) in memo:  # the same module object again: shared weights
        return memo[id(module)]
    owned = memo.setdefault("parameters", set())
    cls = type(module)
    convert = torch_converter(cls)
    if convert is None:
        raise _unknown(cls, name)
    try:
        layer = convert(module)
    except ParamcalcError as err:
        raise err.with_layer(name) from None
    layer = replace(layer, name=name, type_name=cls.__name__, trainable=_trainable(module, layer),
                    tied=_tied(module, owned))
    memo[id(module)] = layer
    return layer


def _tied(module: object, owned: set) -> tuple:
    """Positions of this module's parameters that an earlier module already owns (weight tying).

    paramcalc's weights follow the module's parameter order (Linear: weight, bias -> kernel, bias),
    so a tied parameter is matched by its position.
    """
    tied = []
    for position, (_, p) in enumerate(module.named_parameters(recurse=True)):
        if id(p) in owned:
            tied.append(position)
        owned.add(id(p))
    return tuple(tied)


# torch parameter names -> paramcalc weight names, where they differ
_WEIGHT_NAMES = {"weight": "kernel"}


def _trainable(module: object, layer) -> bool | tuple:
    params = [(n, p) for n, p in module.named_parameters() if p is not None]
    flags = [p.requires_grad for _, p in params]
    if all(flags):
        return layer.trainable
    if not any(flags):
        return False
    if type(layer).__name__ != "Dense":
        raise SpecError(f"module {type(module).__name__} has some parameters frozen and others not; "
                        "paramcalc maps per-weight trainability for Linear only",
                        fix="freeze the whole module, or register a rule for it")
    return tuple(_WEIGHT_NAMES.get(n, n) for n, p in params if p.requires_grad)


def _dtype_of(module: object) -> str:
    for p in module.parameters():
        return str(p.dtype).replace("torch.", "")
    return "float32"


# -- torch.fx ------------------------------------------------------------------------------------------------
def _traced(module: object, name: str, dtype: str) -> Graph:
    import torch.fx  # the user handed in a torch module, so torch is already imported

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):  # noqa: D401 - torch's hook
            return torch_converter(type(m)) is not None

    try:
        fx_graph = Tracer().trace(module)
    except Exception as err:  # tracing runs the user's forward on proxies; any failure lands here
        raise SpecError(
            f"could not trace {name} with torch.fx: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
            value=name,
            fix="make data-dependent control flow a module with a registered rule, or pass an nn.Sequential",
        ) from None
    return _FxTranslator(module, name, dtype).translate(fx_graph)


class _FxTranslator:
    """Walks fx nodes in order, turning each into graph nodes (or plain values for constants)."""

    def __init__(self, root: object, name: str, dtype: str) -> None:
        self.root = root
        self.name = name
        self.dtype = dtype
        self.modules = dict(root.named_modules())
        self.nodes: list[GraphNode] = []
        self.inputs: list = []
        self.env: dict = {}  # fx node -> value: ("ref", ref) | ("tuple", [...]) | a Python constant
        self.memo: dict = {}  # module id -> Layer
        self.params_seen: dict = {}  # parameter id -> node name
        self.value_nodes: set = set()  # names of nodes that compute sizes, not tensors

    def translate(self, fx_graph) -> Graph:
        outputs = []
        for node in fx_graph.nodes:
            try:
                if node.op == "placeholder":
                    self.inputs.append((node.name, None))
                    self.env[node] = ("ref", (node.name, 0))
                elif node.op == "get_attr":
                    self.env[node] = self._get_attr(node)
                elif node.op == "call_module":
                    self.env[node] = self._call_module(node)
                elif node.op in ("call_function", "call_method"):
                    self.env[node] = self._call(node)
                elif node.op == "output":
                    outputs = self._refs_in(self._arg(node.args[0]))
            except ParamcalcError as err:
                raise err.with_layer(node.name) from None
        return Graph(tuple(self.inputs), tuple(self.nodes), tuple(outputs), name=self.name,
                     framework="torch", dtype=self.dtype)

    # -- values ----------------------------------------------------------------------------------------
    def _arg(self, a):
        import torch.fx

        if isinstance(a, torch.fx.Node):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return ("tuple", [self._arg(x) for x in a])
        return a

    def _refs_in(self, value) -> list:
        if isinstance(value, tuple) and value and value[0] == "ref":
            return [value[1]]
        if isinstance(value, tuple) and value and value[0] == "tuple":
            return [r for v in value[1] for r in self._refs_in(v)]
        if isinstance(value, dict):
            return [r for v in value.values() for r in self._refs_in(v)]
        return []

    def _add(self, name: str, layer, inbound: list) -> tuple:
        self.nodes.append(GraphNode(name, replace(layer, name=layer.name or name), tuple(inbound)))
        if getattr(layer, "is_value", False):
            self.value_nodes.add(name)
        return ("ref", (name, 0))

    def is_tensor(self, value) -> bool:
        return _is_ref(value) and value[1][0] not in self.value_nodes

    def _structured(self, name: str, structure) -> tuple:
        if isinstance(structure, tuple):
            return ("tuple", [self._structured(name, s) for s in structure])
        return ("ref", (name, structure))

    # -- node kinds ------------------------------------------------------------------------------------
    def _get_attr(self, node) -> tuple:
        target = self.root
        for part in node.target.split("."):
            target = getattr(target, part)
        import torch

        if not isinstance(target, torch.Tensor):
            return target
        if id(target) in self.params_seen:
            return ("ref", (self.params_seen[id(target)], 0))
        owned = self.memo.setdefault("parameters", set())
        is_param = isinstance(target, torch.nn.Parameter)
        layer = Parameter(shape=tuple(int(d) for d in target.shape), buffer=not is_param,
                          trainable=bool(is_param and target.requires_grad), type_name="Parameter",
                          tied=(0,) if id(target) in owned else ())
        owned.add(id(target))
        self.params_seen[id(target)] = node.name
        return self._add(node.name, layer, [])

    def _call_module(self, node) -> tuple:
        module = self.modules[node.target]
        layer = _convert(module, node.target, self.memo)
        args = [self._arg(a) for a in node.args] + [self._arg(v) for k, v in node.kwargs.items()
                                                     if k in ("query", "key", "value", "memory", "tgt", "src")]
        inbound = [r for a in args for r in self._refs_in(a)]
        name = node.target if not any(n.name == node.target for n in self.nodes) else node.name
        self.nodes.append(GraphNode(name, layer, tuple(inbound)))
        structure = getattr(layer, "output_structure", None)
        return self._structured(name, structure) if structure is not None else ("ref", (name, 0))

    def _call(self, node) -> object:
        target = node.target
        args = [self._arg(a) for a in node.args]
        kwargs = {k: self._arg(v) for k, v in node.kwargs.items()}
        key = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        if node.op == "call_function" and target is operator.getitem:
            return self._getitem(node, args)
        if node.op == "call_function" and target is getattr:
            if args[1] == "shape":
                return self._add(node.name, SizeOf(), [args[0][1]])
            raise SpecError(f"node '{node.name}': getattr(..., {args[1]!r}) is not modelled", value=args[1])
        # arithmetic on plain sizes stays plain (or becomes a value node when a size is symbolic)
        if key in _ARITH and not any(self.is_tensor(a) for a in args):
            return self._value_arith(node, _ARITH[key], args)
        rule = _FUNCTIONS.get((node.op, key)) if node.op == "call_method" else _FUNCTIONS.get(("call_function", target))
        if rule is None and node.op == "call_function":
            rule = _FUNCTIONS.get(("call_function", key))
        if rule is None:
            what = f"method .{target}()" if node.op == "call_method" else f"function {getattr(target, '__module__', '')}.{key}"
            raise SpecError(f"cannot model traced node '{node.name}': {what}",
                            fix="wrap that code in a module and register a rule for it "
                                "(paramcalc.register_torch_module)", value=key)
        first = len(self.nodes)
        value = rule(self, node, args, kwargs)
        for i in range(first, len(self.nodes)):  # tables show the function's name ("add", "view")
            added = self.nodes[i]
            if added.layer.type_name is None:
                self.nodes[i] = replace(added, layer=replace(added.layer, type_name=key))
        return value

    def _getitem(self, node, args) -> object:
        value, index = args
        if isinstance(value, tuple) and value and value[0] == "tuple":
            return value[1][index]
        if isinstance(value, (tuple, list)) and not (value and value[0] in ("ref", "tuple")):
            return value[index]
        if not _is_ref(value):
            raise SpecError(f"node '{node.name}': cannot index {value!r}", value=index)
        if not self.is_tensor(value):
            return self._add(node.name, ValueOp("getitem", (("input", 0), index)), [value[1]])
        return self._add(node.name, Index(_index_items(index)), [value[1]])

    def _value_arith(self, node, op: str, args: list) -> object:
        a, b = args
        if not any(isinstance(v, tuple) and v and v[0] == "ref" for v in (a, b)):
            return {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
                    "floordiv": operator.floordiv}[op](a, b)
        inbound, operands = [], []
        for v in (a, b):
            if isinstance(v, tuple) and v and v[0] == "ref":
                operands.append(("input", len(inbound)))
                inbound.append(v[1])
            else:
                operands.append(v)
        return self._add(node.name, ValueOp(op, tuple(operands)), inbound)

    def sizes_arg(self, values: list) -> tuple[tuple, list]:
        """Sizes that may come from the graph: ints stay, graph values become ("input", k)."""
        entries, inbound = [], []
        for v in values:
            if isinstance(v, tuple) and v and v[0] == "ref":
                entries.append(("input", 1 + len(inbound)))
                inbound.append(v[1])
            elif isinstance(v, tuple) and v and v[0] == "tuple":
                sub, more = self.sizes_arg(v[1])
                entries.extend(("input", e[1] + len(inbound)) if isinstance(e, tuple) else e for e in sub)
                inbound.extend(more)
            else:
                entries.append(int(v))
        return tuple(entries), inbound


def _is_ref(value) -> bool:
    return isinstance(value, tuple) and bool(value) and value[0] == "ref"


def _index_items(index) -> tuple:
    items = index[1] if isinstance(index, tuple) and index and index[0] == "tuple" else [index]
    out = []
    for it in items:
        if it is None:
            out.append(("none",))
        elif it is Ellipsis:
            out.append(("ellipsis",))
        elif isinstance(it, slice):
            out.append(("slice", it.start, it.stop, it.step))
        elif type(it) is int:
            out.append(("int", it))
        else:
            raise SpecError(f"indexing with {it!r} is not modelled", value=it)
    return tuple(out)


_ARITH = {"add": "add", "sub": "sub", "mul": "mul", "floordiv": "floordiv", "iadd": "add", "imul": "mul"}


def _tensor_args(args: list) -> list:
    return [a[1] for a in args if _is_ref(a)]


def _unary(make: Callable) -> Callable:
    """A rule for f(x, ...) -> one tensor, built from the call's arguments."""
    def rule(tr: _FxTranslator, node, args, kwargs):
        return tr._add(node.name, make(args, kwargs), [args[0][1]])
    return rule


def _arith(op: str) -> Callable:
    def rule(tr: _FxTranslator, node, args, kwargs):
        tensors = _tensor_args(args + list(kwargs.values()))
        if len(tensors) >= 2:
            return tr._add(node.name, Merge({"add": "add", "sub": "subtract", "mul": "multiply",
                                              "truediv": "divide", "div": "divide"}[op]), tensors)
        return tr._add(node.name, ScalarOp(op), tensors)
    return rule


def _linear(tr: _FxTranslator, node, args, kwargs):
    """F.linear(x, weight, bias): x @ weight.T + bias, the weights read as parameters."""
    x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    t = tr._add(f"{node.name}.weight_t", Transpose(swap=(0, 1)), [weight[1]])
    out = tr._add(node.name if bias is None else f"{node.name}.matmul", MatMul(), [x[1], t[1]])
    if bias is None:
        return out
    return tr._add(node.name, Merge("add"), [out[1], bias[1]])


def _shape_args(args: list, kwargs: dict, key: str = "shape") -> list:
    rest = args[1:] if len(args) > 1 else [kwargs.get(key)]
    if len(rest) == 1 and isinstance(rest[0], tuple) and rest[0] and rest[0][0] == "tuple":
        return rest[0][1]
    return rest


def _view(tr: _FxTranslator, node, args, kwargs):
    entries, inbound = tr.sizes_arg(_shape_args(args, kwargs))
    return tr._add(node.name, View(entries), [args[0][1]] + inbound)


def _expand(tr: _FxTranslator, node, args, kwargs):
    entries, inbound = tr.sizes_arg(_shape_args(args, kwargs, "size"))
    return tr._add(node.name, Expand(entries), [args[0][1]] + inbound)


def _cat(tr: _FxTranslator, node, args, kwargs):
    tensors = args[0][1] if args[0][0] == "tuple" else [args[0]]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    return tr._add(node.name, Concatenate(axis=dim), [t[1] for t in tensors])


def _size(tr: _FxTranslator, node, args, kwargs):
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    return tr._add(node.name, SizeOf(dim=dim), [args[0][1]])


def _dims(value) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, tuple) and value and value[0] == "tuple":
        return tuple(value[1])
    return (value,)


def _reduce(op: str) -> Callable:
    return _unary(lambda a, k: Reduce(op, _dims(a[1] if len(a) > 1 else k.get("dim")),
                                      bool(a[2] if len(a) > 2 else k.get("keepdim", False))))


def _act(function: str, dim_at: int | None = None) -> Callable:
    def make(a, k):
        return Activation(function)
    return _unary(make)


def _flatten_rule(default_start: int) -> Callable:
    return _unary(lambda a, k: Flatten(a[1] if len(a) > 1 else k.get("start_dim", default_start),
                                       a[2] if len(a) > 2 else k.get("end_dim", -1), strict=True))


def _permute(a, k):
    dims = a[1:] if not (len(a) == 2 and isinstance(a[1], tuple) and a[1][0] == "tuple") else a[1][1]
    return Transpose(dims=tuple(dims))


def _functions() -> dict:
    import torch
    import torch.nn.functional as F

    table: dict = {}

    def both(names: tuple, functions: tuple, rule: Callable) -> None:
        for n in names:
            table[("call_method", n)] = rule
        for f in functions:
            table[("call_function", f)] = rule

    both(("flatten",), (), _flatten_rule(0))
    table[("call_function", torch.flatten)] = _flatten_rule(0)
    both(("view", "reshape"), (torch.reshape,), _view)
    both(("expand",), (), _expand)
    both(("permute",), (torch.permute,), _unary(_permute))
    both(("transpose",), (torch.transpose,), _unary(lambda a, k: Transpose(swap=(a[1], a[2]))))
    both(("unsqueeze",), (torch.unsqueeze,), _unary(lambda a, k: Unsqueeze(a[1] if len(a) > 1 else k["dim"])))
    both(("squeeze",), (torch.squeeze,), _unary(lambda a, k: Squeeze(a[1] if len(a) > 1 else k.get("dim"))))
    both(("contiguous", "clone", "detach", "float", "to", "type_as"), (), _unary(lambda a, k: Identity()))
    both(("size",), (), _size)
    both(("dim",), (), lambda tr, node, args, kwargs: tr._add(node.name, SizeOf(rank_only=True), [args[0][1]]))
    table[("call_function", torch.cat)] = _cat
    table[("call_function", torch.concat)] = _cat
    for op, functions in {"add": (operator.add, operator.iadd, torch.add), "sub": (operator.sub, torch.sub),
                          "mul": (operator.mul, operator.imul, torch.mul),
                          "truediv": (operator.truediv, torch.div)}.items():
        both((op if op != "truediv" else "div",), functions, _arith(op))
    both(("matmul", "bmm"), (operator.matmul, torch.matmul, torch.bmm), lambda tr, node, args, kwargs:
         tr._add(node.name, MatMul(), _tensor_args(args)))
    table[("call_function", F.linear)] = _linear
    for name, function in {"relu": "relu", "gelu": "gelu", "silu": "silu", "sigmoid": "sigmoid",
                           "tanh": "tanh", "softmax": "softmax", "log_softmax": "log_softmax",
                           "leaky_relu": "leaky_relu", "elu": "elu", "mish": "mish", "softplus": "softplus",
                           "hardswish": "hard_silu", "relu6": "relu6", "selu": "selu"}.items():
        functions = tuple(f for f in (getattr(F, name, None), getattr(torch, name, None)) if f is not None)
        both((name,), functions, _act(function))
    both((), (F.dropout,), _unary(lambda a, k: Dropout(a[1] if len(a) > 1 else k.get("p", 0.5))))
    for op in ("mean", "sum", "amax", "amin"):
        both((op,), (getattr(torch, op),), _reduce(op))
    both((), (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d),
         _unary(lambda a, k: AdaptivePool("avg", a[1] if len(a) > 1 else k["output_size"],
                                          rank=_rank_of_output_size(a[1] if len(a) > 1 else k["output_size"]))))
    return table


def _rank_of_output_size(size) -> int:
    return len(size[1]) if isinstance(size, tuple) and size and size[0] == "tuple" else 2


class _LazyTable(dict):
    """The fx function table, built on first use (it needs torch, which the core never imports)."""

    def get(self, key, default=None):
        if not self:
            self.update(_functions())
        return super().get(key, default)


_FUNCTIONS = _LazyTable()


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
                          dilation=getattr(m, "dilation", 1), ceil_mode=m.ceil_mode, rank=rank, channels_last=False)


def _batch_norm(m) -> BatchNorm:
    return BatchNorm(axis=1, center=m.affine, scale=m.affine, num_features=m.num_features,
                     stats="buffers" if m.track_running_stats else "none")


def _pad(rank: int) -> Callable:
    def convert(m):
        amounts = tuple(m.padding) if not isinstance(m.padding, int) else (m.padding,) * (2 * rank)
        return Pad(tuple((-(i + 1), amounts[2 * i], amounts[2 * i + 1]) for i in range(len(amounts) // 2)))
    return convert


def _rnn(cell: str) -> Callable:
    return lambda m: Recurrent(cell=cell, units=m.hidden_size, layout="torch", num_layers=m.num_layers,
                               bidirectional=m.bidirectional, use_bias=m.bias, batch_first=m.batch_first,
                               proj_size=getattr(m, "proj_size", 0), input_size=m.input_size)


def _mha(m) -> MultiHeadAttention:
    return MultiHeadAttention(num_heads=m.num_heads, key_dim=m.head_dim, value_dim=m.head_dim,
                              output_dim=m.embed_dim, use_bias=m.in_proj_bias is not None, layout="torch",
                              add_bias_kv=m.bias_k is not None, batch_first=m.batch_first, embed_dim=m.embed_dim)


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
                       batch_first=m.self_attn.batch_first)


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
    "torch.nn.modules.activation.MultiheadAttention": _mha,
    "torch.nn.modules.sparse.Embedding": lambda m: Embedding(m.num_embeddings, m.embedding_dim),
    "torch.nn.modules.normalization.LayerNorm": lambda m: LayerNorm(
        normalized_shape=tuple(m.normalized_shape), scale=m.elementwise_affine,
        center=m.elementwise_affine and m.bias is not None),
    "torch.nn.modules.normalization.GroupNorm": lambda m: GroupNorm(
        groups=m.num_groups, axis=1, center=m.affine, scale=m.affine, num_channels=m.num_channels),
    "torch.nn.modules.normalization.RMSNorm": lambda m: RMSNorm(normalized_shape=tuple(m.normalized_shape),
                                                                scale=m.elementwise_affine),
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
    for _kind in ("Zero", "Constant", "Reflection", "Replication", "Circular"):
        BUILTINS[f"torch.nn.modules.padding.{_kind}Pad{_r}d"] = _pad(_r)
for _name in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"):
    BUILTINS[f"torch.nn.modules.dropout.{_name}"] = lambda m: Dropout(m.p)
for _name, _function in {
    "ReLU": "relu", "ReLU6": "relu6", "LeakyReLU": "leaky_relu", "ELU": "elu", "CELU": "celu",
    "SELU": "selu", "GELU": "gelu", "SiLU": "silu", "Mish": "mish", "Sigmoid": "sigmoid",
    "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign", "Hardtanh": "hard_tanh",
    "Hardsigmoid": "hard_sigmoid", "Hardswish": "hard_silu",
}.items():
    BUILTINS[f"torch.nn.modules.activation.{_name}"] = _activation(_function)

for _name, _convert_fn in BUILTINS.items():
    register_torch_module(_name, _convert_fn)
