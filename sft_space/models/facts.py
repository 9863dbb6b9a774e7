"""Facts about a model from its metadata alone, and the refusals they allow before any download.

Owns the curated model list; telling a Hub id from a local folder (and the Hub
id behind a choice); ModelFacts read from config.json and safetensors headers
only (a local folder, the Hub's metadata API, or the known numbers of the
bundled model before it is converted); refusing what cannot be trained safely
(custom code, not a causal LM, pickle-only weights, gated, LoRA target names the
model lacks); and the model's context limit. It fetches config files, never
weights, and imports neither torch nor transformers. It knows nothing about the
device, memory, the tokenizer or loading weights.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..config import BUNDLED_MODEL
from ..hub import HUB_ID, HUB_TIMEOUT_SECONDS, has_read_token, hub_endpoint, hub_offline, read_error, read_token
from .bundled import BUNDLED_HUB_ID, BUNDLED_MAX_LENGTH, BUNDLED_NAME
from .cache import cached_snapshot, model_cache_dir

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
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "BF16": 2,
    "F16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "I32": 4,
    "I64": 8,
    "BOOL": 1,
}


def model_label(choice: str) -> str:
    return BUNDLED_NAME if choice == BUNDLED_MODEL else choice


def _exists(name: str) -> bool:
    """A local path of that name exists (a name too long for the file system is none)."""
    try:
        return Path(name).expanduser().exists()
    except (OSError, ValueError):
        return False


def is_hub_model_id(choice: str) -> bool:
    choice = choice.strip()
    return bool(HUB_ID.match(choice)) and not _exists(choice)


def hub_model_id(choice: str) -> str | None:
    """The Hub id a choice came from (for links and model cards), when there is one."""
    if choice.strip() == BUNDLED_MODEL:
        return BUNDLED_HUB_ID
    return choice.strip() if is_hub_model_id(choice) else None


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
        """The larger of the weights' headers' count and the count config.json describes: a header can list a
        few tensors while the config builds a billion parameters (from_pretrained initialises what is missing)."""
        return max(self.header_parameters, config_parameters(self.text))

    @property
    def header_parameters(self) -> int:
        total = 0
        for _, shape in self.tensors.values():
            count = 1
            for size in shape:
                count *= size
            total += count
        return total

    @property
    def weight_bytes(self) -> int:
        """The size of the safetensors weights, from their headers."""
        total = 0
        for dtype, shape in self.tensors.values():
            count = DTYPE_BYTES.get(dtype, 4)
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
        names = {
            name[: -len(".weight")].split(".")[-1]
            for name in self.tensors
            if name.endswith(".weight") and re.search(r"(attn|attention)\.", name)
        }
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
        parts = [
            f"{self.parameters / 1e6:,.0f}M parameters" if self.parameters else "parameter count unknown",
            f"{text.get('model_type', self.config.get('model_type', '?'))}",
            f"{text.get('num_hidden_layers', '?')} layers, hidden size {text.get('hidden_size', '?')}",
        ]
        if self.max_length:
            parts.append(f"context {self.max_length} tokens")
        parts.append(
            "chat template: yes"
            if self.has_chat_template
            else "no chat template: gets ChatML (<|im_start|>/<|im_end|> added and trained)"
        )
        return ", ".join(parts)


def _positive(config: dict, *names: str) -> int:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def config_parameters(config: dict) -> int:
    """The parameters a decoder-only transformer's config describes (embeddings, attention, MLP, its experts,
    an untied head; norms and biases left out): 0 where the config does not say enough."""
    hidden = _positive(config, "hidden_size", "n_embd", "d_model")
    layers = _positive(config, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _positive(config, "vocab_size")
    if not (hidden and layers and vocab):
        return 0
    heads = _positive(config, "num_attention_heads", "n_head") or 1
    head_dim = _positive(config, "head_dim") or hidden // heads
    kv_heads = _positive(config, "num_key_value_heads") or heads
    intermediate = _positive(config, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    experts = _positive(config, "num_local_experts", "num_experts", "n_routed_experts") or 1
    expert_size = _positive(config, "moe_intermediate_size") or intermediate
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * (expert_size * experts if experts > 1 else intermediate)
    head = 0 if config.get("tie_word_embeddings", True) else vocab * hidden
    return vocab * hidden + layers * (attention + mlp) + head


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
        raise ValueError(
            f"{where} needs custom code (auto_map in config.json, loaded only with trust_remote_code), "
            "which could run anything on this machine and is refused: pick a model that transformers "
            "supports natively (Llama, Qwen2, Mistral, Gemma, Phi...)."
        )
    architectures = config.get("architectures") or []
    if architectures and not any(
        a.endswith("ForCausalLM") or a.endswith("ForConditionalGeneration") for a in architectures
    ):
        raise ValueError(
            f"{where} is a {', '.join(architectures)}, not a causal language model (…ForCausalLM): "
            "SFT needs a text-generation model."
        )


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


def hub_facts(repo_id: str, token: str | None = None) -> ModelFacts:
    """Everything the checks need from the Hub's metadata: repo info, config.json and safetensors headers."""
    from huggingface_hub import HfApi, hf_hub_download

    if hub_offline():
        raise ValueError(
            f"The Hugging Face Hub is switched off here (HF_HUB_OFFLINE=1), so {repo_id} cannot be "
            "checked or downloaded: use the bundled model or a local folder."
        )
    api = HfApi(endpoint=hub_endpoint(), token=read_token(token))
    try:
        info = api.model_info(repo_id, timeout=HUB_TIMEOUT_SECONDS)
        files = [s.rfilename for s in info.siblings or []]
        if not any(name.endswith(".safetensors") for name in files):
            pickles = [n for n in files if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
            raise ValueError(
                f"{repo_id} ships no .safetensors weights"
                + (
                    f" (only pickle files such as {pickles[0]}, which can run code when loaded and are refused)"
                    if pickles
                    else ""
                )
                + ": pick a model that ships safetensors (most recent ones do)."
            )
        config = json.loads(
            Path(
                hf_hub_download(
                    repo_id,
                    "config.json",
                    endpoint=hub_endpoint(),
                    token=read_token(token),
                    cache_dir=str(model_cache_dir()),
                    etag_timeout=HUB_TIMEOUT_SECONDS,
                )
            ).read_text()
        )
        check_model_config(config, repo_id)
        template = "chat_template.jinja" in files
        if not template and "tokenizer_config.json" in files:
            path = hf_hub_download(
                repo_id,
                "tokenizer_config.json",
                endpoint=hub_endpoint(),
                token=read_token(token),
                cache_dir=str(model_cache_dir()),
            )
            template = bool(json.loads(Path(path).read_text()).get("chat_template"))
        metadata = api.get_safetensors_metadata(repo_id, token=read_token(token))
    except ValueError:
        raise
    except Exception as error:
        readable = read_error(error, repo_id, "model")
        if readable is None:
            raise
        raise readable from None
    tensors = {
        name: (t.dtype, list(t.shape)) for meta in metadata.files_metadata.values() for name, t in meta.tensors.items()
    }
    card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
    facts = ModelFacts(repo_id, "hub", config, tensors, template, gated=bool(info.gated), license=card.get("license"))
    if info.gated and not has_read_token(token):
        facts.notes.append(
            f"{repo_id} is gated: accept its conditions at {hub_endpoint()}/{repo_id} and sign in before training."
        )
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
    raise ValueError(
        f"Model {choice!r} is neither a local folder nor a Hub id (owner/name): use 'bundled', the "
        "path of a folder with config.json and *.safetensors, or a Hub id such as "
        "HuggingFaceTB/SmolLM2-360M-Instruct."
    )


SMOLLM2_135M_CONFIG = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": BUNDLED_MAX_LENGTH,
    "tie_word_embeddings": True,
    "architectures": ["LlamaForCausalLM"],
}


def llama_tensors(config: dict) -> dict[str, tuple[str, list[int]]]:
    """The weight names and shapes of a Llama-style model with this config (for facts before conversion)."""
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    tensors = {"model.embed_tokens.weight": ("BF16", [config["vocab_size"], h]), "model.norm.weight": ("BF16", [h])}
    for n in range(layers):
        p = f"model.layers.{n}"
        for name, shape in (
            ("self_attn.q_proj", [h, h]),
            ("self_attn.k_proj", [kv, h]),
            ("self_attn.v_proj", [kv, h]),
            ("self_attn.o_proj", [h, h]),
            ("mlp.gate_proj", [i, h]),
            ("mlp.up_proj", [i, h]),
            ("mlp.down_proj", [h, i]),
            ("input_layernorm", [h]),
            ("post_attention_layernorm", [h]),
        ):
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


def check_target_modules(targets: list[str] | str, facts: ModelFacts) -> None:
    """A custom LoRA target list must name real linear layers of this model."""
    if isinstance(targets, str):
        return
    known = facts.linear_modules()
    unknown = [t for t in targets if t not in known]
    if unknown and known:
        raise ValueError(
            f"lora_target_modules names {', '.join(unknown)}, which this model does not have: its linear "
            f"layers are {', '.join(sorted(known))}."
        )


def attention_targets(facts: ModelFacts) -> list[str]:
    return facts.attention_modules() or ["q_proj", "k_proj", "v_proj", "o_proj"]
