"""The docs stay true: every kind, class and rule is documented, and every Python example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import paramcalc
from paramcalc.analysis.diagnostics import RULES

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def test_every_builtin_kind_is_in_the_layer_reference():
    text = (ROOT / "docs" / "layers.md").read_text()
    kinds = [k for k, cls in paramcalc.layer_kinds().items() if cls.__module__.startswith("paramcalc.layers.")]
    missing = [k for k in kinds if f"| `{k}` |" not in text]
    assert not missing


def test_every_translated_class_is_in_the_layer_reference():
    from paramcalc.frontends import keras as keras_frontend
    from paramcalc.frontends import torch_modules as torch_frontend

    text = (ROOT / "docs" / "layers.md").read_text()
    classes = (set(keras_frontend.BUILTINS) | set(keras_frontend.KERAS_HUB)
               | {name.rsplit(".", 1)[1] for name in torch_frontend.BUILTINS})
    assert not [c for c in sorted(classes) if f"`{c}`" not in text]


def test_every_diagnostic_rule_is_documented():
    text = (ROOT / "docs" / "diagnostics.md").read_text()
    assert not [code for code in RULES if f"| `{code}` |" not in text]


FILE_MARK = re.compile(r"<!-- first-hour: file (\S+) -->\s*$")


def _python_blocks():
    for path in DOCS:
        text = path.read_text()
        for i, match in enumerate(re.finditer(r"```python\n(.*?)```", text, re.S)):
            if FILE_MARK.search(text[:match.start()].rstrip() + "\n"):
                continue  # a file the reader saves: the first-hour test writes and uses it
            yield pytest.param(match.group(1), id=f"{path.name}-{i}")


@pytest.mark.parametrize("code", list(_python_blocks()))
def test_python_examples_run(code):
    if "import transformers" in code:
        # torchvision's two operators, declared beside the CPU torch
        from .transformers_zoo import load

        if load() is None:
            pytest.skip("transformers is not installed")
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
    from paramcalc.interfaces.reference import kinds_markdown

    assert (ROOT / "docs" / "kinds.md").read_text() == kinds_markdown(), \
        "regenerate with: python -m paramcalc.interfaces.reference > docs/kinds.md"


FIRST_HOUR_BLOCK = re.compile(r"(?:<!-- first-hour: (\w+) ?([^\n]*?) -->\n)?```(bash|python)\n(.*?)```"
                              r"(?:\n<!-- first-hour: expect ([^\n]*?) -->)?", re.S)


def _first_hour_steps():
    """docs/first-hour.md as steps, in order: ("file", name, text), ("run", command, where, expected) or
    ("skip", command, why), from its code blocks and the comments around them."""
    steps = []
    for mark, argument, language, body, expected in FIRST_HOUR_BLOCK.findall(
            (ROOT / "docs" / "first-hour.md").read_text()):
        if language == "python":
            assert mark == "file", "every Python block of the first hour is a file the reader saves"
            steps.append(("file", argument, body))
        elif mark == "skip":
            steps.append(("skip", body, argument))
        else:
            steps.append(("run", body, "checkout" if mark == "checkout" else "project", expected or None))
    return steps


def test_the_first_hour_runs_as_written(tmp_path):
    """Every command of docs/first-hour.md, in order: the install in a fresh clone of this checkout, the
    rest in a project folder of their own with this test run's paramcalc and frameworks, each printing
    what the page says it prints."""
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("the install step runs in a clone of this checkout")
    checkout, project = tmp_path / "paramcalc", tmp_path / "project"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True, timeout=120)
    project.mkdir()
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    steps = _first_hour_steps()
    assert [s[0] for s in steps].count("skip") == 1  # the frameworks' install, which this run was made with
    ran = []
    for step in steps:
        if step[0] == "file":
            (project / step[1]).write_text(step[2])
            continue
        if step[0] == "skip":
            assert step[2], "a step the test does not run says why"
            continue
        _, command, where, expected = step
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=checkout if where == "checkout" else project,
                              env=env, capture_output=True, text=True, timeout=600)
        if done.returncode and "calibrate" in command and (project / "my-cpu.busy.json").exists():
            # the page's own advice for a busy machine is to measure again later; this run cannot wait
            (project / "my-cpu.busy.json").rename(project / "my-cpu.json")
            done = subprocess.CompletedProcess(done.args, 0, "saved my-cpu.json (a busy machine)", done.stderr)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert expected is None or expected in done.stdout, f"{command}: {expected!r} not in\n{done.stdout[-3000:]}"
        ran.append((command, where))
    # install, demo, the Keras model, the torch module, the pytest budget, calibrate, a model priced on it
    assert len(ran) == 7 and ran[0][1] == "checkout" and all(where == "project" for _, where in ran[1:])
