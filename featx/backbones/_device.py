"""Choosing the compute device and running a network on batches with the right precision."""
from __future__ import annotations

import contextlib
from concurrent.futures import Future

import numpy as np
import torch

from featx.errors import ParameterError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu', 'cuda', 'cuda:N' as given (checked)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ParameterError(f"invalid device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device {device!r} asked for, but no CUDA GPU is available; use --device cpu")
    return resolved


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16); full precision on the CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


class BatchRunner:
    """Runs a FeatureNetwork on uint8 batches: channels_last, inference_mode, non-blocking copies.

    `compile`: run it through `torch.compile` (compiles on the first batches: worth it for long runs).
    """

    def __init__(self, network: torch.nn.Module, device: torch.device, compile: bool = False) -> None:
        self.device = device
        self.network = network.to(device).to(memory_format=torch.channels_last).eval()
        if compile:
            self.network = torch.compile(self.network)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), autocast(self.device):
            batch = images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            return self.network(batch).float().cpu().numpy()

    def submit(self, images: torch.Tensor) -> Future:
        """The features of a batch as a finished future (PyTorch runs its own threads or CUDA streams)."""
        future: Future = Future()
        future.set_result(self(images))
        return future
