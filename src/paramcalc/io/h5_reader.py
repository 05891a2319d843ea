"""Legacy Keras ``.h5`` files, read in a child process with h5py: only the root group's
``model_config`` attribute, with the child's memory capped.

A variable-length string attribute does not say its size before it is read, so the size limit cannot
be checked first: the child reads it under a data-segment limit (``RLIMIT_DATA``, h5py's own needs
plus three times the config limit), and an attribute larger than that fails its allocation there, not
in paramcalc. No
dataset, group or link is touched: external links, virtual datasets and external storage are never
followed.

Run as ``python -m paramcalc.io.h5_reader FILE``: prints one JSON document, ``{"config": text}`` or
``{"error": kind, "detail": text}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# the child's data segment: h5py's own needs, then the attribute, its Python copy and its decoded text
CHILD_BASE_BYTES = 96 * 2**20
TIMEOUT_S = 60


def read_model_config(path: str, limit: int) -> str:
    """The ``model_config`` text of ``path``; raises FileFormatError for a missing, oversized or unreadable
    one (imports no h5py here)."""
    from paramcalc.core.errors import FileFormatError
    from paramcalc.io.subprocesses import python_command

    command = python_command(module="paramcalc.io.h5_reader", args=(os.path.abspath(path), str(limit)), isolated=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FileFormatError(f"{path}: could not analyse safely (reading it ran past {TIMEOUT_S} s)",
                              where=str(path)) from None
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if "config" in answer:
        return answer["config"]
    kind = answer.get("error", "crashed")
    if kind == "no_h5py":
        raise FileFormatError(f"{path}: reading legacy .h5 files needs h5py", where=str(path),
                              fix="pip install h5py, or save the model as .keras")
    if kind == "missing":
        raise FileFormatError(f"{path}: weights-only file: no architecture inside (no model_config attribute)",
                              where=str(path), fix="pass the model itself, or its config as JSON")
    if kind == "too_large":
        when = "while reading it, within a memory cap" if answer.get("while_reading") else "once read"
        raise FileFormatError(f"{path}: model_config is larger than the limit of {limit:,} bytes (refused {when})",
                              where=str(path))
    detail = answer.get("detail") or (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    raise FileFormatError(f"{path}: could not analyse safely ({detail[:200]})", where=str(path))


def _child(path: str, limit: int) -> dict:
    try:
        import resource

        cap = CHILD_BASE_BYTES + 3 * limit
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    except (ImportError, ValueError, OSError):  # no such limit here: the size check after reading remains
        pass
    try:
        import h5py
    except ImportError:
        return {"error": "no_h5py"}
    try:
        with h5py.File(path, "r") as handle:
            if "model_config" not in handle.attrs:
                return {"error": "missing"}
            raw = handle.attrs["model_config"]
    except MemoryError:
        return {"error": "too_large", "while_reading": True}
    except OSError as error:  # h5py reports a failed allocation as an OSError
        text = str(error)
        if "alloc" in text.lower():
            return {"error": "too_large", "while_reading": True}
        return {"error": "unreadable", "detail": text}
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except MemoryError:
        return {"error": "too_large", "while_reading": True}
    except UnicodeDecodeError:
        return {"error": "unreadable", "detail": "model_config is not UTF-8 text"}
    if len(text) > limit:
        return {"error": "too_large"}
    return {"config": text}


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], int(sys.argv[2]))))
