"""Device and dtype choice, shared by every backend."""

from __future__ import annotations

import torch

from unsample.errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_device(device: str) -> torch.device:
    """"auto" picks cuda, then mps, then cpu; a named device ("cuda:1" names one GPU) must be available."""
    if device.startswith("cuda:") and device[5:].isdigit():
        count = torch.cuda.device_count()
        if int(device[5:]) >= count:
            raise InputError(f"device {device!r} was asked for but this machine has {count} CUDA GPU(s); use --device auto")
        return torch.device(device)
    if device not in DEVICES:
        raise InputError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' was asked for but MPS is not available; use --device cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None picks float16 on a GPU and float32 on the CPU (CPU half precision is slow and lossy)."""
    if dtype is None:
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InputError(f"model dtype {dtype} is not supported; use one of {', '.join(DTYPES)}")
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


OFFLOADS = ("none", "model", "sequential")
OFFLOAD_DEVICE_TYPES = ("cuda", "mps", "xpu")
"""Devices whose memory CPU offload saves (on the CPU the weights are in main memory already)."""


def check_offload(offload: str, device: torch.device) -> str:
    """``offload`` when it is one of `OFFLOADS` and, unless "none", ``device`` is an accelerator;
    a one-line `InputError` otherwise."""
    if offload not in OFFLOADS:
        raise InputError(f"offload {offload!r} is not one of {', '.join(OFFLOADS)}")
    if offload != "none" and device.type not in OFFLOAD_DEVICE_TYPES:
        raise InputError(f"offload {offload!r} keeps the weights in main memory and moves them to an accelerator when "
                         f"used; it needs --device cuda (or mps), not {device.type}")
    return offload
