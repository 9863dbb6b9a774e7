"""The device a training process would use, and the precision it trains in.

Owns finding the device without importing torch (nvidia-smi, /proc, a cgroup
memory limit), its name and a one-line summary; the precision choice (auto:
bf16 on GPUs that support it, fp16 on older ones, and on a CPU whichever of
fp32 and bf16 autocast measured faster here, remembered in $SFT_SPACE_HOME);
the Trainer flags for that choice and the dtype the weights are loaded in.
torch is imported inside functions only. It knows nothing about models, memory
estimates, downloads or loading.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from .. import home
from ..host.hardware import cuda_cards


@dataclass
class Device:
    kind: str  # cuda | mps | cpu
    name: str
    memory: int  # bytes a training process can use
    bf16: bool  # hardware bf16 (Ampere+ GPUs; CPUs with AMX or AVX-512 BF16)

    def describe(self) -> str:
        return f"{self.name} ({self.memory / 2**30:.1f} GiB {'free' if self.kind == 'cpu' else 'memory'})"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _available_ram() -> int:
    """MemAvailable, capped by a cgroup memory limit when the process runs in a container."""
    available = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def detect_device() -> Device:
    """Where a training process would run, found without importing torch (nvidia-smi, /proc)."""
    cards = cuda_cards()  # the training process uses the first card
    if cards:
        return Device("cuda", cards[0].name, int(cards[0].memory_gib * 2**30), cards[0].bf16)
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return Device("mps", "Apple GPU (MPS)", int(_available_ram() * 0.75), False)
    flags = _cpu_flags()
    return Device("cpu", f"CPU {os.cpu_count()} vCPU", _available_ram(), bool({"amx_bf16", "avx512_bf16"} & flags))


@functools.lru_cache(maxsize=1)
def device_name() -> str:
    """The device's name (the GPU model, or the CPU with its core count), once per process: a pace measured on
    one device predicts only that device."""
    return detect_device().name


# ------------------------------------------------------------ precision
CPU_PRECISION_FILE = "cpu_precision.json"
BF16_MIN_SPEEDUP = 1.15  # bf16 on a CPU must win clearly: it rounds more, so a tie goes to fp32


def measure_cpu_bf16_speedup() -> float:
    """fp32 time / bf16-autocast time of a small MLP's forward and backward on this CPU (about a second)."""
    import time

    import torch

    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Linear(576, 1536), torch.nn.SiLU(), torch.nn.Linear(1536, 576))
    x = torch.randn(1024, 576)

    def timed(bf16: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            layers(x).float().pow(2).mean().backward()
        return time.perf_counter() - started

    timed(False), timed(True)  # warm up both paths
    best = {False: float("inf"), True: float("inf")}
    for _ in range(5):  # alternating, best of each: a burst of other work hits both sides, not one
        for bf16 in (False, True):
            best[bf16] = min(best[bf16], timed(bf16))
    return best[False] / best[True]


BUSY_LOAD_PER_CORE = 0.75  # a 1-minute load average above this share of the cores: another process is working


def cpu_busy() -> bool:
    try:
        return os.getloadavg()[0] > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1)
    except OSError:
        return False


def _measured_on_this_cpu(file: str, version: str, measure) -> dict:
    """A measurement of this CPU (a dict), taken once per CPU and torch build on a quiet machine, then cached in
    $SFT_SPACE_HOME/<file>. One taken while another process kept the CPU busy decides this process only: the next
    one measures again (a cache written under load once held fp32 on a CPU whose bf16 matmuls are 2.3x faster)."""
    import torch

    device = detect_device()
    key = f"{version}|{platform.processor() or platform.machine()}|{os.cpu_count()}|{torch.__version__}|{device.bf16}"
    cache = home() / file
    try:
        stored = json.loads(cache.read_text())
        if stored.get("key") == key and stored.get("quiet"):
            return stored
    except (OSError, ValueError, AttributeError):
        pass
    busy = cpu_busy()
    result = measure()
    quiet = not busy and not cpu_busy()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, **result, "quiet": quiet}))
    except OSError:
        pass
    return result


def cpu_prefers_bf16() -> bool:
    """Whether bf16 autocast trains faster than fp32 on this CPU (measured on a quiet machine, then cached)."""

    def measure() -> dict:
        speedup = measure_cpu_bf16_speedup()
        return {"bf16": speedup >= BF16_MIN_SPEEDUP, "speedup": round(speedup, 2)}

    return bool(_measured_on_this_cpu(CPU_PRECISION_FILE, "v2", measure).get("bf16"))


# ------------------------------------------------------------ generation (chat, evaluation)
CPU_GENERATION_FILE = "cpu_generation.json"
GENERATION_DTYPES = ("float32", "float16", "bfloat16")
# matrix shapes of one decoding step of a ~135M model (attention, MLP, the output layer), one token at a time
DECODE_SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)]


def measure_cpu_decode_seconds(rows: int = 1) -> dict[str, float]:
    """Seconds per pass of `rows` tokens through DECODE_SHAPES in each dtype on this CPU (best of alternating
    rounds). Replies are generated one token at a time (rows=1), reading every weight once per token: the dtype that
    reads fastest wins there, and it is not always the one that multiplies many rows fastest (a prompt, a held-out
    row): here fp16 reads 2.5x faster than bf16 one row at a time, and bf16 is 9x faster than fp16 at 64 rows."""
    import time

    import torch

    torch.manual_seed(0)
    weights = {d: [torch.randn(o, i).to(getattr(torch, d)) for o, i in DECODE_SHAPES] for d in GENERATION_DTYPES}
    inputs = {d: [torch.randn(rows, i).to(getattr(torch, d)) for _, i in DECODE_SHAPES] for d in GENERATION_DTYPES}

    def timed(dtype: str) -> float:
        started = time.perf_counter()
        for _ in range(3):
            for w, x in zip(weights[dtype], inputs[dtype]):
                torch.nn.functional.linear(x, w)
        return (time.perf_counter() - started) / 3

    best = {d: float("inf") for d in GENERATION_DTYPES}
    with torch.inference_mode():
        for d in GENERATION_DTYPES:
            timed(d)  # warm up
        for _ in range(4):
            for d in GENERATION_DTYPES:
                best[d] = min(best[d], timed(d))
    return best


def _fastest(seconds: dict[str, float]) -> str:
    fastest = min(seconds, key=seconds.get)
    return fastest if seconds["float32"] / seconds[fastest] >= BF16_MIN_SPEEDUP else "float32"


def generation_dtypes() -> tuple[str, str]:
    """(weights, many rows): the dtype chat and evaluation load weights in, and the one a pass over many tokens at
    once (a prompt, a held-out row) multiplies in. bf16 on GPUs that have it (fp16 on older ones) for both; on a
    CPU each measured here (a half dtype must win by BF16_MIN_SPEEDUP over fp32), on a quiet machine, cached."""
    import torch

    if torch.cuda.is_available():
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return dtype, dtype
    if torch.backends.mps.is_available():
        return "float32", "float32"

    def measure() -> dict:
        one, many = measure_cpu_decode_seconds(1), measure_cpu_decode_seconds(64)
        return {
            "dtype": _fastest(one),
            "rows_dtype": _fastest(many),
            "seconds_one_row": {d: round(s, 5) for d, s in one.items()},
            "seconds_64_rows": {d: round(s, 5) for d, s in many.items()},
        }

    measured = _measured_on_this_cpu(CPU_GENERATION_FILE, "v2", measure)
    dtype, rows = measured.get("dtype"), measured.get("rows_dtype")
    return (dtype if dtype in GENERATION_DTYPES else "float32", rows if rows in GENERATION_DTYPES else "float32")


def choose_precision(requested: str = "auto") -> dict[str, bool]:
    """Trainer flags for `requested` (auto|fp32|bf16|fp16) on this machine; ValueError if it cannot work here.

    auto: bf16 on GPUs that support it, fp16 on older ones (T4), and on a CPU the faster of fp32 and bf16.
    """
    import torch

    cuda = torch.cuda.is_available()
    if requested == "fp32":
        return {"bf16": False, "fp16": False}
    if requested == "fp16" and not cuda:
        raise ValueError(
            "precision fp16 needs a CUDA GPU (fp16 training on a CPU is not supported): use auto, bf16 or fp32."
        )
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError("This GPU does not support bf16 (it is older than Ampere): use auto or fp16.")
    if requested in ("bf16", "fp16"):
        return {"bf16": requested == "bf16", "fp16": requested == "fp16"}
    if cuda:
        return {"bf16": True, "fp16": False} if torch.cuda.is_bf16_supported() else {"bf16": False, "fp16": True}
    if torch.backends.mps.is_available():
        return {"bf16": False, "fp16": False}  # MPS autocast support varies by macOS release: fp32 always works
    return {"bf16": cpu_prefers_bf16(), "fp16": False}


def trainer_precision_args(precision: dict[str, bool]) -> dict[str, bool]:
    """The Trainer flags for a precision choice; bf16 on a CPU needs use_cpu (autocast on the CPU)."""
    import torch

    on_cpu = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    return {**precision, **({"use_cpu": True} if on_cpu and precision.get("bf16") else {})}


def precision_name(precision: dict[str, bool]) -> str:
    return "bf16" if precision.get("bf16") else "fp16" if precision.get("fp16") else "fp32"


EAGER_MAX_LENGTH = 256  # on a CPU, plain attention is faster up to here (1.7x at 128 tokens, even at 256-384)


def training_attention(device_kind: str, max_length: int) -> str | None:
    """The attention to train with, when not the model's default (SDPA). On a CPU, SDPA's flash kernel is slow for
    short sequences: the Quick demo (rows of ~110 tokens) trained at 347 instead of 258 tokens/s with plain
    ("eager") attention at batch 4. Beyond EAGER_MAX_LENGTH SDPA wins (2.5x at 1024 tokens) and plain attention's
    length x length scores cost memory (counted by estimate_memory on devices without flash attention)."""
    return "eager" if device_kind == "cpu" and max_length <= EAGER_MAX_LENGTH else None


def training_dtype(precision: dict[str, bool], device_kind: str) -> str:
    """bf16 weights when training in bf16, on a GPU and on a CPU: the frozen base weights are multiplied in bf16
    under autocast anyway; stored in bf16 they take half the memory and the probe replies during training read
    half the bytes per token (on the 2-core CPU: 2.0 vs 2.5 GB peak, probes about 2x faster, training tokens/s
    and validation loss the same within noise). The LoRA weights stay fp32 (PEFT's autocast_adapter_dtype)."""
    if precision.get("bf16") and device_kind in ("cuda", "cpu"):
        return "bfloat16"
    return "float32"  # fp16 training keeps fp32 weights: the gradient scaler refuses fp16 trainable rows
