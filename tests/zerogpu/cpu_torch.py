"""What the real `spaces` package needs of torch that a CPU-only build lacks: imported before `spaces`, on this
CPU machine only (a CUDA build has all of it). Each attribute is set only where it is missing or unusable; nothing
else of the package is changed.

- torch.version.cuda: None on a CPU build; spaces/zero/torch/static.py calls .startswith on it at import.
- torch._C._cuda_init: missing on a CPU build; spaces/zero/torch/patching.py saves it at import (to restore it in
  the worker) and replaces it with a function that raises.
- torch.cuda._is_in_bad_fork: a lambda on a CPU build; spaces/zero/__init__.py sends it to a forked
  ProcessPoolExecutor, which pickles it: a module-level function instead (answering as the lambda does, False).
- torch.cuda.synchronize and Tensor.cuda: a worker's start (spaces/zero/torch/patching.py init and move) calls
  `torch.Tensor([0]).cuda()` and torch.cuda.synchronize() after restoring torch's own functions; on a CPU build both
  raise "Torch not compiled with CUDA enabled". Here they are a no-op and the tensor itself. Inside a slot our code
  asks torch.cuda.is_available() (False after the worker restores torch) and trains on the CPU.
"""

from __future__ import annotations

import torch


def _not_in_bad_fork() -> bool:
    return False


def _no_cuda_init() -> None:
    raise RuntimeError("Torch not compiled with CUDA enabled")


def _no_sync(*args, **kwargs) -> None:
    return None


def _stays_on_cpu(self, *args, **kwargs):
    return self


if torch.version.cuda is None:
    torch.version.cuda = "12.8"
    if not hasattr(torch._C, "_cuda_init"):
        torch._C._cuda_init = _no_cuda_init
    torch.cuda._is_in_bad_fork = _not_in_bad_fork
    torch.cuda.synchronize = _no_sync
    torch.Tensor.cuda = _stays_on_cpu
