"""paramcalc specs in YAML, read with limits: PyYAML's safe loader (no Python objects), a cap on the
nodes an alias-expanded document would hold (a "billion laughs" file is refused before it is built),
and anchors that refer to themselves refused as cyclic.
"""

from __future__ import annotations

from paramcalc.core.errors import SpecError

MAX_NODES = 100_000  # far beyond any model spec, far below an alias bomb
MAX_DEPTH = 64  # as for JSON specs
MAX_YAML_BYTES = 16 * 2**20


def load_spec_yaml(text: str, source: str) -> dict:
    try:
        import yaml
    except ImportError:
        raise SpecError(f"{source}: reading YAML needs PyYAML", fix="pip install 'paramcalc[yaml]'") from None
    if len(text) > MAX_YAML_BYTES:
        raise SpecError(f"{source}: {len(text):,} characters is larger than any model spec "
                        f"(limit {MAX_YAML_BYTES:,})", where=source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: not valid YAML ({str(err).splitlines()[0]})", where=source) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise SpecError(f"{source}: nesting too deep (limit about {MAX_DEPTH} levels: a model spec is a few "
                        "levels deep)", where=source) from None
    if node is None:
        raise SpecError(f"{source}: the YAML document is empty", where=source)
    _check_size(node, source)
    try:
        data = yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - the safe loader builds plain data only
    except RecursionError:
        raise SpecError(f"{source}: nesting too deep (limit {MAX_DEPTH} levels)", where=source) from None
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: not valid YAML ({str(err).splitlines()[0]})", where=source) from None
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a model spec must be a mapping, received {type(data).__name__}", where=source)
    return data


def _check_size(root, source: str) -> None:
    """Count the nodes the document expands to (aliases counted at every use), refusing cycles."""
    import yaml

    expanded: dict[int, int] = {}  # node id -> expanded size, once known
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if not done and len(on_path) > MAX_DEPTH:
            raise SpecError(f"{source}: nesting too deep (limit {MAX_DEPTH} levels) at line {node.start_mark.line + 1}",
                            where=source)
        if not done and isinstance(node, yaml.MappingNode):
            _check_unique_keys(node, source)
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node, yaml)
            size = 1 + sum(expanded[id(c)] for c in children)
            if size > MAX_NODES:
                raise SpecError(f"{source}: the YAML document expands to more than {MAX_NODES:,} nodes (node cap; "
                                "an alias bomb?)", where=source)
            expanded[key] = size
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise SpecError(f"{source}: an anchor refers to itself (cyclic YAML)", where=source)
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node, yaml):
            if id(child) in on_path:
                raise SpecError(f"{source}: an anchor refers to itself (cyclic YAML)", where=source)
            if id(child) not in expanded:
                stack.append((child, False))


def _check_unique_keys(node, source: str) -> None:
    """A key given twice in one mapping is refused, as in JSON specs (YAML loaders keep the last)."""
    seen: dict = {}
    for key, _ in node.value:
        if not hasattr(key, "value") or not isinstance(key.value, str):
            continue
        if key.value in seen:
            raise SpecError(f"{source}: duplicate key {key.value!r} at line {key.start_mark.line + 1} (first at line "
                            f"{seen[key.value]})", where=f"{source}:{key.start_mark.line + 1}", value=key.value,
                            fix="keep one entry per key")
        seen[key.value] = key.start_mark.line + 1


def _children(node, yaml) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []
