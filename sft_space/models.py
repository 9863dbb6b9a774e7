"""Models: turn a user's model choice into a local folder, and load it set up right.

Owns the curated model list; the metadata-only checks made before any download
(exists, gated, safetensors weights, no custom code, parameter count, module
names); the training-memory estimate against the device's memory; resolving
'bundled', a local folder or a Hub id to a local folder (downloading with
progress); the chat-template and pad-token setup (ChatML for base models); and
the device/precision choice. Heavy imports (torch, transformers) happen inside
functions so the UI starts fast. It knows nothing about datasets, training loops
or Gradio.
"""

from __future__ import annotations

import json
import functools
import os
import platform
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import HUB_TIMEOUT_SECONDS, home, hub_endpoint, hub_offline, network_error
from .bundled import BUNDLED_HUB_ID, BUNDLED_MAX_LENGTH, BUNDLED_NAME, Progress, _no_progress, ensure_bundled_model
from .config import BUNDLED_MODEL

# (choice, label, parameters): the curated list offered first; any Hub id or local folder works too.
CURATED_MODELS = [
    (BUNDLED_MODEL, BUNDLED_NAME, 134_515_008),
    ("HuggingFaceTB/SmolLM2-135M", "SmolLM2-135M (base model: gets a ChatML template)", 134_515_008),
    ("HuggingFaceTB/SmolLM2-360M", "SmolLM2-360M (base model: gets a ChatML template)", 361_821_120),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2-360M-Instruct", 361_821_120),
    ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "SmolLM2-1.7B-Instruct", 1_711_376_384),
    ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct", 494_032_768),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "DeepSeek-R1-Distill-Qwen-1.5B", 1_777_088_000),
]
HUB_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Only what loading needs: weights as safetensors, configs, tokenizer files, templates. Never pickles.
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.tiktoken", "merges.txt",
                     "vocab.txt", "README.md"]
TOKENIZER_PATTERNS = [p for p in DOWNLOAD_PATTERNS if p not in ("*.safetensors", "README.md")]
IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|pad|>"
# ChatML, as TRL's setup_chat_format writes it, with generation markers so assistant-only masks work too.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "I32": 4,
               "I64": 8, "BOOL": 1}


def model_label(choice: str) -> str:
    return BUNDLED_NAME if choice == BUNDLED_MODEL else choice


def is_hub_model_id(choice: str) -> bool:
    choice = choice.strip()
    return bool(HUB_MODEL_ID.match(choice)) and not Path(choice).expanduser().exists()


def model_cache_dir() -> Path:
    return home() / "hub"


# ------------------------------------------------------------ facts about a model, before loading it
@dataclass
class ModelFacts:
    """What can be known about a model from its metadata alone (config.json and safetensors headers)."""

    choice: str
    source: str  # bundled | local | hub
    config: dict
    tensors: dict[str, tuple[str, list[int]]]  # name -> (safetensors dtype, shape)
    has_chat_template: bool
    gated: bool = False
    license: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> dict:
        return self.config.get("text_config", self.config)

    @property
    def parameters(self) -> int:
        total = 0
        for _, shape in self.tensors.values():
            count = 1
            for size in shape:
                count *= size
            total += count
        return total

    @property
    def weight_dtype(self) -> str:
        counts: dict[str, int] = {}
        for dtype, _ in self.tensors.values():
            counts[dtype] = counts.get(dtype, 0) + 1
        return max(counts, key=counts.get) if counts else "F32"

    @property
    def max_length(self) -> int | None:
        return self.text.get("max_position_embeddings") or self.text.get("n_positions")

    @property
    def tied_embeddings(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", self.text.get("tie_word_embeddings", True)))

    def linear_modules(self) -> dict[str, tuple[int, int]]:
        """{short module name: (in, out)} of the 2-D weights a LoRA adapter can wrap (not embeddings or head)."""
        found: dict[str, tuple[int, int]] = {}
        for name, (_, shape) in self.tensors.items():
            if not name.endswith(".weight") or len(shape) != 2:
                continue
            short = name[: -len(".weight")].split(".")[-1]
            if short in ("embed_tokens", "lm_head", "wte", "wpe", "embed_in", "embed_out") or "embed" in short:
                continue
            found.setdefault(short, (shape[1], shape[0]))
        return found

    def attention_modules(self) -> list[str]:
        names = {name[: -len(".weight")].split(".")[-1] for name in self.tensors
                 if name.endswith(".weight") and re.search(r"(attn|attention)\.", name)}
        return sorted(names & set(self.linear_modules()))

    def lora_parameters(self, r: int, targets: list[str] | str) -> int:
        linear = self.linear_modules()
        names = set(linear) if targets == "all-linear" else set(targets)
        total = 0
        for name, (_, shape) in self.tensors.items():
            short = name[: -len(".weight")].split(".")[-1] if name.endswith(".weight") else None
            if short in names and short in linear and len(shape) == 2:
                total += r * (shape[0] + shape[1])
        return total

    def summary(self) -> str:
        text = self.text
        parts = [f"{self.parameters / 1e6:,.0f}M parameters" if self.parameters else "parameter count unknown",
                 f"{text.get('model_type', self.config.get('model_type', '?'))}",
                 f"{text.get('num_hidden_layers', '?')} layers, hidden size {text.get('hidden_size', '?')}"]
        if self.max_length:
            parts.append(f"context {self.max_length} tokens")
        parts.append("chat template: yes" if self.has_chat_template else
                     "no chat template: gets ChatML (<|im_start|>/<|im_end|> added and trained)")
        return ", ".join(parts)


def read_safetensors_header(path: Path) -> dict[str, tuple[str, list[int]]]:
    """Tensor names, dtypes and shapes from a safetensors file's JSON header (no weights read)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return {name: (info["dtype"], info["shape"]) for name, info in header.items() if name != "__metadata__"}


def local_facts(folder: Path, choice: str, source: str = "local") -> ModelFacts:
    check_model_folder(folder)
    tensors: dict[str, tuple[str, list[int]]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(read_safetensors_header(path))
    config = json.loads((folder / "config.json").read_text())
    template = (folder / "chat_template.jinja").is_file()
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        template = template or bool(json.loads(tokenizer_config.read_text()).get("chat_template"))
    return ModelFacts(choice, source, config, tensors, template)


def check_model_config(config: dict, where: str) -> None:
    """Refuse models that need custom code or are not causal language models, saying why."""
    if config.get("auto_map"):
        raise ValueError(f"{where} needs custom code (auto_map in config.json, loaded only with trust_remote_code), "
                         "which could run anything on this machine and is refused: pick a model that transformers "
                         "supports natively (Llama, Qwen2, Mistral, Gemma, Phi...).")
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForCausalLM") or a.endswith("ForConditionalGeneration") for a in architectures):
        raise ValueError(f"{where} is a {', '.join(architectures)}, not a causal language model (…ForCausalLM): "
                         "SFT needs a text-generation model.")


def check_model_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: it is not a transformers model folder.")
    if not any(folder.glob("*.safetensors")):
        pickles = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
        raise ValueError(
            f"{folder} has no .safetensors weights"
            + (" (only pickle .bin/.pt files, which can run code when loaded and are refused)" if pickles else "")
            + ": convert the weights with save_pretrained(safe_serialization=True)."
        )
    check_model_config(json.loads((folder / "config.json").read_text()), str(folder))


def hub_error(error: Exception, repo_id: str) -> ValueError | None:
    """A readable ValueError for the Hub failures a user can meet, or None for unexpected ones."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(error, GatedRepoError):
        return ValueError(f"{repo_id} is gated: accept its conditions at {hub_endpoint()}/{repo_id}, then sign in "
                          "with that account (or set HF_TOKEN).")
    if isinstance(error, RepositoryNotFoundError):
        return ValueError(f"Model {repo_id} was not found, or it is private or gated and you are not signed in: "
                          "check the id (owner/name), or sign in with an account that can read it.")
    if isinstance(error, HfHubHTTPError):
        return ValueError(f"The Hub refused {repo_id} ({error.response.status_code if error.response is not None else '?'}): "
                          f"{str(error).splitlines()[0]}")
    if network_error(error):
        return ValueError(f"The Hugging Face Hub at {hub_endpoint()} cannot be reached ({type(error).__name__}): "
                          "check the network, or use the bundled model or a local folder.")
    return None


def hub_facts(repo_id: str, token: str | None = None) -> ModelFacts:
    """Everything the checks need from the Hub's metadata: repo info, config.json and safetensors headers."""
    from huggingface_hub import HfApi, get_token, hf_hub_download

    if hub_offline():
        raise ValueError(f"The Hugging Face Hub is switched off here (HF_HUB_OFFLINE=1), so {repo_id} cannot be "
                         "checked or downloaded: use the bundled model or a local folder.")
    api = HfApi(endpoint=hub_endpoint(), token=token)
    try:
        info = api.model_info(repo_id, timeout=HUB_TIMEOUT_SECONDS)
        files = [s.rfilename for s in info.siblings or []]
        if not any(name.endswith(".safetensors") for name in files):
            pickles = [n for n in files if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
            raise ValueError(
                f"{repo_id} ships no .safetensors weights"
                + (f" (only pickle files such as {pickles[0]}, which can run code when loaded and are refused)" if pickles else "")
                + ": pick a model that ships safetensors (most recent ones do).")
        config = json.loads(Path(hf_hub_download(repo_id, "config.json", endpoint=hub_endpoint(), token=token,
                                                 cache_dir=str(model_cache_dir()), etag_timeout=HUB_TIMEOUT_SECONDS))
                            .read_text())
        check_model_config(config, repo_id)
        template = "chat_template.jinja" in files
        if not template and "tokenizer_config.json" in files:
            path = hf_hub_download(repo_id, "tokenizer_config.json", endpoint=hub_endpoint(), token=token,
                                   cache_dir=str(model_cache_dir()))
            template = bool(json.loads(Path(path).read_text()).get("chat_template"))
        metadata = api.get_safetensors_metadata(repo_id, token=token)
    except ValueError:
        raise
    except Exception as error:
        readable = hub_error(error, repo_id)
        if readable is None:
            raise
        raise readable from None
    tensors = {name: (t.dtype, list(t.shape)) for meta in metadata.files_metadata.values()
               for name, t in meta.tensors.items()}
    card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
    facts = ModelFacts(repo_id, "hub", config, tensors, template, gated=bool(info.gated),
                       license=card.get("license"))
    if info.gated and not (token or get_token()):
        facts.notes.append(f"{repo_id} is gated: accept its conditions at {hub_endpoint()}/{repo_id} and sign in "
                           "before training.")
    return facts


def model_facts(choice: str, token: str | None = None) -> ModelFacts:
    """Facts for any choice: the bundled model (from its converted copy or known numbers), a folder, a Hub id."""
    choice = choice.strip()
    if choice == BUNDLED_MODEL:
        from .bundled import bundled_model_dir, is_converted

        if is_converted():
            facts = local_facts(bundled_model_dir(), choice, "bundled")
        else:  # not converted yet: SmolLM2-135M's real config, so the fit check needs no conversion
            facts = ModelFacts(choice, "bundled", dict(SMOLLM2_135M_CONFIG), llama_tensors(SMOLLM2_135M_CONFIG), True)
        facts.license = "apache-2.0"
        return facts
    folder = Path(choice).expanduser()
    if folder.is_dir():
        return local_facts(folder, choice)
    if is_hub_model_id(choice):
        cached = cached_snapshot(choice) if hub_offline() else None
        return local_facts(cached, choice, "hub") if cached else hub_facts(choice, token)
    raise ValueError(f"Model {choice!r} is neither a local folder nor a Hub id (owner/name): use 'bundled', the "
                     "path of a folder with config.json and *.safetensors, or a Hub id such as "
                     "HuggingFaceTB/SmolLM2-360M-Instruct.")


SMOLLM2_135M_CONFIG = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                       "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                       "max_position_embeddings": BUNDLED_MAX_LENGTH, "tie_word_embeddings": True,
                       "architectures": ["LlamaForCausalLM"]}


def llama_tensors(config: dict) -> dict[str, tuple[str, list[int]]]:
    """The weight names and shapes of a Llama-style model with this config (for facts before conversion)."""
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    tensors = {"model.embed_tokens.weight": ("BF16", [config["vocab_size"], h]), "model.norm.weight": ("BF16", [h])}
    for n in range(layers):
        p = f"model.layers.{n}"
        for name, shape in (("self_attn.q_proj", [h, h]), ("self_attn.k_proj", [kv, h]), ("self_attn.v_proj", [kv, h]),
                            ("self_attn.o_proj", [h, h]), ("mlp.gate_proj", [i, h]), ("mlp.up_proj", [i, h]),
                            ("mlp.down_proj", [h, i]), ("input_layernorm", [h]), ("post_attention_layernorm", [h])):
            tensors[f"{p}.{name}.weight"] = ("BF16", shape)
    if not config.get("tie_word_embeddings", True):
        tensors["lm_head.weight"] = ("BF16", [config["vocab_size"], h])
    return tensors


def model_max_length(choice: str) -> int | None:
    """The model's context limit from its config.json, without loading torch; None if unknown yet."""
    choice = choice.strip()
    if choice == BUNDLED_MODEL:
        return BUNDLED_MAX_LENGTH
    config = Path(choice).expanduser() / "config.json"
    if not config.is_file() and is_hub_model_id(choice):
        config = _cached_hub_file(choice, "config.json")
    if config is None or not config.is_file():
        return None
    data = json.loads(config.read_text())
    data = data.get("text_config", data)
    return data.get("max_position_embeddings") or data.get("n_positions")


def _cached_hub_file(repo_id: str, name: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, name, cache_dir=str(model_cache_dir()))
    return Path(found) if isinstance(found, str) else None


# ------------------------------------------------------------ the device and its memory
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
    if shutil.which("nvidia-smi") and os.environ.get("CUDA_VISIBLE_DEVICES", "0") != "":
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=15).stdout.strip().splitlines()
            name, memory, capability = [part.strip() for part in out[0].split(",")]
            return Device("cuda", name, int(float(memory)) * 2**20, float(capability) >= 8.0)
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            pass
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return Device("mps", "Apple GPU (MPS)", int(_available_ram() * 0.75), False)
    flags = _cpu_flags()
    return Device("cpu", f"CPU {os.cpu_count()} vCPU", _available_ram(), bool({"amx_bf16", "avx512_bf16"} & flags))


@functools.lru_cache(maxsize=1)
def device_name() -> str:
    """The device's name (the GPU model, or the CPU with its core count), once per process: a pace measured on
    one device predicts only that device."""
    return detect_device().name


def hardware_summary() -> str:
    """A one-line description of where training would run, without importing torch."""
    device = detect_device()
    return "GPU (CUDA)" if device.kind == "cuda" else device.name


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
        best = float("inf")
        for _ in range(4):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                layers(x).float().pow(2).mean().backward()
            best = min(best, time.perf_counter() - started)
        return best

    timed(False), timed(True)  # warm up both paths
    return timed(False) / timed(True)


def cpu_prefers_bf16() -> bool:
    """Whether bf16 autocast trains faster than fp32 on this CPU: measured once per CPU and torch, then cached."""
    import torch

    device = detect_device()
    key = f"{platform.processor() or platform.machine()}|{os.cpu_count()}|{torch.__version__}|{device.bf16}"
    cache = home() / CPU_PRECISION_FILE
    try:
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return bool(stored["bf16"])
    except (OSError, ValueError, KeyError):
        pass
    speedup = measure_cpu_bf16_speedup()
    choice = speedup >= BF16_MIN_SPEEDUP
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "bf16": choice, "speedup": round(speedup, 2)}))
    except OSError:
        pass
    return choice


def choose_precision(requested: str = "auto") -> dict[str, bool]:
    """Trainer flags for `requested` (auto|fp32|bf16|fp16) on this machine; ValueError if it cannot work here.

    auto: bf16 on GPUs that support it, fp16 on older ones (T4), and on a CPU the faster of fp32 and bf16.
    """
    import torch

    cuda = torch.cuda.is_available()
    if requested == "fp32":
        return {"bf16": False, "fp16": False}
    if requested == "fp16" and not cuda:
        raise ValueError("precision fp16 needs a CUDA GPU (fp16 training on a CPU is not supported): use auto, bf16 or fp32.")
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


# ------------------------------------------------------------ training memory
FITS_BELOW = 0.8  # share of the device's memory an estimate may use and still be called "fits"
OVERHEAD_BYTES = {"cuda": 900 * 2**20, "mps": 1024 * 2**20, "cpu": 1200 * 2**20}  # runtime, libraries, allocator


@dataclass
class MemoryEstimate:
    weights: int
    adapter: int  # LoRA weights, gradients and AdamW state
    activations: int
    overhead: int
    available: int
    gradient_checkpointing: bool

    @property
    def total(self) -> int:
        return self.weights + self.adapter + self.activations + self.overhead

    @property
    def share(self) -> float:
        return self.total / max(self.available, 1)

    @property
    def verdict(self) -> str:
        return "fits" if self.share < FITS_BELOW else "tight" if self.share < 1.0 else "will not fit"


def estimate_memory(facts: ModelFacts, config, device: Device, gradient_checkpointing: bool = False,
                    precision: str | None = None) -> MemoryEstimate:
    """Peak training memory: weights + LoRA (weights, grads, AdamW) + activations at batch x max_length + runtime.

    Activations per token and layer are counted as about 16 x hidden + 6 x intermediate values (attention inputs and
    outputs, LoRA dropout copies, MLP intermediates), plus heads x length attention probabilities on devices without
    flash attention; logits add vocab x (value + two fp32 copies for the loss). A rough, deliberately cautious model.
    """
    text = facts.text
    h = text.get("hidden_size") or text.get("n_embd") or 1024
    inter = text.get("intermediate_size") or 4 * h
    layers = text.get("num_hidden_layers") or text.get("n_layer") or 24
    heads = text.get("num_attention_heads") or 16
    vocab = text.get("vocab_size") or 32000
    configured = getattr(config, "precision", "auto")
    precision = precision or (configured if configured != "auto" else
                              "bf16" if device.bf16 and device.kind != "mps" else "fp16" if device.kind == "cuda" else "fp32")
    # 16-bit activations on a GPU. CPU autocast keeps fp32 activations around the bf16 matmuls and caches a bf16
    # copy of each weight: measured on the Quick demo, bf16 used more memory than fp32 there (4.1 vs 3.4 GiB).
    value = 2 if precision in ("bf16", "fp16") and device.kind == "cuda" else 4
    quantized = getattr(config, "quantization", "none") == "4bit"
    weight_bytes = 0.55 if quantized else (2 if device.kind == "cuda" and precision == "bf16" else 4)
    if device.kind == "cpu" and precision == "bf16":
        weight_bytes += 2
    weights = int(facts.parameters * weight_bytes)
    adapter = facts.lora_parameters(config.lora_r, config.target_module_list()) * 16  # fp32 weight+grad+2 Adam moments
    tokens = config.per_device_train_batch_size * config.max_length
    per_layer = 16 * h + 6 * inter + (heads * config.max_length if device.kind != "cuda" else 0)
    if gradient_checkpointing:
        activations = tokens * value * (layers * h + per_layer)
    else:
        activations = tokens * value * layers * per_layer
    activations += tokens * vocab * (value + 8)
    return MemoryEstimate(weights, adapter, int(activations), OVERHEAD_BYTES[device.kind], device.memory,
                          gradient_checkpointing)


def needs_gradient_checkpointing(facts: ModelFacts, config, device: Device) -> bool:
    """Auto rule: on only when the estimate without it is not a comfortable fit and with it is smaller."""
    return estimate_memory(facts, config, device, False).verdict != "fits"


def gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 / 10 else f"{size / 2**20:.0f} MiB"


def fit_advice(facts: ModelFacts, config, device: Device) -> list[str]:
    """What to change, tried in order, until the estimate fits."""
    import dataclasses

    advice = []
    if estimate_memory(facts, config, device, True).verdict == "fits" and config.gradient_checkpointing != "on":
        advice.append("turn gradient checkpointing on (about 20% slower, far fewer activations)")
    candidate = config
    while candidate.per_device_train_batch_size > 1:
        candidate = dataclasses.replace(candidate, per_device_train_batch_size=candidate.per_device_train_batch_size // 2,
                                        gradient_accumulation_steps=candidate.gradient_accumulation_steps * 2)
        if estimate_memory(facts, candidate, device, True).verdict == "fits":
            advice.append(f"lower the batch size to {candidate.per_device_train_batch_size} with gradient accumulation "
                          f"{candidate.gradient_accumulation_steps} (same effective batch)")
            break
    shorter = dataclasses.replace(config, max_length=max(64, config.max_length // 2), per_device_train_batch_size=1)
    if not advice and estimate_memory(facts, shorter, device, True).verdict == "fits":
        advice.append(f"batch size 1 and max length {shorter.max_length}")
    if device.kind == "cuda" and getattr(config, "quantization", "none") != "4bit":
        advice.append("load the model in 4 bits (QLoRA, needs bitsandbytes)")
    advice.append("or pick a smaller model")
    return advice


def fit_report(facts: ModelFacts, config, device: Device | None = None) -> tuple[str, str]:
    """(verdict, Markdown explaining it) for training `facts` with `config` on `device`."""
    device = device or detect_device()
    mode = getattr(config, "gradient_checkpointing", "auto")
    checkpointing = mode == "on" or (mode == "auto" and needs_gradient_checkpointing(facts, config, device))
    estimate = estimate_memory(facts, config, device, checkpointing)
    icon = {"fits": "Fits", "tight": "Tight", "will not fit": "Will not fit"}[estimate.verdict]
    lines = [
        f"**{icon}** on {device.describe()}: about **{gib(estimate.total)}** "
        f"({estimate.share:.0%}) at batch {config.per_device_train_batch_size} × {config.max_length} tokens.",
        f"Weights {gib(estimate.weights)} · LoRA + optimizer {gib(estimate.adapter)} · activations "
        f"{gib(estimate.activations)} · runtime {gib(estimate.overhead)}. Gradient checkpointing: "
        f"{'on' if checkpointing else 'off'}{' (auto)' if mode == 'auto' else ''}.",
    ]
    if estimate.verdict != "fits":
        lines.append("To make it fit: " + "; ".join(fit_advice(facts, config, device)) + ".")
    return estimate.verdict, "\n\n".join(lines)


# ------------------------------------------------------------ resolving to a local folder
def _progress_bar_class(progress: Progress, what: str):
    """A tqdm class that reports file-download progress to `progress` (the UI bar, the run's status)."""
    from tqdm.auto import tqdm

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.update(disable=False, file=open(os.devnull, "w"))  # counted even without a terminal, never printed
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            result = super().update(n)
            if self.total:
                progress(min(self.n / self.total, 1.0), f"Downloading {what}: {self.n}/{self.total} files")
            return result

    return Reporting


def cached_snapshot(repo_id: str) -> Path | None:
    """A model downloaded earlier (or baked into the image), usable offline; None if there is none."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=str(model_cache_dir()), allow_patterns=DOWNLOAD_PATTERNS,
                                      local_files_only=True))
    except Exception:  # not cached: LocalEntryNotFoundError and friends
        return None


def download_model(repo_id: str, progress: Progress = _no_progress, token: str | None = None,
                   weights: bool = True) -> Path:
    """Check a Hub model from its metadata, then download only its safetensors, configs and tokenizer files
    (weights=False: configs and tokenizer only, for looking at the data through its tokenizer)."""
    from huggingface_hub import snapshot_download

    cached = cached_snapshot(repo_id) if hub_offline() else None
    if cached:
        if weights:
            check_model_folder(cached)
        return cached
    progress(0.0, f"Checking {repo_id} on the Hub")
    facts = hub_facts(repo_id, token)
    if facts.notes and facts.gated:
        raise ValueError(facts.notes[0])
    what = repo_id if weights else f"the tokenizer of {repo_id}"
    progress(0.02, f"Downloading {what}")
    try:
        folder = Path(snapshot_download(repo_id, endpoint=hub_endpoint(), token=token, cache_dir=str(model_cache_dir()),
                                        allow_patterns=DOWNLOAD_PATTERNS if weights else TOKENIZER_PATTERNS,
                                        tqdm_class=_progress_bar_class(progress, what)))
    except Exception as error:
        readable = hub_error(error, repo_id)
        if readable is None:
            raise
        raise readable from None
    if weights:
        check_model_folder(folder)
    progress(1.0, f"{repo_id} is ready")
    return folder


def resolve_model(choice: str, progress: Progress = _no_progress, token: str | None = None) -> Path:
    """A local folder holding the model's config, safetensors weights and tokenizer."""
    choice = choice.strip()
    if choice == BUNDLED_MODEL:
        return ensure_bundled_model(progress)
    folder = Path(choice).expanduser()
    if folder.is_dir():
        check_model_folder(folder)
        return folder
    if is_hub_model_id(choice):
        return download_model(choice, progress, token)
    raise ValueError(
        f"Model {choice!r} was not found: use 'bundled' (SmolLM2-135M-Instruct, offline), a Hub id (owner/name) "
        "or the path of a local folder with config.json and *.safetensors."
    )


def base_license(folder: Path) -> str | None:
    """The license in a model folder's README front matter (a Hub download keeps it), if any."""
    if (folder / "README.md").is_file():
        match = re.search(r"^license:\s*(\S+)", (folder / "README.md").read_text(errors="replace").split("\n---", 1)[0],
                          re.MULTILINE)
        if match:
            return match.group(1).strip("'\"")
    from .bundled import bundled_model_dir

    return "apache-2.0" if folder == bundled_model_dir() else None


def resolve_tokenizer(choice: str, progress: Progress = _no_progress, token: str | None = None) -> Path:
    """A folder with the model's tokenizer; for a Hub id without downloading the weights."""
    if is_hub_model_id(choice):
        return download_model(choice.strip(), progress, token, weights=False)
    return resolve_model(choice, progress, token)


def hub_model_id(choice: str) -> str | None:
    """The Hub id a choice came from (for links and model cards), when there is one."""
    if choice.strip() == BUNDLED_MODEL:
        return BUNDLED_HUB_ID
    return choice.strip() if is_hub_model_id(choice) else None


# ------------------------------------------------------------ tokenizer and tokens
@dataclass
class TokenSetup:
    """What load-time setup did to a tokenizer, for the log, the UI and the model."""

    chatml_added: bool = False  # the model had no chat template and got ChatML
    new_token_ids: list[int] = field(default_factory=list)  # rows to train (ChatML markers)
    pad_token: str = ""
    notes: list[str] = field(default_factory=list)


def _in_vocab(tokenizer, token: str | None) -> bool:
    return bool(token) and token in tokenizer.get_vocab()


def prepare_tokenizer(folder: Path):
    """The tokenizer set up for chat SFT: (tokenizer, TokenSetup).

    No chat template (a base model): ChatML is set, with <|im_start|>/<|im_end|> added as special tokens when
    missing, <|im_end|> as the end-of-turn (eos) token, and both markers listed for training. Pad: never the
    end-of-turn token when another token can pad; added as <|pad|> only when the vocabulary has none.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    setup = TokenSetup()
    original_eos = tokenizer.eos_token
    if not tokenizer.chat_template:
        missing = [t for t in (IM_START, IM_END) if not _in_vocab(tokenizer, t)]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        tokenizer.chat_template = CHATML_TEMPLATE
        tokenizer.eos_token = IM_END
        setup.chatml_added = True
        setup.new_token_ids = tokenizer.convert_tokens_to_ids([IM_START, IM_END])
        setup.notes.append("No chat template: ChatML was set up (<|im_start|>/<|im_end|>"
                           + (f", {len(missing)} new token{'s' if len(missing) > 1 else ''}" if missing else "")
                           + "); their embedding rows are trained so the tuned model learns to end its turn.")
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        candidates = [tokenizer.pad_token if tokenizer.pad_token != tokenizer.eos_token else None,
                      original_eos, tokenizer.unk_token, "<|endoftext|>", "<pad>", PAD]
        choice = next((t for t in candidates if t and t != tokenizer.eos_token and _in_vocab(tokenizer, t)), None)
        if choice is None:
            tokenizer.add_special_tokens({"pad_token": PAD})
            setup.notes.append(f"The tokenizer had no padding token apart from the end-of-turn token: added {PAD}.")
        else:
            tokenizer.pad_token = choice
    setup.pad_token = tokenizer.pad_token
    return tokenizer, setup


def load_tokenizer(folder: Path):
    return prepare_tokenizer(folder)[0]


def end_of_turn_ids(model, tokenizer) -> list[int]:
    """Every id that ends a reply: the tokenizer's eos and the model's generation eos ids."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in configured if isinstance(configured, list) else [configured]:
        if value is not None and value not in ids:
            ids.append(value)
    return ids


def fit_model_to_tokenizer(model, tokenizer) -> None:
    """Resize embeddings when the tokenizer gained tokens; point the model's eos/pad ids at the tokenizer's."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    generation = model.generation_config
    generation.pad_token_id = tokenizer.pad_token_id
    eos = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    generation.eos_token_id = [tokenizer.eos_token_id, *[e for e in eos if e is not None and e != tokenizer.eos_token_id]]


def trainable_tokens(model, token_ids: list[int]) -> dict[str, list[int]] | None:
    """PEFT trainable_token_indices for new tokens: the input embedding, and the output head when it is not tied."""
    if not token_ids:
        return None
    names = {module: name for name, module in model.named_modules()}
    targets = {names[model.get_input_embeddings()].split(".")[-1]: list(token_ids)}
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is model.get_input_embeddings().weight
    if output is not None and not tied:
        targets[names[output].split(".")[-1]] = list(token_ids)
    return targets


def expose_bias_on_token_wrappers() -> None:
    """Let TRL's fused LM head read `lm_head.bias` through PEFT's TrainableTokensWrapper.

    The wrapper forwards only `.weight` (the merged rows, so new tokens train through the fused head too); TRL's
    SFTTrainer also reads `.bias`, which fails on a wrapped head (tied or targeted). The wrapped layer's own bias
    (None for LM heads) is the right answer.
    """
    from peft.utils.other import TrainableTokensWrapper

    if getattr(TrainableTokensWrapper, "_bias_exposed", False):
        return
    has, get = TrainableTokensWrapper._hasattr_wrapped, TrainableTokensWrapper._getattr_wrapped
    TrainableTokensWrapper._hasattr_wrapped = lambda self, name, modules: name == "bias" or has(self, name, modules)
    TrainableTokensWrapper._getattr_wrapped = lambda self, name, modules: (
        getattr(self.original_module, "bias", None) if name == "bias" else get(self, name, modules))
    TrainableTokensWrapper._bias_exposed = True


def check_model_choice(config) -> ModelFacts:
    """Everything about the model that can be refused before a run is queued: metadata only, nothing downloaded."""
    facts = model_facts(config.model)
    if facts.gated and facts.notes:
        raise ValueError(facts.notes[0])
    check_target_modules(config.target_module_list(), facts)
    if config.quantization == "4bit":
        check_quantization(config.quantization)
    device = detect_device()
    if config.precision == "fp16" and device.kind != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA GPU and this is {device.name}: use auto, bf16 or fp32.")
    if config.precision == "bf16" and device.kind == "cuda" and not device.bf16:
        raise ValueError(f"{device.name} does not support bf16 (it is older than Ampere): use auto or fp16.")
    return facts


def check_target_modules(targets: list[str] | str, facts: ModelFacts) -> None:
    """A custom LoRA target list must name real linear layers of this model."""
    if isinstance(targets, str):
        return
    known = facts.linear_modules()
    unknown = [t for t in targets if t not in known]
    if unknown and known:
        raise ValueError(f"lora_target_modules names {', '.join(unknown)}, which this model does not have: its linear "
                         f"layers are {', '.join(sorted(known))}.")


def attention_targets(facts: ModelFacts) -> list[str]:
    return facts.attention_modules() or ["q_proj", "k_proj", "v_proj", "o_proj"]


# ------------------------------------------------------------ loading
def load_model(folder: Path, dtype: str = "float32", device: str | None = None, quantization: str = "none"):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {}
    if quantization == "4bit":
        kwargs["quantization_config"] = four_bit_config(dtype)
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=False, **kwargs
    )
    if device and quantization != "4bit":
        model.to(device)
    return model


def check_quantization(quantization: str) -> None:
    """4-bit QLoRA needs a CUDA GPU and bitsandbytes; say so before anything loads."""
    if quantization != "4bit":
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ValueError("4-bit QLoRA needs a CUDA GPU: set quantization to none on this machine.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("4-bit QLoRA needs the bitsandbytes package: pip install bitsandbytes, or set quantization to none.")


def four_bit_config(dtype: str):
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, dtype if dtype != "float32" else "bfloat16"))


def training_dtype(precision: dict[str, bool], device_kind: str) -> str:
    """bf16 weights on a GPU training in bf16 (half the memory); fp32 elsewhere (CPU autocast is as fast)."""
    if device_kind == "cuda" and precision.get("bf16"):
        return "bfloat16"
    return "float32"  # fp16 training keeps fp32 weights: the gradient scaler refuses fp16 trainable rows
