"""This machine's own limits, measured in the same run as the figures they judge (bench/speed.py imports it).

- Matrix products: GFLOP/s of torch's matmul in fp32, bf16 and fp16 at the bundled model's own shapes (a batch of
  tokens through its attention and MLP projections, and the output head) and at 2048x2048, best of several rounds;
  the peak of a precision is its best shape.
- Memory: the bandwidth of reading a buffer far larger than the caches (a sum over 512 MB), and of copying it
  (bytes read plus written), both on every core.
- The CPU: its model name and the flags that decide which kernels run (amx, avx512_bf16, avx512_fp16, avx512f,
  avx2).

Then two fractions: training tokens/s x the matrix-product FLOPs of one trained token / the peak of the precision it
trains in, and chat tokens/s / the bandwidth bound (read bandwidth / bytes of weights read per generated token).

    python bench/roofline.py            # prints the limits as JSON
"""

from __future__ import annotations

import json
import time
from pathlib import Path

FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512_fp16", "avx512f", "avx512_vnni", "avx2", "fma")


def cpu() -> dict:
    """The CPU's model name and the flags that matter for the kernels torch picks."""
    name, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": name, "flags": [f for f in FLAGS if f in flags], "amx": "amx_bf16" in flags}


def model_shapes(config: dict, tokens: int = 512) -> dict[str, tuple[int, int, int]]:
    """(m, k, n) of the bundled model's matrix products for `tokens` tokens at once: the projections and the head."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config.get("num_key_value_heads", config["num_attention_heads"]) * (h // config["num_attention_heads"])
    return {
        "q/o projection": (tokens, h, h),
        "k/v projection": (tokens, h, kv),
        "MLP up/gate": (tokens, h, i),
        "MLP down": (tokens, i, h),
        "head": (tokens, h, v),
        "square 2048": (2048, 2048, 2048),
    }


def matmul_gflops(shapes: dict[str, tuple[int, int, int]], dtypes=("float32", "bfloat16", "float16")) -> dict:
    """GFLOP/s of a @ b at each shape and dtype: best of alternating rounds (a burst of other work hits each alike).
    A dtype slower than a tenth of fp32 at the first shape (fp16 on a CPU without avx512_fp16 or AMX: no kernel, a
    scalar loop) is measured at that shape only: its big shapes would take minutes and it is nobody's peak."""
    import torch

    torch.manual_seed(0)
    found: dict[str, dict[str, float]] = {d: {} for d in dtypes}
    first = next(iter(shapes))
    for name, (m, k, n) in shapes.items():
        if name != first:
            dtypes = [d for d in dtypes if found[d][first] >= found["float32"][first] / 10]
        pairs = {d: (torch.randn(m, k).to(getattr(torch, d)), torch.randn(k, n).to(getattr(torch, d))) for d in dtypes}
        flops = 2.0 * m * k * n
        best = {d: float("inf") for d in dtypes}
        for d in dtypes:
            a, b = pairs[d]
            a @ b  # warm up (oneDNN builds its kernel)
        for _ in range(4):
            for d in dtypes:
                a, b = pairs[d]
                repeats = max(1, int(2e9 / flops))
                started = time.perf_counter()
                for _ in range(repeats):
                    a @ b
                best[d] = min(best[d], (time.perf_counter() - started) / repeats)
        for d in dtypes:
            found[d][name] = round(flops / best[d] / 1e9, 1)
    return found


def memory_bandwidth(megabytes: int = 512) -> dict:
    """GB/s of reading a large fp32 buffer (a sum) and of copying it (read + written), best of 5."""
    import torch

    count = megabytes * 2**20 // 4
    source, target = torch.ones(count), torch.empty(count)
    size = count * 4
    read = copy = float("inf")
    source.sum(), target.copy_(source)  # touch every page first
    for _ in range(5):
        started = time.perf_counter()
        source.sum()
        read = min(read, time.perf_counter() - started)
        started = time.perf_counter()
        target.copy_(source)
        copy = min(copy, time.perf_counter() - started)
    return {"read_gb_s": round(size / read / 1e9, 2), "copy_gb_s": round(2 * size / copy / 1e9, 2)}


def linear_parameters(config: dict) -> int:
    """Weights of the linear layers of all blocks (what every token multiplies through)."""
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = config.get("num_key_value_heads", config["num_attention_heads"]) * (h // config["num_attention_heads"])
    return layers * (2 * h * h + 2 * h * kv + 3 * h * i)


def training_flops(config: dict, tokens: int, labelled: int, checkpointing: bool = False) -> float:
    """Matrix-product FLOPs of a LoRA step's useful work: each token through every linear layer forward (2 per
    weight) and its input gradient backward (2 more; the frozen weights need no weight gradient), once more forward
    with gradient checkpointing, and the head (hidden x vocab) forward and backward on the labelled positions only.
    The LoRA matrices (r x width) and the attention scores add a few per cent and are not counted."""
    body = linear_parameters(config) * (4 + (2 if checkpointing else 0))
    head = 4 * config["hidden_size"] * config["vocab_size"]
    return float(tokens * body + labelled * head)


def decode_bytes(config: dict, bytes_per_weight: int) -> int:
    """Bytes of weights read to generate one token: every linear layer, the norms, and the whole head (tied or not:
    every vocabulary row is scored); the embedding lookup reads one row."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    weights = linear_parameters(config) + config["vocab_size"] * h + (2 * layers + 1) * h
    return weights * bytes_per_weight


def limits(config: dict) -> dict:
    """Everything above for one model config, measured now."""
    import torch

    gflops = matmul_gflops(model_shapes(config))
    return {
        "cpu": cpu(),
        "threads": torch.get_num_threads(),
        "matmul_gflops": gflops,
        "peak_gflops": {d: max(v.values()) for d, v in gflops.items()},
        "model_shape_peak_gflops": {d: max(x for k, x in v.items() if k != "square 2048") for d, v in gflops.items()},
        "memory": memory_bandwidth(),
    }


def bundled_config() -> dict:
    """The bundled SmolLM2-135M-Instruct's config (converted once; bench/speed.py converts it first)."""
    from sft_space.models.bundled import ensure_bundled_model

    return json.loads((Path(ensure_bundled_model()) / "config.json").read_text())


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print(json.dumps(limits(bundled_config()), indent=2))
