"""Where in the user's code (or a library's) an exception raised while paramcalc ran a forward.

A failure inside torch is best explained by the line of model code that called into torch, such as
``if pad_token_id in input_ids`` or ``math.sqrt(x.size(-1))``. That is the innermost frame of the
traceback outside torch and outside paramcalc.
"""

from __future__ import annotations

import linecache
import os
import sys
from dataclasses import dataclass

_PARAMCALC = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


@dataclass(frozen=True)
class CodeLine:
    """One line of code: its file, number, the function it is in, and its text."""

    path: str
    number: int
    function: str
    text: str

    def __str__(self) -> str:
        # the path from the package's folder where the file is installed, else the file's name
        _, installed, inside = self.path.rpartition(f"site-packages{os.sep}")
        place = f"{inside if installed else os.path.basename(self.path)}:{self.number} in {self.function}"
        return f"{place}: {self.text}" if self.text else place


def raising_line(err: BaseException) -> CodeLine | None:
    """The innermost line of the traceback of ``err`` outside torch and paramcalc; None where none is."""
    torch = sys.modules.get("torch")
    skipped = (_PARAMCALC,) + ((os.path.dirname(os.path.abspath(torch.__file__)) + os.sep,) if torch else ())
    found = None
    tb = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if not os.path.abspath(code.co_filename).startswith(skipped):
            found = (code.co_filename, tb.tb_lineno, code.co_name)
        tb = tb.tb_next
    if found is None:
        return None
    return CodeLine(*found, linecache.getline(found[0], found[1]).strip())
