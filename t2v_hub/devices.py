"""Which torch device to run on, checked before any data is read.

``torch.device("cuda")`` is accepted on a machine without a GPU and fails only at the first
``.to()``, deep inside a run and with the driver's message; :func:`pick_device` refuses it up
front with the fix (``device='cpu'`` or ``'auto'``). ``None`` and ``"auto"`` mean CUDA when
present, else the CPU.
"""

from __future__ import annotations

import torch

from .errors import DeviceError

__all__ = ["pick_device"]


def pick_device(device: str | torch.device | None, *, param: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` that exists here; ``param`` names the argument in errors."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"{param}={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:N', 'mps' or "
                          "'auto'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{param}={device!r}: this machine has no usable CUDA device "
                              f"(torch.cuda.is_available() is False); use {param}='cpu' or {param}='auto'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"{param}={device!r}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1}); "
                              f"pick one of those or {param}='auto'")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"{param}={device!r}: MPS is not available on this machine; use {param}='cpu' or "
                              f"{param}='auto'")
    return dev
