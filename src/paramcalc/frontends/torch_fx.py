"""torch.fx translation: a traced module's nodes as paramcalc graph nodes.

Every module paramcalc knows stays one node (a leaf of the trace); the functions and methods in between
become layers of their own (flatten, view, permute, cat, +, matmul, F.relu, ...), and sizes read in the
graph (``x.size(0)``, ``x.shape``) flow as value nodes. A function with no rule is an error naming the
traced node. torch is already imported when this runs: the user handed in a module.
"""

from __future__ import annotations

import dis
import functools
import inspect
import operator
from dataclasses import dataclass, replace
from typing import Callable

from paramcalc.core.errors import ParamcalcError, SpecError
from paramcalc.core.graph import Graph, GraphNode
from paramcalc.frontends.torch_modules import (
    _convert,
    attributes_kept,
    forward_parameters,
    module_rule,
    module_tree,
    unreached_parameters,
)
from paramcalc.frontends.tracebacks import raising_line
from paramcalc.layers import (
    GLU,
    Activation,
    AdaptivePool,
    BatchNorm,
    ChannelAffine,
    Check,
    Concatenate,
    Dropout,
    Expand,
    Flatten,
    GroupNorm,
    Identity,
    Index,
    LayerNorm,
    MatMul,
    Merge,
    Parameter,
    PixelShuffle,
    Pool,
    Reduce,
    RMSNorm,
    ScalarOp,
    SizeOf,
    Split,
    Squeeze,
    Transpose,
    Unsqueeze,
    UpSample,
    ValueOp,
    View,
)
from paramcalc.layers.tensor_ops import index_items
from paramcalc.layers.values import COMPARISONS


def traced(module: object, name: str, dtype: str, inputs: tuple | None = None) -> Graph:
    """``module`` traced with torch.fx; ``inputs``: the forward's arguments that are tensors, where the
    user named them (others with a constant default are traced at it)."""
    keywords = _keywords_read(getattr(inspect.unwrap(type(module).forward), "__code__", None))
    if keywords:
        # torch.fx passes **kwargs as one proxy, which fails wherever code reads it as a mapping (.get,
        # unpacking, ``in``): every Hugging Face model, which the trace would run for milliseconds first
        raise SpecError(f"could not trace {name} with torch.fx: its forward reads **{keywords}, which torch.fx "
                        "passes as one proxy", value=name,
                        fix="make data-dependent control flow a module with a registered rule, or pass an nn.Sequential")

    restore = attributes_kept(module)  # tracing sets tensor constants on the module it traces
    try:
        try:
            concrete = {k: v for k, v in _defaults(module).items() if k not in (inputs or ())}
            fx_graph = _tracer_class()().trace(module, concrete_args=concrete)
        except ParamcalcError:
            raise
        except Exception as err:  # tracing runs the user's forward on proxies; any failure lands here
            raise SpecError(
                f"could not trace {name} with torch.fx: {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}{_at(raising_line(err))}",
                value=name,
                fix="make data-dependent control flow a module with a registered rule, or pass an nn.Sequential",
            ) from None
        return _FxTranslator(module, name, dtype, inputs or ()).translate(fx_graph)
    finally:
        restore()


@functools.cache
def _tracer_class() -> type:
    """torch.fx's tracer with paramcalc's leaves, its class made once (a class made per trace lives in a
    reference cycle, freed only by Python's garbage collector)."""
    import torch.fx  # the user handed in a torch module, so torch is already imported

    class Tracer(torch.fx.Tracer):
        def __init__(self):
            # no module's functions autowrapped: paramcalc translates no ``math`` node, so wrapping math's
            # functions (patched into the globals of every forward the trace enters: a sixth of a small
            # model's trace) only changed how a trace that must fail stops; ``math.sqrt`` of a traced size
            # now raises a TypeError, which the error places at the line that called it
            super().__init__(autowrap_modules=())

        def is_leaf_module(self, m, qualname):  # noqa: D401 - torch's hook
            return module_rule(m) is not None

        def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
            node = super().create_node(kind, target, args, kwargs, name, type_expr)
            if kind in ("call_function", "call_method") and not _translatable(kind, target):
                # the translation would stop at this node: stop here, before tracing the rest of the
                # forward (a Swin or MViT that is then read by running it gains a third of its time)
                raise _unmodelled(node.name, kind, target).with_layer(node.name)
            return node

    return Tracer


def _at(line) -> str:
    return f" at {line}" if line is not None else ""


@functools.lru_cache(maxsize=256)
def _keywords_read(code) -> str:
    """The name of the ``**kwargs`` argument of the function compiled to ``code`` where its body reads
    it, else "" (also for a forward that is no Python function); read from the bytecode once per
    function (code objects do not change)."""
    if code is None or not code.co_flags & inspect.CO_VARKEYWORDS:
        return ""
    name = code.co_varnames[code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & inspect.CO_VARARGS)]
    # LOAD_FAST and its kin (LOAD_FAST_LOAD_FAST names two locals)
    reads = any(i.argval == name or (type(i.argval) is tuple and name in i.argval)
                for i in dis.get_instructions(code) if i.opname.startswith(("LOAD_FAST", "LOAD_CLOSURE", "LOAD_DEREF")))
    return name if reads else ""


def _rule(op: str, target) -> Callable | None:
    """The rule that translates a call of ``target`` (a function, or a method's name), None where none."""
    if op == "call_method":
        return _FUNCTIONS.get((op, target))
    key = getattr(target, "__name__", str(target))
    return (_FUNCTIONS.get(("call_function", target))
            or _FUNCTIONS.get(("call_function", f"{getattr(target, '__module__', '')}.{key}"))
            or _FUNCTIONS.get(("call_function", key)))


def _translatable(op: str, target) -> bool:
    """Whether the translator can turn a call of ``target`` into a node, judged as the tracer makes it."""
    if op == "call_function" and target is operator.getitem:
        return True
    if op == "call_function" and target is getattr:
        return True  # the attribute's name is a node argument; the translator says which it models
    key = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    return key in _ARITH or _rule(op, target) is not None


def _unmodelled(node_name: str, op: str, target) -> SpecError:
    key = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    what = f"method .{target}()" if op == "call_method" else f"function {getattr(target, '__module__', '')}.{key}"
    return SpecError(f"cannot model traced node '{node_name}': {what}",
                     fix="wrap that code in a module and register a rule for it (paramcalc.register_torch_module)",
                     value=key)


def _module_path(node) -> str:
    """The path of the module an fx node runs in: its own for a module call, the innermost module
    tracing was in for a function, the owner for an attribute read ("" for the model's own forward)."""
    if node.op == "call_module":
        return node.target
    if node.op == "get_attr":
        return node.target.rpartition(".")[0]
    stack = node.meta.get("nn_module_stack")
    return next(reversed(stack.values()))[0] if stack else ""


def _defaults(module: object) -> dict:
    """forward's arguments that have a constant default (``mask=None``, ``scale=2``): traced with that
    value, as calling the module with its required inputs alone runs it, so ``if mask is not None``
    takes the branch a plain call takes."""
    return {p.name: p.default for p in forward_parameters(module)
            if p.default is not p.empty and p.kind != p.VAR_KEYWORD
            and (p.default is None or type(p.default) in (bool, int, float, str))}


class _FxTranslator:
    """Walks fx nodes in order, turning each into graph nodes (or plain values for constants)."""

    def __init__(self, root: object, name: str, dtype: str, inputs: tuple = ()) -> None:
        self.named_inputs = inputs  # arguments the user named: inputs even where they have a default
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
        self.module = ""  # the path of the module the node being translated runs in

    def translate(self, fx_graph) -> Graph:
        outputs = []
        for node in fx_graph.nodes:
            self.module = _module_path(node)
            try:
                if node.op == "placeholder" and node.args and node.target not in self.named_inputs:
                    # an argument traced at its default value
                    self.env[node] = node.args[0]
                elif node.op == "placeholder" and node.target.startswith("*") and not node.users:
                    continue  # *args or **kwargs the forward never reads: no input to pass
                elif node.op == "placeholder":
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
        notes = self._unreached()
        return Graph(tuple(self.inputs), tuple(self.nodes), tuple(outputs), name=self.name,
                     framework="torch", dtype=self.dtype, notes=notes, modules=module_tree(self.root),
                     forward_mode="train" if self.root.training else "eval")

    def _unreached(self) -> tuple:
        """Parameters and buffers of modules the forward never called, each as a parameter node."""
        found, notes = unreached_parameters(self.root, self.memo, set(self.params_seen))
        for name, layer in found:
            self.module = name.rpartition(".")[0]
            self._add(name, layer, [])
        return notes

    # -- values ----------------------------------------------------------------------------------------
    def _arg(self, a):
        import torch.fx

        if isinstance(a, torch.fx.Node):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return ("tuple", [self._arg(x) for x in a])
        if isinstance(a, dict):  # a dict of outputs (torchvision's segmentation models: {"out": ...})
            return {k: self._arg(v) for k, v in a.items()}
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
        self.nodes.append(GraphNode(name, replace(layer, name=layer.name or name), tuple(inbound), module=self.module))
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
        layer = _convert(module, node.target, self.memo, options=node.kwargs)
        args = [self._arg(a) for a in node.args] + [self._arg(v) for k, v in node.kwargs.items()
                                                     if k in ("query", "key", "value", "memory", "tgt", "src")]
        inbound = [r for a in args for r in self._refs_in(a)]
        taken = any(n.name == node.target for n in self.nodes) or any(i == node.target for i, _ in self.inputs)
        name = node.name if taken else node.target  # fx's own name is unique (an input may be "image" too)
        self.nodes.append(GraphNode(name, layer, tuple(inbound), module=node.target))
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
            if args[1] == "ndim":
                return self._add(node.name, SizeOf(rank_only=True), [args[0][1]])
            raise SpecError(f"node '{node.name}': getattr(..., {args[1]!r}) is not modelled", value=args[1])
        # arithmetic on plain sizes stays plain (or becomes a value node when a size is symbolic)
        if key in _ARITH and not any(self.is_tensor(a) for a in args):
            return self._value_arith(node, _ARITH[key], args)
        rule = _rule(node.op, target)
        if rule is None:
            raise _unmodelled(node.name, node.op, target)
        first = len(self.nodes)
        value = rule(self, node, args, kwargs)
        for i in range(first, len(self.nodes)):  # tables show the function's name ("add", "view")
            added = self.nodes[i]
            if added.layer.type_name is None:
                self.nodes[i] = replace(added, layer=replace(added.layer, type_name=key))
        return value

    def _getitem(self, node, args) -> object:
        value, index = args
        if isinstance(value, _Unbound):  # one slice of x.unbind(dim): x[..., i, ...] at that axis
            return self._add(node.name, Index(value.items(index)), [value.source])
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
        if op == "add" and any(isinstance(v, tuple) and v and v[0] == "tuple" for v in (a, b)):
            return self._joined(node, a, b)  # a tuple in the code: ``x.size()[:-1] + (heads, width)``
        if not any(isinstance(v, tuple) and v and v[0] == "ref" for v in (a, b)):
            return _PLAIN_ARITH[op](a, b)
        inbound, operands = [], []
        for v in (a, b):
            if isinstance(v, tuple) and v and v[0] == "ref":
                operands.append(("input", len(inbound)))
                inbound.append(v[1])
            else:
                operands.append(v)
        return self._add(node.name, ValueOp(op, tuple(operands)), inbound)

    def _joined(self, node, a, b) -> object:
        """Two tuples of sizes joined: in the translation where every size is known, else a value node
        (one side a size tuple read in the graph, the other's items ints or sizes read)."""
        if all(isinstance(v, tuple) and v and v[0] == "tuple" for v in (a, b)):
            return ("tuple", [*a[1], *b[1]])
        inbound, operands = [], []
        for v in (a, b):
            if isinstance(v, tuple) and v and v[0] == "ref":
                operands.append(("input", len(inbound)))
                inbound.append(v[1])
                continue
            items = []
            for item in v[1]:
                if isinstance(item, tuple) and item and item[0] == "ref":
                    items.append(("input", len(inbound)))
                    inbound.append(item[1])
                elif isinstance(item, int):
                    items.append(item)
                else:
                    raise SpecError(f"node '{node.name}': cannot join {item!r} into a tuple of sizes", value=item)
            operands.append(tuple(items))
        return self._add(node.name, ValueOp("concat", tuple(operands)), inbound)

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


@dataclass(frozen=True)
class _Unbound:
    """``x.unbind(dim)``, as yet unpacked: how many slices there are depends on a size the translation
    does not know, so each slice the program takes becomes an index of ``x`` at that axis."""

    source: tuple
    dim: int

    def items(self, index: int) -> tuple:
        if self.dim >= 0:
            return (("slice", None, None, None),) * self.dim + (("int", index),)
        return (("ellipsis",), ("int", index)) + (("slice", None, None, None),) * (-self.dim - 1)


def _unbind(tr: _FxTranslator, node, args, kwargs):
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    return _Unbound(args[0][1], dim)


def _is_ref(value) -> bool:
    return isinstance(value, tuple) and bool(value) and value[0] == "ref"


def _index_items(index) -> tuple:
    return index_items(index[1] if isinstance(index, tuple) and index and index[0] == "tuple" else [index])


_ARITH = {"add": "add", "sub": "sub", "mul": "mul", "floordiv": "floordiv", "iadd": "add", "imul": "mul",
          "mod": "mod", **{op: op for op in COMPARISONS}}
_PLAIN_ARITH = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "floordiv": operator.floordiv,
                "mod": operator.mod, **{op: getattr(operator, op) for op in COMPARISONS}}


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


def _check(tr: _FxTranslator, node, args, kwargs):
    """torch._assert(condition, message): checked on the sizes where the condition is computed from them."""
    condition, message = args[0], args[1] if len(args) > 1 else kwargs.get("message", "")
    if _is_ref(condition):
        return tr._add(node.name, Check(message=str(message)), [condition[1]])
    if not condition:
        raise SpecError(f"the model's own check fails: {message}", value=condition)
    return None


def _chunk(tr: _FxTranslator, node, args, kwargs):
    chunks = args[1] if len(args) > 1 else kwargs["chunks"]
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    return _pieces(tr, node, args[0], Split(axis=dim, chunks=chunks))


def _split(tr: _FxTranslator, node, args, kwargs):
    sections = args[1] if len(args) > 1 else kwargs.get("split_size_or_sections", kwargs.get("split_size"))
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    if not (isinstance(sections, tuple) and sections and sections[0] == "tuple"):
        raise SpecError(f"split into pieces of {sections!r}: only a list of sizes is modelled "
                        "(the number of pieces of a fixed size depends on the input)", value=sections,
                        fix="split with a list of sizes, or use chunk(n)")
    entries, inbound = tr.sizes_arg(sections[1])
    return _pieces(tr, node, args[0], Split(axis=dim, sizes=entries), inbound)


def _pieces(tr: _FxTranslator, node, x, layer: Split, inbound: list = ()) -> tuple:
    tr._add(node.name, layer, [x[1], *inbound])
    return tr._structured(node.name, layer.output_structure)


def _layer_norm(tr: _FxTranslator, node, args, kwargs):
    """F.layer_norm(x, normalized_shape, weight, bias): the normalisation, then the affine terms read as
    the parameters they are (counted where the code reads them)."""
    names = ("input", "normalized_shape", "weight", "bias", "eps")
    bound = dict(zip(names, args)) | kwargs
    shape = _constant_shape(bound["normalized_shape"], "layer_norm")
    terms = tuple(t for t in ("weight", "bias") if _is_ref(bound.get(t)))
    out = tr._add(node.name if bound.get("weight") is None and bound.get("bias") is None else f"{node.name}.norm",
                  LayerNorm(normalized_shape=shape, center=False, scale=False), [bound["input"][1]])
    if terms and len(shape) == 1:  # terms over the last axis, applied inside the norm's kernel
        return tr._add(node.name, ChannelAffine(axis=-1, terms=terms), [out[1], *(bound[t][1] for t in terms)])
    for term, op in (("weight", "multiply"), ("bias", "add")):
        if bound.get(term) is not None:
            last = term == "bias" or bound.get("bias") is None
            out = tr._add(node.name if last else f"{node.name}.{term}", Merge(op), [out[1], bound[term][1]])
    return out


def _interpolate(tr: _FxTranslator, node, args, kwargs):
    """F.interpolate(x, size=... | scale_factor=..., mode=...), channels first; sizes may come from the
    graph (``x.shape[-2:]``)."""
    bound = dict(zip(("input", "size", "scale_factor", "mode"), args)) | kwargs
    size, factor = bound.get("size"), _plain(bound.get("scale_factor"))
    inbound = []
    if size is not None:
        entries, inbound = tr.sizes_arg(size[1] if isinstance(size, tuple) and size and size[0] == "tuple" else [size])
        size = entries
    return tr._add(node.name, UpSample(axes=None, sizes=size, factors=factor,
                                       interpolation=bound.get("mode", "nearest")), [bound["input"][1], *inbound])


def _functional_norm(names: tuple, norm: Callable) -> Callable:
    """F.batch_norm / F.group_norm with a module's weight and bias: the normalisation, then the affine
    terms along the channel axis (the parameters and running statistics count where the code reads them)."""
    def rule(tr: _FxTranslator, node, args, kwargs):
        bound = dict(zip(names, args)) | kwargs
        terms = tuple(t for t in ("weight", "bias") if _is_ref(bound.get(t)))
        out = tr._add(f"{node.name}.norm" if terms else node.name, norm(bound), [bound["input"][1]])
        if not terms:
            return out
        return tr._add(node.name, ChannelAffine(axis=1, terms=terms), [out[1], *(bound[t][1] for t in terms)])
    return rule


def _constant_shape(value, function: str) -> tuple:
    """A normalised shape given as plain ints; one the program computes from sizes is refused by name."""
    shape = _plain(value)
    shape = tuple(shape) if isinstance(shape, tuple) and not _is_ref(shape) else (shape,)
    if not all(type(d) is int for d in shape):
        raise SpecError(f"{function} with a normalized_shape computed from the input's sizes is not modelled",
                        value=value, fix="pass the normalised sizes as ints (a module's normalized_shape)")
    return shape


def _rms_norm(tr: _FxTranslator, node, args, kwargs):
    bound = dict(zip(("input", "normalized_shape", "weight", "eps"), args)) | kwargs
    shape = _constant_shape(bound["normalized_shape"], "rms_norm")
    weight = bound.get("weight")
    out = tr._add(f"{node.name}.norm" if _is_ref(weight) else node.name,
                  RMSNorm(normalized_shape=shape, scale=False), [bound["input"][1]])
    return tr._add(node.name, Merge("multiply"), [out[1], weight[1]]) if _is_ref(weight) else out


def _dropout(tr: _FxTranslator, node, args, kwargs):
    """F.dropout(x, p, training): the identity where the call says it is not training (a module in eval
    mode passing ``training=self.training``), as for stochastic depth."""
    bound = dict(zip(("input", "p", "training", "inplace"), args)) | kwargs
    if not bound.get("training", True) or bound.get("p", 0.5) == 0:
        return tr._add(node.name, Identity(), [bound["input"][1]])
    return tr._add(node.name, Dropout(bound.get("p", 0.5)), [bound["input"][1]])


def _stochastic_depth(tr: _FxTranslator, node, args, kwargs):
    bound = dict(zip(("input", "p", "mode", "training"), args)) | kwargs
    if not bound.get("training", True) or bound.get("p", 0) == 0:
        return tr._add(node.name, Identity(), [bound["input"][1]])
    # whole samples dropped: one noise value per sample ("row") or one for the batch
    axes = () if bound.get("mode", "row") == "batch" else (0,)
    return tr._add(node.name, Dropout(bound["p"], noise_axes=axes), [bound["input"][1]])


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


def _swap(a, k):
    """transpose(x, dim0, dim1) and its aliases swapaxes(x, axis0, axis1), swapdims(x, dim0, dim1)."""
    first = a[1] if len(a) > 1 else k.get("dim0", k.get("axis0"))
    second = a[2] if len(a) > 2 else k.get("dim1", k.get("axis1"))
    return Transpose(swap=(first, second))


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
    both(("transpose", "swapaxes", "swapdims"), (torch.transpose, torch.swapaxes, torch.swapdims), _unary(_swap))
    both(("unsqueeze",), (torch.unsqueeze,), _unary(lambda a, k: Unsqueeze(a[1] if len(a) > 1 else k["dim"])))
    both(("squeeze",), (torch.squeeze,), _unary(lambda a, k: Squeeze(a[1] if len(a) > 1 else k.get("dim"))))
    both(("contiguous", "clone", "detach", "float", "to", "type_as"), (), _unary(lambda a, k: Identity()))
    both(("size",), (), _size)
    both(("dim",), (), lambda tr, node, args, kwargs: tr._add(node.name, SizeOf(rank_only=True), [args[0][1]]))
    table[("call_function", torch._assert)] = _check
    # torch.fx's own guard on an argument traced at its default None
    table[("call_function", "torch.fx._symbolic_trace._assert_is_none")] = lambda tr, node, args, kwargs: None
    both(("chunk",), (torch.chunk,), _chunk)
    both(("unbind",), (torch.unbind,), _unbind)
    both(("split",), (torch.split,), _split)
    table[("call_function", F.layer_norm)] = _layer_norm
    table[("call_function", F.interpolate)] = _interpolate
    table[("call_function", F.batch_norm)] = _functional_norm(
        ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
        lambda b: BatchNorm(axis=1, center=False, scale=False, stats="none"))
    table[("call_function", F.group_norm)] = _functional_norm(
        ("input", "num_groups", "weight", "bias", "eps"),
        lambda b: GroupNorm(groups=b["num_groups"], axis=1, center=False, scale=False))
    if hasattr(F, "rms_norm"):
        table[("call_function", F.rms_norm)] = _rms_norm
    # torchvision's stochastic depth: the identity in eval mode; training scales each sample by a random
    # 0 or 1/(1-p), a multiply by a per-sample tensor (autograd keeps that noise, one value per sample)
    table[("call_function", "torchvision.ops.stochastic_depth.stochastic_depth")] = _stochastic_depth
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
    table[("call_function", F.dropout)] = _dropout
    both((), (F.glu,), _unary(lambda a, k: GLU(a[1] if len(a) > 1 else k.get("dim", -1))))
    both((), (F.pixel_shuffle, torch.pixel_shuffle),
         _unary(lambda a, k: PixelShuffle(a[1] if len(a) > 1 else k["upscale_factor"])))
    both((), (F.pixel_unshuffle, torch.pixel_unshuffle),
         _unary(lambda a, k: PixelShuffle(a[1] if len(a) > 1 else k["downscale_factor"], inverse=True)))
    for op in ("mean", "sum", "amax", "amin"):
        both((op,), (getattr(torch, op),), _reduce(op))
    for rank in (1, 2, 3):
        table[("call_function", getattr(F, f"max_pool{rank}d"))] = _unary(_pool("max", rank))
        table[("call_function", getattr(torch, f"max_pool{rank}d"))] = _unary(_pool("max", rank))
        table[("call_function", getattr(F, f"avg_pool{rank}d"))] = _unary(_pool("avg", rank))
    for mode in ("avg", "max"):
        for rank in (1, 2, 3):
            function = getattr(F, f"adaptive_{mode}_pool{rank}d")
            table[("call_function", function)] = _unary(_adaptive_pool(mode, rank))
    return table


_POOL_ARGUMENTS = {"max": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
                   "avg": ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                           "divisor_override")}


def _plain(value):
    """A traced tuple of plain values as a tuple; anything else as it is."""
    return tuple(value[1]) if isinstance(value, tuple) and value and value[0] == "tuple" else value


def _pool(mode: str, rank: int) -> Callable:
    """F.max_pool{1,2,3}d / F.avg_pool{1,2,3}d, channels first, with torch's defaults."""
    def make(a, k):
        bound = dict(zip(_POOL_ARGUMENTS[mode], a)) | k
        if bound.get("return_indices"):
            raise SpecError(f"{mode}_pool{rank}d(return_indices=True) is not modelled", value=True,
                            fix="call it without return_indices, or wrap the pooling in nn.MaxPool with a rule")
        stride = _plain(bound.get("stride"))
        return Pool(op=mode, pool_size=_plain(bound["kernel_size"]), strides=stride if stride not in (None, ()) else None,
                    padding=_plain(bound.get("padding", 0)), dilation=_plain(bound.get("dilation", 1)),
                    ceil_mode=bool(bound.get("ceil_mode", False)), rank=rank, channels_last=False,
                    whole_window=mode == "avg" and rank == 3)
    return make


def _adaptive_pool(mode: str, rank: int) -> Callable:
    def make(a, k):
        size = a[1] if len(a) > 1 else k["output_size"]
        return AdaptivePool(mode, _plain(size), rank=rank)
    return make


class _LazyTable(dict):
    """The fx function table, built on first use (it needs torch, which the core never imports)."""

    def get(self, key, default=None):
        if not self:
            self.update(_functions())
        return super().get(key, default)


_FUNCTIONS = _LazyTable()
