"""Model files, read as data: never a framework loader, never pickle, never eval.

Recognised by their content, not their extension:
- a Keras archive (``.keras``: a zip holding config.json): the config is read with size limits checked
  before anything is decompressed, and estimated like ``model.get_config()``;
- safetensors: the JSON header alone gives every tensor's dtype and shape, so parameter counts and
  bytes come without reading the weights; offsets and sizes are checked against the file;
- pickles (``.pt``, ``.pth``, ``.bin``, torch's zip checkpoints): refused, never unpickled.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .dims import prod
from .errors import SpecError

MAX_CONFIG_BYTES = 64 * 2**20  # far larger than any real model's config.json
MAX_COMPRESSION_RATIO = 200  # a config.json compresses ~10x; more is a zip bomb
MAX_SAFETENSORS_HEADER = 100 * 2**20
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


class FileFormatError(SpecError):
    """A file paramcalc will not (or cannot safely) read; the message says why and what to pass instead."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple
    nbytes: int

    @property
    def numel(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class WeightsFile:
    """What a weights-only file holds: tensors, their total elements and bytes (no architecture)."""

    path: str
    tensors: tuple
    metadata: dict

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def sniff(path: str | Path) -> str:
    """'keras', 'safetensors', 'pickle', 'torch-zip', 'hdf5', 'json' or 'unknown', from the first bytes."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        if "config.json" in names:
            return "keras"
        if any(n.endswith("data.pkl") for n in names):
            return "torch-zip"
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(1, 6):
        return "pickle"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if len(head) >= 9 and head[8:9] == b"{" and 8 + struct.unpack("<Q", head[:8])[0] <= size:
        return "safetensors"  # a little-endian header length that fits the file, then a JSON header
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if head[:1] == b"\x08" and path.suffix.lower() == ".onnx":  # a protobuf ModelProto starts with ir_version
        return "onnx"
    return "unknown"


def read_keras_config(path: str | Path) -> dict:
    """The model config inside a ``.keras`` archive, with its size checked before it is read."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise FileFormatError(f"{path}: not a Keras archive (not a zip file)", where=str(path)) from None
    with archive:
        try:
            info = archive.getinfo("config.json")
        except KeyError:
            raise FileFormatError(f"{path}: not a Keras archive (no config.json inside)", where=str(path)) from None
        if info.file_size > MAX_CONFIG_BYTES:
            raise FileFormatError(f"{path}: config.json declares {info.file_size:,} bytes, over the limit of "
                                  f"{MAX_CONFIG_BYTES:,}", where=str(path))
        if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
            raise FileFormatError(f"{path}: config.json expands {info.file_size / info.compress_size:,.0f}x, over "
                                  f"the limit of {MAX_COMPRESSION_RATIO}x (a compression bomb?)", where=str(path))
        try:
            with archive.open(info) as member:
                data = member.read(MAX_CONFIG_BYTES + 1)  # a member whose declared size lies stops here
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise FileFormatError(f"{path}: config.json is corrupt or its sizes disagree ({err})",
                                  where=str(path)) from None
        if len(data) > MAX_CONFIG_BYTES:
            raise FileFormatError(f"{path}: config.json is larger than the limit of {MAX_CONFIG_BYTES:,} bytes "
                                  "(its declared size was wrong)", where=str(path))
    from .frontends.spec import load_spec_text

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileFormatError(f"{path}: config.json is not UTF-8 text", where=str(path)) from None
    return load_spec_text(text, f"{path}:config.json")


def read_safetensors(path: str | Path) -> WeightsFile:
    """Tensor names, dtypes and shapes from a safetensors header; the weights are never read."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise FileFormatError(f"{path}: too short for a safetensors file", where=str(path))
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_SAFETENSORS_HEADER:
            raise FileFormatError(f"{path}: safetensors header of {header_len:,} bytes is over the limit of "
                                  f"{MAX_SAFETENSORS_HEADER:,}", where=str(path))
        if 8 + header_len > size:
            raise FileFormatError(f"{path}: the header length ({header_len:,}) runs past the end of the file "
                                  f"({size:,} bytes)", where=str(path))
        header_bytes = handle.read(header_len)
    from .frontends.spec import load_spec_text

    header = load_spec_text(header_bytes.decode("utf-8", errors="strict"), f"{path}:header")
    data_size = size - 8 - header_len
    metadata = header.pop("__metadata__", {}) or {}
    tensors, spans = [], []
    for name, entry in header.items():
        where = f"{path}:{name}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise FileFormatError(f"{where}: a tensor entry needs dtype, shape and data_offsets", where=where)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise FileFormatError(f"{where}: unknown dtype {dtype!r}", where=where, value=dtype)
        if not isinstance(shape, list) or any(type(d) is not int or d < 0 for d in shape):
            raise FileFormatError(f"{where}: shape must be a list of non-negative ints, received {shape!r}",
                                  where=where, value=shape)
        if (not isinstance(offsets, list) or len(offsets) != 2 or any(type(o) is not int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise FileFormatError(f"{where}: data_offsets must be [begin, end], received {offsets!r}",
                                  where=where, value=offsets)
        if offsets[1] > data_size:
            raise FileFormatError(f"{where}: data_offsets {offsets} run past the end of the data ({data_size:,} "
                                  "bytes)", where=where, value=offsets)
        nbytes = prod(shape) * SAFETENSORS_DTYPES[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise FileFormatError(f"{where}: {dtype} x {tuple(shape)} needs {nbytes:,} bytes but data_offsets "
                                  f"span {offsets[1] - offsets[0]:,}", where=where, value=offsets)
        spans.append((offsets[0], offsets[1], name))
        tensors.append(TensorEntry(name, dtype, tuple(shape), nbytes))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise FileFormatError(f"{path}: tensors '{n0}' and '{n1}' overlap ({b0}-{e0} and {b1}-{e1})",
                                  where=str(path))
    return WeightsFile(str(path), tuple(tensors), metadata if isinstance(metadata, dict) else {})


def read_h5_config(path: str | Path) -> dict:
    """The ``model_config`` attribute of a legacy Keras ``.h5`` file, read with h5py.

    Only the root group's attributes are read: no dataset, no group walk, so external links, virtual
    datasets and external storage are never followed.
    """
    try:
        import h5py
    except ImportError:
        raise FileFormatError(f"{path}: reading legacy .h5 files needs h5py", where=str(path),
                              fix="pip install h5py, or save the model as .keras") from None
    with h5py.File(path, "r") as handle:
        raw = handle.attrs.get("model_config")
    if raw is None:
        raise FileFormatError(f"{path}: weights-only file: no architecture inside (no model_config attribute)",
                              where=str(path), fix="pass the model itself, or its config as JSON")
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    if len(text) > MAX_CONFIG_BYTES:
        raise FileFormatError(f"{path}: model_config is larger than the limit of {MAX_CONFIG_BYTES:,} bytes",
                              where=str(path))
    from .frontends.spec import load_spec_text

    return load_spec_text(text, f"{path}:model_config")


def refuse(path: str | Path, kind: str) -> FileFormatError:
    if kind in ("pickle", "torch-zip"):
        return FileFormatError(
            f"{path}: a pickle file (torch .pt/.pth/.bin); paramcalc never unpickles files, which can run code",
            where=str(path),
            fix="pass the nn.Module object to paramcalc.estimate(), or a safetensors file for parameter counts")
    return FileFormatError(f"{path}: not a model file paramcalc reads (a .keras archive, safetensors, or a JSON "
                           "spec or Keras config)", where=str(path))
