"""The docs stay true: every kind, class and rule is documented, and every Python example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import paramcalc
from paramcalc.diagnostics import RULES

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def test_every_builtin_kind_is_in_the_layer_reference():
    text = (ROOT / "docs" / "layers.md").read_text()
    kinds = [k for k, cls in paramcalc.layer_kinds().items() if cls.__module__.startswith("paramcalc.layers.")]
    missing = [k for k in kinds if f"| `{k}` |" not in text]
    assert not missing


def test_every_translated_class_is_in_the_layer_reference():
    from paramcalc.frontends import keras as keras_frontend
    from paramcalc.frontends import torch as torch_frontend

    text = (ROOT / "docs" / "layers.md").read_text()
    classes = set(keras_frontend.BUILTINS) | {name.rsplit(".", 1)[1] for name in torch_frontend.BUILTINS}
    assert not [c for c in sorted(classes) if f"`{c}`" not in text]


def test_every_diagnostic_rule_is_documented():
    text = (ROOT / "docs" / "diagnostics.md").read_text()
    assert not [code for code in RULES if f"| `{code}` |" not in text]


def _python_blocks():
    for path in DOCS:
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S)):
            yield pytest.param(block, id=f"{path.name}-{i}")


@pytest.mark.parametrize("code", list(_python_blocks()))
def test_python_examples_run(code):
    exec(compile(code, "<docs>", "exec", dont_inherit=True), {"__name__": "__main__"})


def test_docs_site_builds_strictly(tmp_path):
    """The docs build as a site with mkdocs in strict mode: a broken link or anchor fails."""
    pytest.importorskip("mkdocs")
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "index.html").exists() and (tmp_path / "layers" / "index.html").exists()


def test_generated_kind_reference_is_current():
    from paramcalc.reference import kinds_markdown

    assert (ROOT / "docs" / "kinds.md").read_text() == kinds_markdown(), \
        "regenerate with: python -m paramcalc.reference > docs/kinds.md"
