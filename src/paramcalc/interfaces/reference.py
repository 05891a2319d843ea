"""The layer-kind reference generated from the registry: ``python -m paramcalc.interfaces.reference > docs/kinds.md``.

A test regenerates it and compares, so the page cannot drift from the code.
"""

from __future__ import annotations

import dataclasses

import paramcalc.layers  # noqa: F401  (registers the built-in kinds)

BASE_FIELDS = {"name", "type_name", "trainable", "tied"}


def kinds_markdown() -> str:
    from paramcalc.core.registry import layer_kinds

    lines = ["# Layer kinds (generated)", "",
             "Generated from the registry by `python -m paramcalc.interfaces.reference`; every kind also takes `name`, "
             "`trainable` and `type_name`. The framework classes that map to each kind, and their maths, are in "
             "[layers.md](layers.md).", "",
             "| kind | class | arguments (defaults) | what it is |", "|---|---|---|---|"]
    for kind, cls in sorted(layer_kinds().items()):
        if not cls.__module__.startswith("paramcalc.layers."):
            continue
        args = []
        for f in dataclasses.fields(cls):
            if f.name in BASE_FIELDS:
                continue
            default = f.default if f.default is not dataclasses.MISSING else "required"
            args.append(f"`{f.name}={default!r}`")
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        lines.append(f"| `{kind}` | `paramcalc.{cls.__name__}` | {', '.join(args) or '—'} | "
                     f"{doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(kinds_markdown(), end="")
