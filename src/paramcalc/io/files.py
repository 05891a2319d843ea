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

from paramcalc.core.dims import prod
from paramcalc.core.errors import FileFormatError, SpecError

MAX_CONFIG_BYTES = 64 * 2**20  # far larger than any real model's config.json
MAX_COMPRESSION_RATIO = 200  # a config.json compresses ~10x; more is a zip bomb
MAX_SAFETENSORS_HEADER = 100 * 2**20
# safetensors dtypes -> bits per element (sub-byte types are packed: bytes round up)
SAFETENSORS_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16, "I8": 8, "U8": 8,
                    "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "U16": 16, "U32": 32, "U64": 64, "C64": 64,
                    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


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


# Suffixes of pickled checkpoints: protocols 0 and 1 write text with no magic byte to tell them by
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"}


def check_regular(path: str | Path) -> None:
    """Refuse, before opening it, anything but a regular file: a device such as /dev/zero never ends, a
    FIFO blocks until someone writes, a folder has no content."""
    import stat

    path = Path(path)
    mode = path.stat().st_mode  # follows a link to what it names
    if stat.S_ISREG(mode):
        return
    what = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise FileFormatError(f"{path}: {what}, not a model file: paramcalc reads regular files only", where=str(path),
                          fix="pass the path of a model file")


def read_text(path: str | Path) -> str:
    """A spec file's text: read up to the size limit (a file past it is refused before it is read
    whole) and decoded as UTF-8 (binary content is no spec)."""
    from paramcalc.frontends.spec import MAX_SPEC_BYTES

    path = Path(path)
    check_regular(path)
    with path.open("rb") as handle:
        data = handle.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise FileFormatError(f"{path}: larger than any model spec (limit {MAX_SPEC_BYTES:,} bytes)",
                              where=str(path), value=path.stat().st_size)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileFormatError(f"{path}: binary content (byte 0x{data[err.start]:02x} at offset {err.start} is not "
                              "UTF-8 text), not a JSON or YAML spec", where=str(path),
                              fix="pass a model file paramcalc reads: .keras, .h5, ONNX, safetensors, or a "
                                  "JSON/YAML spec") from None


def sniff(path: str | Path) -> str:
    """'keras', 'zip', 'safetensors', 'pickle', 'torch-zip', 'hdf5', 'json', 'onnx' or 'unknown', from the
    first bytes (the suffix only where content cannot tell: old pickles, a safetensors length that lies)."""
    path = Path(path)
    check_regular(path)
    size = path.stat().st_size
    suffix = path.suffix.lower()
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError):
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
    if len(head) >= 9 and head[8:9] == b"{" and (8 + struct.unpack("<Q", head[:8])[0] <= size
                                                 or suffix == ".safetensors"):
        return "safetensors"  # a little-endian header length, then a JSON header (a lying length is reported)
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if head[:1] == b"\x08" and suffix == ".onnx":  # a protobuf ModelProto starts with ir_version
        return "onnx"
    if suffix in PICKLE_SUFFIXES:
        return "pickle"  # protocol 0 or 1: text, no magic byte
    return "unknown"


def read_keras_config(path: str | Path) -> dict:
    """The model config inside a ``.keras`` archive, with its size checked before it is read."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError):
        raise FileFormatError(f"{path}: not a Keras archive (not a zip file)", where=str(path)) from None
    with archive:
        try:
            info = archive.getinfo("config.json")
        except KeyError:
            raise FileFormatError(f"{path}: not a Keras archive (no config.json inside)", where=str(path)) from None
        if info.file_size > MAX_CONFIG_BYTES:
            raise FileFormatError(f"{path}: config.json declares {info.file_size:,} bytes, over the limit of "
                                  f"{MAX_CONFIG_BYTES:,}", where=str(path))
        if info.flag_bits & 0x1:  # zip's "encrypted" flag: zipfile would ask for a password
            raise FileFormatError(f"{path}: config.json is encrypted; Keras writes its archives unencrypted, "
                                  "so this one was changed or damaged: save the model again with model.save()",
                                  where=str(path))
        if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
            raise FileFormatError(f"{path}: config.json expands {info.file_size / info.compress_size:,.0f}x, over "
                                  f"the limit of {MAX_COMPRESSION_RATIO}x (a compression bomb?)", where=str(path))
        try:
            with archive.open(info) as member:
                data = member.read(MAX_CONFIG_BYTES + 1)  # a member whose declared size lies stops here
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as err:
            # zipfile raises RuntimeError and ValueError too, on entries its headers describe inconsistently
            raise FileFormatError(f"{path}: config.json is corrupt or its sizes disagree ({err})",
                                  where=str(path)) from None
        if len(data) > MAX_CONFIG_BYTES:
            raise FileFormatError(f"{path}: config.json is larger than the limit of {MAX_CONFIG_BYTES:,} bytes "
                                  "(its declared size was wrong)", where=str(path))
    from paramcalc.frontends.spec import load_spec_text

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
    from paramcalc.frontends.spec import load_spec_text

    try:
        header_text = header_bytes.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileFormatError(f"{path}: the safetensors header is not UTF-8 (byte 0x{header_bytes[err.start]:02x} at "
                              f"file offset {8 + err.start})", where=str(path)) from None
    try:
        header = load_spec_text(header_text, f"{path}:header")
    except SpecError as err:
        if "not valid JSON" not in err.message:
            raise
        raise FileFormatError(f"{path}: the {header_len:,} bytes its first 8 bytes announce are not a JSON header "
                              f"({err.message.split('(', 1)[-1].rstrip(')')}): the header length is wrong, or this "
                              "is not a safetensors file", where=str(path)) from None
    data_size = size - 8 - header_len
    metadata = header.pop("__metadata__", {}) or {}
    tensors, spans = [], []
    for name, entry in header.items():
        where = f"{path}:{name}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise FileFormatError(f"{where}: a tensor entry needs dtype, shape and data_offsets", where=where)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_BITS:
            raise FileFormatError(f"{where}: unknown dtype {dtype!r}; known: {', '.join(SAFETENSORS_BITS)}",
                                  where=where, value=dtype)
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
        nbytes = -(-prod(shape) * SAFETENSORS_BITS[dtype] // 8)
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
    """The ``model_config`` attribute of a legacy Keras ``.h5`` file, read with h5py in a child process
    whose memory is capped (:mod:`paramcalc.io.h5_reader`): a variable-length string does not say its size
    before it is read."""
    from paramcalc.frontends.spec import load_spec_text
    from paramcalc.io.h5_reader import read_model_config

    return load_spec_text(read_model_config(str(path), MAX_CONFIG_BYTES), f"{path}:model_config")


def refuse(path: str | Path, kind: str) -> FileFormatError:
    """The error for a file paramcalc recognised and will not read, or could not recognise."""
    path = Path(path)
    if kind in ("pickle", "torch-zip"):
        what = "a torch checkpoint (a zip of pickles)" if kind == "torch-zip" else "a pickle"
        keras = " named .keras, not a Keras archive" if path.suffix.lower() == ".keras" else ""
        return FileFormatError(
            f"{path}: {what}{keras}: never loaded (paramcalc never unpickles files: unpickling runs code)",
            where=str(path),
            fix="pass the nn.Module object to paramcalc.estimate(), or a safetensors file for parameter counts")
    if path.suffix.lower() == ".keras":
        why = "a zip without config.json" if kind == "zip" else "not a zip file"
        return FileFormatError(f"{path}: not a Keras archive ({why})", where=str(path),
                               fix="save the model with model.save('model.keras'), or pass its get_config() as JSON")
    return FileFormatError(f"{path}: not a model file paramcalc reads (a .keras archive, .h5, ONNX, safetensors, "
                           "or a JSON/YAML spec or Keras config)", where=str(path))
