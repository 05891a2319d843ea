"""ATen operations whose meta kernel refuses calls that the CPU kernel runs, answered as the CPU runs them.

A model is read by running its forward on the meta device, and meta kernels mostly check what the device
kernels check. Where one checks a GPU's limits instead, a model that trains on the CPU cannot be read.
The outputs of such calls are made here, from the CPU kernel's checks and layout.

One operation needs this today. ``_grouped_mm`` is the product over groups of rows that mixture-of-experts
layers run: Hugging Face's experts layers call it by default (Mixtral, Qwen-MoE, DeepSeek, OLMoE,
gpt-oss). Its meta kernel ports the CUDA kernel's checks and takes bfloat16 alone. The CPU kernel also
runs float32 and float16, and pads its output's rows to 16 bytes.

The CPU kernel itself is the oracle: tests/test_torch_meta_cpu.py compares every answer with it. A call
the CPU refuses is not answered. Its meta kernel runs and raises its own error.
"""

from __future__ import annotations

from functools import cache

_GROUPED_DTYPES = ("float32", "float16", "bfloat16")  # what the CPU's _grouped_mm multiplies


@cache  # built once per process: the rules close over torch's operations
def cpu_rules() -> dict:
    """ATen operation -> rule(args, kwargs) giving its output as the CPU kernel makes it, or None where
    the CPU kernel would refuse the call."""
    import torch

    aten = torch.ops.aten
    dtypes = {getattr(torch, name) for name in _GROUPED_DTYPES}

    def aligned(t) -> bool:
        """One of the last two axes is unit-stride; the other's stride is a multiple of 16 bytes and spans it."""
        rows, cols = t.stride()[-2], t.stride()[-1]
        alignment = 16 // t.element_size()
        if rows == 1 and cols >= max(1, t.shape[-2]):
            return cols % alignment == 0
        if cols == 1 and rows >= max(1, t.shape[-1]):
            return rows % alignment == 0
        return False

    def grouped_mm(args, kwargs):  # _grouped_mm(mat_a, mat_b, offs=None, bias=None, out_dtype=None)
        names = ("mat_a", "mat_b", "offs", "bias", "out_dtype")
        given = dict(zip(names, args), **kwargs)
        a, b, offs = given.get("mat_a"), given.get("mat_b"), given.get("offs")
        if given.get("bias") is not None or given.get("out_dtype") not in (None, getattr(a, "dtype", None)):
            return None
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.device.type != "meta" \
                or b.device.type != "meta" or a.dtype != b.dtype or a.dtype not in dtypes:
            return None
        if a.dim() not in (2, 3) or b.dim() not in (2, 3) or a.shape[-1] != b.shape[-2] \
                or not aligned(a) or not aligned(b):
            return None
        if a.dim() == 2 or b.dim() == 2:  # groups of rows, columns or the contraction, split by offs
            if not isinstance(offs, torch.Tensor) or offs.dim() != 1 or offs.dtype != torch.int32:
                return None
            if a.dim() == 2 and b.dim() == 2:
                shape = (offs.shape[0], a.shape[0], b.shape[1])
            elif a.dim() == 2:
                shape = (a.shape[0], b.shape[-1]) if offs.shape[0] == b.shape[0] else None
            else:
                shape = (a.shape[1], b.shape[1]) if offs.shape[0] == a.shape[0] else None
        else:  # a batch of products, one per group
            shape = (a.shape[0], a.shape[1], b.shape[-1]) if offs is None and a.shape[0] == b.shape[0] else None
        if shape is None:
            return None
        # rows padded to 16 bytes, as the kernel lays its output out
        alignment = 16 // a.element_size()
        padded = -(-shape[-1] // alignment) * alignment
        strides = (shape[1] * padded, padded, 1) if len(shape) == 3 else (padded, 1)
        return torch.empty_strided(shape, strides, dtype=a.dtype, device="meta")

    return {aten._grouped_mm.default: grouped_mm}
