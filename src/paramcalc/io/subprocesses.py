"""How paramcalc starts a Python child process: never with the current folder on its import path.

``python -m module`` and ``python -c code`` put the current folder first on ``sys.path``, so an
``onnx.py`` or ``json.py`` lying beside a downloaded model would run in place of the real module. Every
child paramcalc starts goes through :func:`python_command`:

- ``isolated=True`` (the file readers: ONNX, HDF5): Python's isolated mode (``-I``: no PYTHON*
  variables, no user site-packages, no script folder), with paramcalc's own folder put on the path
  explicitly, so the child imports paramcalc and the parser it needs and nothing from the user's folder
  or environment;
- ``isolated=False`` (calibration runs, which need the user's frameworks wherever they are installed):
  the environment is kept, and the current folder is taken off the path before anything is imported.
"""

from __future__ import annotations

import os
import sys

# the folder that holds the paramcalc package (src/ in a checkout, site-packages when installed)
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_BOOTSTRAP = ("import os, sys, runpy\n"
              "sys.path[:] = [p for p in sys.path if p not in ('', '.', os.getcwd())]\n"
              "sys.path.insert(0, {parent!r})\n"
              "sys.argv = {argv!r}\n"
              "{run}\n")


def python_command(*, module: str | None = None, code: str | None = None, args: tuple = (),
                   isolated: bool = True) -> list[str]:
    """The command line that runs ``module`` (as ``-m`` would, with ``args``) or ``code`` in a child
    Python that cannot import from the current folder."""
    if (module is None) == (code is None):
        raise ValueError("give a module or code, not both")
    if module is not None:
        run = f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
        argv = [module, *args]
    else:
        run = f"exec(compile({code!r}, '<paramcalc child>', 'exec'), {{'__name__': '__main__'}})"
        argv = ["-c", *args]
    bootstrap = _BOOTSTRAP.format(parent=PACKAGE_PARENT, argv=argv, run=run)
    return [sys.executable, *(["-I"] if isolated else []), "-c", bootstrap]
