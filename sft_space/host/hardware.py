"""What this machine is, told truthfully on the page: CPU cores and memory, each CUDA card (name, memory, bf16),
Apple MPS, ZeroGPU (a Space whose GPU comes in short slots: runs train slot by slot, training/slots.py), and
whether the disk survives a restart (a Space's persistent storage at /data, or none). Found without importing torch.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .. import home
from ..hub import on_a_space


@dataclass
class Gpu:
    name: str
    memory_gib: float
    bf16: bool


@dataclass
class Hardware:
    cpu_cores: int
    memory_gib: float
    gpus: list[Gpu] = field(default_factory=list)
    mps: bool = False
    zerogpu: bool = False

    @property
    def kind(self) -> str:
        return "zerogpu" if self.zerogpu else "cuda" if self.gpus else "mps" if self.mps else "cpu"

    def describe(self) -> str:
        """One line for the header, e.g. 'NVIDIA A10G 24 GB (bf16) · 8 vCPU · 30 GB RAM'."""
        cpu = f"{self.cpu_cores} vCPU · {self.memory_gib:.0f} GB RAM"
        if self.zerogpu:
            return f"ZeroGPU (a GPU lent in slots: runs train slot by slot on your GPU quota) · {cpu}"
        if self.gpus:
            names: dict[str, int] = {}
            for gpu in self.gpus:
                label = f"{gpu.name} {gpu.memory_gib:.0f} GB{' (bf16)' if gpu.bf16 else ''}"
                names[label] = names.get(label, 0) + 1
            cards = " + ".join(f"{count} x {label}" if count > 1 else label for label, count in names.items())
            return f"{cards} · {cpu}"
        if self.mps:
            return f"Apple GPU (MPS) · {cpu}"
        return f"CPU only · {cpu}"


def cpu_cores() -> int:
    """The cores this process may use: the affinity mask, capped by a cgroup CPU quota (a Space's vCPUs)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, round(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def memory_gib() -> float:
    """Total memory this process may use: physical memory, capped by a cgroup limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            total = min(total, int(limit))
    except (OSError, ValueError):
        pass
    return total / 2**30


def cuda_cards() -> list[Gpu]:
    if not shutil.which("nvidia-smi") or os.environ.get("CUDA_VISIBLE_DEVICES", "0") == "":
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    cards = []
    for line in out.strip().splitlines():
        try:
            name, memory, capability = [part.strip() for part in line.split(",")]
            cards.append(Gpu(name, float(memory) / 1024, float(capability) >= 8.0))
        except ValueError:
            continue
    return cards


def on_zerogpu() -> bool:
    """A ZeroGPU Space: the `spaces` package's own switch (SPACES_ZERO_GPU=true)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def gpu_slot(function, duration=None):
    """On ZeroGPU with the `spaces` package: the handler gets a GPU slot for each call (spaces.GPU, `duration` in
    seconds or a function of the call's arguments; the package's default otherwise), which is how chat,
    evaluation and training (training/slots.py) use the card there; elsewhere the handler as it is."""
    if not on_zerogpu():
        return function
    try:
        import spaces
    except ImportError:
        return function
    return spaces.GPU(function, duration=duration) if duration is not None else spaces.GPU(function)


@functools.lru_cache(maxsize=1)
def device_kind() -> str:
    """cpu, cuda, mps or zerogpu: read once per process (it decides presets and the limits' defaults)."""
    return detect().kind


def detect() -> Hardware:
    return Hardware(
        cpu_cores=cpu_cores(),
        memory_gib=memory_gib(),
        gpus=[] if on_zerogpu() else cuda_cards(),
        mps=platform.system() == "Darwin" and platform.machine() == "arm64",
        zerogpu=on_zerogpu(),
    )


# --------------------------------------------------------------- storage
def persistent_storage() -> bool:
    """Runs live on a Space's persistent storage (/data), which survives restarts."""
    return home().resolve().is_relative_to(Path("/data")) and os.path.isdir("/data")


def storage_note() -> str | None:
    """What survives a restart, said where it matters (on a Space); None elsewhere."""
    if not on_a_space():
        return None
    if persistent_storage():
        return "Runs are kept on this Space's persistent storage (/data): they survive a restart."
    return (
        "This Space has no persistent storage: runs on this Space are lost on restart unless they are backed up "
        "to the Hub (sign in)."
    )


ZEROGPU_NOTE = (
    "This Space runs on ZeroGPU: a GPU is lent for one call at a time, on each visitor's own daily GPU quota. A run "
    "trains in GPU slots of up to a few minutes, one after another while this page is open, continuing from its "
    "last checkpoint each time; if the quota runs out the run pauses and Resume continues it. Sign in for a larger "
    "quota."
)
