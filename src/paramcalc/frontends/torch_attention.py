"""Attention as torch runs it on a real device, while the forward runs on meta tensors.

``F.scaled_dot_product_attention`` picks its kernel by device: on the CPU and on GPUs a fused kernel
(flash, memory-efficient, cuDNN), which keeps the query, key, value, output and one log-sum-exp per
query row for the backward; on the meta device, which has no fused kernel, the math path, which keeps the
whole (batch, heads, queries, keys) probabilities. Recording the math path would count memory a real
run never holds (8 GiB for a 7B decoder at 2,048 tokens), so while the capture runs, a call a fused CPU
kernel would take is sent to ``aten._scaled_dot_product_flash_attention_for_cpu``, whose meta kernel
gives the fused kernel's shapes and whose backward formula saves what the real one saves (checked against
saved-tensor hooks on a real CPU run). The CPU's rule decides: dropout on the probabilities, query and
value widths that differ, a query, key or value whose last axis is not contiguous, a mask that needs a
gradient, or tensors that are not 4-D take the math path there, and are recorded as such (a GPU's fused
kernels would keep less with dropout).
"""

from __future__ import annotations

import functools
import math


def fused_attention_mode(device: str = "meta"):
    """A torch function mode that sends fused-eligible ``scaled_dot_product_attention`` calls to the
    CPU's fused kernel, and makes tensors made without a device on ``device``, as ``with
    torch.device(device)`` does (it is that mode, extended: one mode where two would each cost a Python
    call on every torch function the forward runs)."""
    return _fused_attention_class()(device)


@functools.cache
def _fused_attention_class() -> type:
    """The mode's class, made once: a class made per call lives in a reference cycle, which only
    Python's garbage collector frees."""
    import torch
    from torch.utils import _device
    from torch.utils._device import DeviceContext

    # the functions DeviceContext gives a device to (a private list of torch's: None where it has gone)
    constructors = _device._device_constructors() if hasattr(_device, "_device_constructors") else None
    sdpa = torch.nn.functional.scaled_dot_product_attention
    fused = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    defaults = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}

    class FusedAttention(DeviceContext):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is sdpa:
                call = {**defaults, **dict(zip(names, args)), **kwargs}
                if _takes_fused_kernel(call):
                    q, mask = call["query"], call["attn_mask"]
                    if mask is not None and mask.dtype == torch.bool:
                        # as torch's dispatch does first: an additive mask of the query's dtype, made whole
                        # (the fused kernel's backward keeps it, not the boolean view a model expanded)
                        zero, masked = (torch.scalar_tensor(v, dtype=q.dtype, device=q.device) for v in (0.0, -math.inf))
                        mask = torch.where(mask, zero, masked)
                    return fused(q, call["key"], call["value"], call["dropout_p"], call["is_causal"], attn_mask=mask,
                                 scale=call["scale"])[0]
            if constructors is None:
                return super().__torch_function__(func, types, args, kwargs)
            # DeviceContext's own, inlined (one Python call less on every torch function the forward calls):
            # a tensor made without a device is made on this mode's
            if func in constructors and kwargs.get("device") is None:
                kwargs["device"] = self.device
            return func(*args, **kwargs)

    return FusedAttention


def _takes_fused_kernel(call: dict) -> bool:
    """Whether torch's CPU dispatch (``use_flash_attention_cpp``) would run this call fused."""
    q, k, v = call["query"], call["key"], call["value"]
    if any(getattr(t, "dim", lambda: 0)() != 4 for t in (q, k, v)) or call["dropout_p"] != 0.0:
        return False
    if not (q.dtype.is_floating_point and q.dtype == k.dtype == v.dtype):
        return False
    if not (q.shape[-1] == k.shape[-1] == v.shape[-1]) or q.shape[0] != k.shape[0] or k.shape[:2] != v.shape[:2]:
        return False
    if any(t.stride(-1) != 1 for t in (q, k, v)):  # a transposed query, key or value takes the math path
        return False
    if q.shape[1] != k.shape[1] and not (call["enable_gqa"] and q.shape[1] % k.shape[1] == 0):
        return False
    mask = call["attn_mask"]
    # a mask that trains (T5's position bias) needs the math path: the fused kernel gives it no gradient
    return mask is None or not (call["is_causal"] or mask.requires_grad)
