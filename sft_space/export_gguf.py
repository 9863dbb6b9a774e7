"""Taking a tuned model home: the merged model (base + adapter) as one GGUF file for llama.cpp and Ollama.

Owns the GGUF export of a run, start to finish: which architectures it writes (Llama/SmolLM2 and Qwen2, through
the `gguf` package's writer, architecture table and tensor-name map; any other is refused by name before any work),
the weight types (f16, q8_0, q4_0; norms and biases stay f32, a row the block size does not divide stays f16), the
size estimate and disk check, the tokenizer (byte-level BPE: tokens, types, merges, special ids) and chat template
written into the metadata, the Ollama Modelfile beside the file (its TEMPLATE derived from the chat template by
rendering it, and checked by rendering both), a README snippet, and the check that the written file loads back
through transformers' GGUF loader and answers the probe prompts like base + adapter (replies, tokens, held-out
loss), all under the run's gguf/ folder with the results in gguf.json.

It does not know Gradio, the Hub (publish pushes the files) or how a run was trained; it reads the run directory
and writes only into its gguf/ folder.

    python -m sft_space.export_gguf RUN_DIR [--type q8_0] [--type f16] [--no-verify]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import shutil
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import Progress, no_progress
from .rundir import (
    GGUF_REPORT,
    MODELFILE,
    adapter_dir,
    gguf_dir,
    gguf_file_name,
    has_adapter,
    read_config,
    read_probes,
    read_status,
    run_path,
    write_gguf_report,
)

# transformers' model_type -> the gguf package's MODEL_ARCH member: the architectures written and read back
ARCHITECTURES = {"llama": "LLAMA", "qwen2": "QWEN2"}
TYPES = {
    "f16": "F16 (half precision: the tuned weights as they are, about 2 bytes a weight)",
    "q8_0": "Q8_0 (8-bit blocks: about half of f16, nearly the same answers)",
    "q4_0": "Q4_0 (4-bit blocks: about a quarter of f16, answers drift more)",
}
DEFAULT_TYPE = "q8_0"
MAX_NEW_TOKENS = 48  # the probe replies compared, as the merged-model check of a push
LOSS_ROWS = 20  # held-out rows whose loss the loaded-back file is measured on
DISK_MARGIN = 1.10  # the estimate plus 10 % (metadata, alignment) must fit on the disk
SENTINELS = ("QZSYSTEMQZ", "QZFIRSTQZ", "QZANSWERQZ", "QZSECONDQZ")  # contents no template changes


# ------------------------------------------------------------------ what can be exported
@dataclass
class ExportPlan:
    """What an export will do, known before any weight is loaded."""

    run_dir: Path
    model_folder: Path
    model_type: str
    types: list[str]
    estimated_bytes: dict[str, int]
    free_bytes: int
    parameters: int
    notes: list[str] = field(default_factory=list)


def parse_types(types) -> list[str]:
    """The weight types asked for (a name, or several), checked; the default is q8_0."""
    if isinstance(types, str):
        types = [types]
    chosen = [str(t).strip().lower() for t in (types or [DEFAULT_TYPE]) if str(t).strip()] or [DEFAULT_TYPE]
    unknown = [t for t in chosen if t not in TYPES]
    if unknown:
        raise ValueError(f"Unknown GGUF type {unknown[0]!r}: choose one of {', '.join(TYPES)}.")
    return list(dict.fromkeys(chosen))


def model_type_of(folder: Path) -> str:
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    return str(config.get("model_type", "unknown"))


def check_architecture(model_type: str, model: str, config: dict | None = None) -> None:
    """Refuse, naming it, an architecture this export does not write, and say what to do instead."""
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"GGUF export does not handle the architecture {model_type!r} of {model}: it writes "
            f"{' and '.join(ARCHITECTURES)} models (SmolLM2, Llama, Qwen2/2.5). Push the merged model as "
            "safetensors instead (Publish, What to push: Merged model); llama.cpp's convert_hf_to_gguf.py can "
            "turn that into GGUF."
        )
    rope = (config or {}).get("rope_parameters") or (config or {}).get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ValueError(
            f"{model} uses {rope.get('rope_type') or rope.get('type')!r} rope scaling, which this GGUF export does "
            "not write: push the merged model as safetensors instead (Publish, What to push: Merged model)."
        )


def safetensors_shapes(folder: Path) -> dict[str, list[int]]:
    """Every tensor's shape, read from the safetensors headers alone (nothing is loaded)."""
    shapes = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        shapes.update({name: info["shape"] for name, info in header.items() if name != "__metadata__"})
    return shapes


def _ggml_type(name: str, shape, kind: str):
    """The type a tensor is written in: llama.cpp's rules for a file of this kind."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if len(shape) < 2:
        return GGMLQuantizationType.F32  # norms and biases
    if kind == "f16":
        return GGMLQuantizationType.F16
    wanted = GGMLQuantizationType.Q8_0 if kind == "q8_0" else GGMLQuantizationType.Q4_0
    if kind == "q4_0" and name in ("token_embd.weight", "output.weight"):
        wanted = GGMLQuantizationType.Q8_0  # as llama-quantize keeps them: the vocabulary rows suffer most
    if shape[-1] % GGML_QUANT_SIZES[wanted][0]:
        return GGMLQuantizationType.F16  # a row the block does not divide
    return wanted


def _nbytes(shape, ggml_type) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[ggml_type]
    return math.prod(shape) // block * size


def tensor_plan(shapes: dict[str, list[int]], model_type: str, layers: int, kind: str, tied: bool) -> list[tuple]:
    """(transformers name, GGUF name, shape, ggml type) of every tensor the file holds, in writing order."""
    import gguf

    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[model_type])
    names = gguf.get_tensor_name_map(arch, layers)
    plan = []
    for hf_name, shape in shapes.items():
        if tied and hf_name == "lm_head.weight":
            continue  # the file reads the embedding matrix for the output when output.weight is absent
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise RuntimeError(f"The tensor {hf_name} has no GGUF name for {model_type}: nothing was written.")
        plan.append((hf_name, gguf_name, list(shape), _ggml_type(gguf_name, shape, kind)))
    return plan


def estimate_bytes(folder: Path, model_type: str, kind: str, vocabulary_bytes: int = 0) -> tuple[int, int]:
    """(estimated file size, parameters) of the export of a model folder in one type, from its headers alone."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    shapes = safetensors_shapes(folder)
    tied = bool(config.get("tie_word_embeddings"))
    plan = tensor_plan(shapes, model_type, int(config["num_hidden_layers"]), kind, tied)
    return sum(_nbytes(shape, t) for _, _, shape, t in plan) + vocabulary_bytes, sum(
        math.prod(s) for _, _, s, _ in plan
    )


def plan_export(run: str | Path, types=None) -> ExportPlan:
    """Every check that needs no weights: an adapter, a known architecture, the types, the size and the disk."""
    from .models import resolve_model

    run_dir = run_path(run)
    if not run_dir.is_dir() or not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (it has no config.json).")
    if not has_adapter(run_dir):
        raise FileNotFoundError(
            f"Run {run_dir.name} has no adapter to export: wait for it to finish, or Stop & save it."
        )
    kinds = parse_types(types)
    config = read_config(run_dir)
    folder = Path(resolve_model(config.model))
    model_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model_type = str(model_config.get("model_type", "unknown"))
    check_architecture(model_type, config.model, model_config)
    tokenizer_json = adapter_dir(run_dir) / "tokenizer.json"
    vocabulary = tokenizer_json.stat().st_size if tokenizer_json.is_file() else 0
    estimates, parameters = {}, 0
    for kind in kinds:
        estimates[kind], parameters = estimate_bytes(folder, model_type, kind, vocabulary)
    target = gguf_dir(run_dir)
    target.mkdir(exist_ok=True)
    existing = sum(p.stat().st_size for p in target.glob("*.gguf"))
    free = shutil.disk_usage(target).free + existing  # an export replaces the files of the one before
    needed = int(sum(estimates.values()) * DISK_MARGIN)
    if needed > free:
        raise OSError(
            f"The GGUF export needs about {human_bytes(needed)} and the disk has {human_bytes(free)} free: "
            "free some space (delete old runs on the Runs tab) or choose a smaller type (q8_0, q4_0)."
        )
    return ExportPlan(run_dir, folder, model_type, kinds, estimates, free, parameters)


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def estimate_text(plan: ExportPlan) -> str:
    sizes = ", ".join(f"{kind} about {human_bytes(size)}" for kind, size in plan.estimated_bytes.items())
    return (
        f"{plan.parameters / 1e6:.0f}M weights ({plan.model_type}): {sizes}; "
        f"{human_bytes(plan.free_bytes)} free on the disk."
    )


# ------------------------------------------------------------------ the tokenizer in the metadata
def gguf_chat_template(template: str) -> str:
    """The chat template as a runtime reads it: transformers' {% generation %} markers (used for assistant-only
    training masks, unknown to llama.cpp's template engine) removed; it renders the same text."""
    return re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", template or "")


def pre_tokenizer_name(spec: dict) -> str:
    """llama.cpp's name (tokenizer.ggml.pre) for how the tokenizer splits text before its merges."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_SPLIT

    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds[:1] == ["Split"] and (steps[0].get("pattern") or {}).get("Regex") == QWEN2_SPLIT:
        return "qwen2"
    return "default"


def tokenizer_metadata(tokenizer, rows: int) -> dict:
    """tokenizer.ggml.* of a byte-level BPE tokenizer: every id up to the embedding's rows, its type, the merges."""
    from gguf import TokenType

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    byte_level = (
        "ByteLevel" in json.dumps(spec.get("pre_tokenizer")) or (spec.get("decoder") or {}).get("type") == "ByteLevel"
    )
    if model.get("type") != "BPE" or not byte_level:
        raise ValueError(
            f"GGUF export writes byte-level BPE tokenizers, and this one is {model.get('type')!r}: push the merged "
            "model as safetensors instead (Publish, What to push: Merged model)."
        )
    if len(tokenizer) > rows:
        raise RuntimeError(f"The tokenizer has {len(tokenizer)} tokens and the model {rows} embedding rows.")
    merges = [" ".join(m) if isinstance(m, list) else m for m in model.get("merges", [])]
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(rows):
        if i in added:
            tokens.append(added[i].content)
            types.append(TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
        else:  # rows past the vocabulary (padded embeddings), as llama.cpp names them
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
    return {
        "pre": pre_tokenizer_name(spec),
        "tokens": tokens,
        "types": types,
        "merges": merges,
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
        "chat_template": gguf_chat_template(tokenizer.chat_template),
    }


# ------------------------------------------------------------------ writing the file
def _permute(weights, heads: int):
    """llama.cpp's reordering of q/k rows for its rope (convert_hf_to_gguf.py LlamaModel.permute); transformers'
    GGUF loader undoes it for the llama architecture."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensor_data(array, ggml_type):
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    if ggml_type == GGMLQuantizationType.F32:
        return array.astype(np.float32)
    if ggml_type == GGMLQuantizationType.F16:
        return array.astype(np.float16)
    return quants.quantize(array.astype(np.float32), ggml_type)


def write_gguf(model, tokenizer, path: Path, kind: str, name: str, progress: Progress = no_progress) -> dict:
    """The merged model and its tokenizer as one GGUF file (written beside, then renamed into place).

    Progress is per tensor, with the time left from the weights converted so far. Returns bytes, seconds, tensors.
    """
    import gguf
    import numpy as np
    import torch

    started = time.time()
    config = model.config
    model_type = config.model_type
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[model_type])
    state = {k: v for k, v in model.state_dict().items()}
    rows = model.get_input_embeddings().weight.shape[0]
    output = model.get_output_embeddings()
    tied = output is not None and output.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    shapes = {k: list(v.shape) for k, v in state.items()}
    plan = tensor_plan(shapes, model_type, config.num_hidden_layers, kind, tied)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    vocabulary = tokenizer_metadata(tokenizer, rows)

    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name)
    writer.add_type(gguf.GGUFType.MODEL)
    file_types = {"f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0"}
    writer.add_file_type(getattr(gguf.LlamaFileType, file_types[kind]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(rows)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocabulary["pre"])
    writer.add_token_list(vocabulary["tokens"])
    writer.add_token_types(vocabulary["types"])
    writer.add_token_merges(vocabulary["merges"])
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id)):
        if vocabulary[key] is not None:
            add(vocabulary[key])
    if vocabulary["unk"] is not None:
        writer.add_unk_token_id(vocabulary["unk"])
    if vocabulary["pad"] is not None:
        writer.add_pad_token_id(vocabulary["pad"])
    writer.add_add_bos_token(False)  # the chat template writes every marker itself
    if vocabulary["chat_template"]:
        writer.add_chat_template(vocabulary["chat_template"])
    for _, gguf_name, shape, ggml_type in plan:
        if ggml_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            dtype = np.float32 if ggml_type == gguf.GGMLQuantizationType.F32 else np.float16
            writer.add_tensor_info(gguf_name, shape, np.dtype(dtype), _nbytes(shape, ggml_type))
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(shape, ggml_type)
            writer.add_tensor_info(gguf_name, byte_shape, np.dtype(np.uint8), _nbytes(shape, ggml_type), ggml_type)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(math.prod(shape) for _, _, shape, _ in plan)
        done, convert_started = 0, time.time()
        for index, (hf_name, gguf_name, shape, ggml_type) in enumerate(plan):
            with torch.no_grad():
                array = state[hf_name].detach().to(torch.float32).cpu().numpy()
            if model_type == "llama" and ".attn_q." in gguf_name:
                array = _permute(array, heads)
            elif model_type == "llama" and ".attn_k." in gguf_name:
                array = _permute(array, kv_heads)
            writer.write_tensor_data(_tensor_data(array, ggml_type))
            done += math.prod(shape)
            elapsed = time.time() - convert_started
            left = elapsed / done * (total - done) if done else 0.0
            progress(
                done / total,
                f"Writing {kind}: tensor {index + 1}/{len(plan)} ({done / total:.0%}), about {left:.0f} s left",
            )
        writer.close()
        partial.replace(path)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return {"bytes": path.stat().st_size, "seconds": round(time.time() - started, 2), "tensors": len(plan)}


def read_metadata(path: Path) -> dict:
    """What a runtime reads first: architecture, chat template, the end-of-turn token, the tensors' types."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(key):
        field_ = reader.fields.get(key)
        return None if field_ is None else field_.contents()

    tokens = reader.fields["tokenizer.ggml.tokens"]
    eos = value("tokenizer.ggml.eos_token_id")
    eos_token = bytes(tokens.parts[tokens.data[eos]]).decode("utf-8") if eos is not None else None
    kinds: dict[str, int] = {}
    for tensor in reader.tensors:
        kinds[tensor.tensor_type.name] = kinds.get(tensor.tensor_type.name, 0) + 1
    return {
        "architecture": value("general.architecture"),
        "chat_template": value("tokenizer.chat_template"),
        "eos_token": eos_token,
        "tokens": len(tokens.data),
        "tensor_types": kinds,
    }


# ------------------------------------------------------------------ the Modelfile
def _render(tokenizer, messages, generation: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _pieces(text: str, sentinels) -> list[str] | None:
    """The text between the sentinels, in order; None when they do not all appear once, in order."""
    pieces = []
    for sentinel in sentinels:
        before, found, text = text.partition(sentinel)
        if not found or sentinel in text:
            return None
        pieces.append(before)
    return pieces + [text]


def ollama_template(tokenizer) -> str | None:
    """A Go template (Ollama's TEMPLATE) rendering conversations as the chat template does, or None when the chat
    template is not one with a fixed text around each role's content.

    Found by rendering the chat template on conversations with sentinel contents: what comes before and after a
    system, user and assistant content, what starts a conversation with and without a system message (a default
    system prompt shows up there) and the generation prompt.
    """
    system, first, answer, second = SENTINELS
    u = lambda text: {"role": "user", "content": text}  # noqa: E731
    try:
        three = _render(tokenizer, [u(first), {"role": "assistant", "content": answer}, u(second)])
        two = _render(tokenizer, [u(first), {"role": "assistant", "content": answer}])
        with_system = _render(tokenizer, [{"role": "system", "content": system}, u(first)])
        generation = _render(tokenizer, [u(first), {"role": "assistant", "content": answer}, u(second)], True)
    except Exception:  # a template that refuses these conversations (e.g. no system role)
        return None
    g, f, h = (
        _pieces(three, (first, answer, second)),
        _pieces(two, (first, answer)),
        _pieces(with_system, (system, first)),
    )
    if not (g and f and h) or not generation.startswith(three):
        return None
    user_end, answer_end = g[3], f[2]
    if not g[1].startswith(user_end) or not g[2].startswith(answer_end) or not g[0].endswith(g[2][len(answer_end) :]):
        return None
    answer_start = g[1][len(user_end) :]
    user_start = g[2][len(answer_end) :]
    start_without_system = g[0][: len(g[0]) - len(user_start)]
    if not h[1].endswith(user_start) or h[2] != user_end:
        return None
    system_end = h[1][: len(h[1]) - len(user_start)]
    prompt = generation[len(three) :]
    pieces = (h[0], system_end, start_without_system, user_start, user_end, answer_start, answer_end, prompt)
    if any("{{" in p or "}}" in p or '"""' in p for p in pieces):
        return None
    return (
        f"{{{{ if .System }}}}{h[0]}{{{{ .System }}}}{system_end}{{{{ else }}}}{start_without_system}{{{{ end }}}}"
        f'{{{{ range .Messages }}}}{{{{ if eq .Role "user" }}}}{user_start}{{{{ .Content }}}}{user_end}'
        f'{{{{ else if eq .Role "assistant" }}}}{answer_start}{{{{ .Content }}}}{answer_end}{{{{ end }}}}{{{{ end }}}}'
        f"{prompt}"
    )


_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def render_ollama_template(template: str, messages: list[dict]) -> str:
    """A Go template of the subset ollama_template writes, rendered as Ollama renders a chat: .System holds the
    system messages (joined by blank lines), .Messages the others; supports if/else if/else/end on .System and
    `eq .Role "..."`, range over .Messages, .System/.Role/.Content and {{- -}} trimming."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [m for m in messages if m["role"] != "system"]
    items, position, trim_next = [], 0, False
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        text = text.lstrip() if trim_next else text
        items.append(("text", text.rstrip() if match.group(1) else text))
        items.append(("action", match.group(2)))
        trim_next, position = bool(match.group(3)), match.end()
    tail = template[position:]
    items.append(("text", tail.lstrip() if trim_next else tail))

    def parse(index: int, stops: tuple) -> tuple[list, int, str | None]:
        nodes = []
        while index < len(items):
            kind, value = items[index]
            if kind == "text":
                nodes.append(("text", value))
                index += 1
                continue
            if value in stops or value.startswith("else"):
                return nodes, index, value
            if value.startswith("if "):
                branches, index = [], index + 1
                condition = value[3:]
                while True:
                    body, index, stop = parse(index, ("end",))
                    branches.append((condition, body))
                    index += 1
                    if stop == "end":
                        break
                    condition = stop[len("else if ") :] if stop.startswith("else if ") else None
                nodes.append(("if", branches))
            elif value == "range .Messages":
                body, index, stop = parse(index + 1, ("end",))
                if stop != "end":
                    raise ValueError("range without end")
                nodes.append(("range", body))
                index += 1
            elif value in (".System", ".Role", ".Content"):
                nodes.append(("var", value[1:]))
                index += 1
            else:
                raise ValueError(f"unsupported template action {{{{ {value} }}}}")
        return nodes, index, None

    def truth(condition: str | None, context: dict) -> bool:
        if condition is None:
            return True
        if condition.startswith(".") and " " not in condition:
            return bool(context.get(condition[1:]))
        match = re.fullmatch(r'eq \.(\w+) "([^"]*)"', condition)
        if not match:
            raise ValueError(f"unsupported condition {condition!r}")
        return context.get(match.group(1)) == match.group(2)

    def run(nodes, context) -> str:
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "var":
                out.append(str(context.get(node[1], "")))
            elif node[0] == "range":
                for message in context["Messages"]:
                    out.append(run(node[1], {**context, "Role": message["role"], "Content": message["content"]}))
            else:
                for condition, body in node[1]:
                    if truth(condition, context):
                        out.append(run(body, context))
                        break
        return "".join(out)

    nodes, _, _ = parse(0, ())
    return run(nodes, {"System": system, "Messages": rest})


def check_template(template: str | None, tokenizer, conversations: list[list[dict]]) -> dict:
    """Does the Modelfile's TEMPLATE render these conversations (and a multi-turn one with a system prompt) the
    way the chat template does?"""
    if not template:
        return {"matches": False, "checked": 0, "note": "the chat template has no fixed text around each role"}
    cases = list(conversations) + [
        [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Name a colour."},
        ],
        [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"}, {"role": "user", "content": "?"}],
    ]
    differing = [c for c in cases if render_ollama_template(template, c) != _render(tokenizer, c, True)]
    return {"matches": not differing, "checked": len(cases), "differing": len(differing)}


def common_system_prompt(rows: list[dict]) -> str | None:
    """The system prompt every training conversation starts with, if they all share one."""
    prompts = set()
    for row in rows:
        messages = row.get("messages") or []
        prompts.add(messages[0]["content"] if messages and messages[0].get("role") == "system" else None)
        if len(prompts) > 1:
            return None
    return next(iter(prompts), None)


def modelfile_text(file_name: str, template: str | None, stops: list[str], system: str | None) -> str:
    lines = [f"FROM ./{file_name}", ""]
    if template:
        lines += [f'TEMPLATE """{template}"""', ""]
    else:
        lines += ["# No TEMPLATE: Ollama reads the chat template in the file's metadata.", ""]
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    if system and '"""' not in system:
        lines += ["", f'SYSTEM """{system}"""']
    return "\n".join(lines) + "\n"


def readme_text(run_name: str, files: list[str], report: dict) -> str:
    main = files[0]
    lines = [
        f"# {run_name}: GGUF",
        "",
        f"The tuned model (base + LoRA adapter merged) as GGUF: {', '.join(f'`{f}`' for f in files)}. The chat "
        "template and the end-of-turn token are in each file's metadata.",
        "",
        "## Ollama",
        "",
        "```shell",
        f"ollama create {_ollama_name(run_name)} -f Modelfile",
        f"ollama run {_ollama_name(run_name)}",
        "```",
        "",
        "## llama.cpp",
        "",
        "```shell",
        f"llama-cli -m {main} -cnv --jinja",
        f"llama-server -m {main} --jinja --port 8080",
        "```",
        "",
    ]
    checked = [e for e in report.get("files", []) if e.get("verification")]
    if checked:
        lines += ["## Checked", "", *summary_lines(report), ""]
    return "\n".join(lines)


def _ollama_name(run_name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", run_name.lower()).strip("-")[:60] or "sft-model"


# ------------------------------------------------------------------ checking the written file
def _greedy(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = MAX_NEW_TOKENS):
    """Greedy replies, one conversation at a time: (prompt ids, reply ids, reply texts)."""
    import torch

    from .models import end_of_turn_ids

    prompts, replies, texts = [], [], []
    ends = end_of_turn_ids(model, tokenizer)
    for conversation in conversations:
        encoded = tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=ends,
            )
        reply = output[0, encoded["input_ids"].shape[1] :].tolist()
        prompts.append(encoded["input_ids"][0].tolist())
        replies.append(reply)
        texts.append(tokenizer.decode(reply, skip_special_tokens=True).strip())
    return prompts, replies, texts


def _loss(model, tokenizer, rows: list[dict], answers_only: bool) -> float | None:
    """Mean token loss on held-out conversations, counted as the Evaluate tab counts it; None without rows."""
    from .evaluate import answer_loss

    total, counted = answer_loss(model, tokenizer, rows, answers_only)
    return total / counted if counted else None


def _leading_agreement(a: list[int], b: list[int]) -> int:
    same = 0
    for x, y in zip(a, b):
        if x != y:
            break
        same += 1
    return same


def verify_file(path: Path, reference: dict, conversations, rows, answers_only: bool) -> dict:
    """Load the file back with transformers' GGUF loader and answer as base + adapter did."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    load_seconds = time.time() - started
    prompts, replies, texts = _greedy(model, tokenizer, conversations)
    loss = _loss(model, tokenizer, rows, answers_only)
    del model
    pairs = list(zip(reference["replies"], replies))
    examples = [
        {"prompt": c[-1]["content"], "tuned": t, "gguf": g, "same": r == o}
        for c, t, g, (r, o) in zip(conversations, reference["texts"], texts, pairs)
    ]
    result = {
        "load_seconds": round(load_seconds, 2),
        "prompts": len(pairs),
        "prompt_tokens_identical": sum(a == b for a, b in zip(reference["prompts"], prompts)),
        "replies_identical": sum(r == o for r, o in pairs),
        "first_tokens_agreeing": [_leading_agreement(r, o) for r, o in pairs],
        "reply_lengths": [len(r) for r, _ in pairs],
        "examples": examples,
    }
    if loss is not None and reference.get("loss") is not None:
        result.update(heldout_loss=loss, loss_difference=loss - reference["loss"], loss_rows=len(rows))
    return result


def _probe_conversations(run_dir: Path, config) -> list[list[dict]]:
    probes = read_probes(run_dir)
    prompts = probes[-1]["prompts"] if probes else config.probe_list() or ["Hello!"]
    return [[{"role": "user", "content": p}] for p in prompts]


def _heldout_rows(run_dir: Path, config) -> tuple[list[dict], list[dict], str | None]:
    """(loss rows, training rows) of the run's data as it trained on them; a note when they cannot be read."""
    from .data import load_for_run

    try:
        splits = load_for_run(config, revision=read_status(run_dir).get("data_revision"))
    except Exception as error:  # the loss is then not measured; the replies still are
        return [], [], f"held-out loss not measured: the data could not be read ({type(error).__name__})"
    if splits.format != "messages":
        return [], [], "held-out loss not measured: the data is not conversational"
    return list(splits.validation[:LOSS_ROWS]), list(splits.train), None


# ------------------------------------------------------------------ the export
def export_gguf(run: str | Path, types=None, verify: bool = True, progress: Progress = no_progress) -> dict:
    """Write the run's merged model as GGUF in each type, the Modelfile and README beside them, and (verify) check
    each file by loading it back; the report is returned and written to gguf/gguf.json."""
    import torch
    from peft import PeftModel

    from .models import device_name, end_of_turn_ids, fit_model_to_tokenizer, load_model, load_tokenizer

    plan = plan_export(run, types)  # every refusal before any weight is loaded
    run_dir, target = plan.run_dir, gguf_dir(plan.run_dir)
    # the folder holds this export's files only, as its gguf.json lists them (none while it is being written)
    (target / GGUF_REPORT).unlink(missing_ok=True)
    for stale in target.glob("*.gguf*"):
        stale.unlink()
    config = read_config(run_dir)
    progress(0.01, "Size estimate: " + estimate_text(plan))
    started = time.time()
    progress(0.03, "Loading the base model and the adapter")
    tokenizer = load_tokenizer(adapter_dir(run_dir))
    base = load_model(plan.model_folder)
    fit_model_to_tokenizer(base, tokenizer)
    model = PeftModel.from_pretrained(base, adapter_dir(run_dir)).eval()
    conversations = _probe_conversations(run_dir, config)
    rows, train_rows, loss_note = _heldout_rows(run_dir, config) if verify else ([], [], None)
    reference = {}
    if verify:
        progress(0.08, f"Answering {len(conversations)} probe prompts with base + adapter")
        prompts, replies, texts = _greedy(model, tokenizer, conversations)
        progress(0.14, f"Held-out loss of base + adapter on {len(rows)} rows")
        reference = {
            "prompts": prompts,
            "replies": replies,
            "texts": texts,
            "loss": _loss(model, tokenizer, rows, config.answers_only),
        }
    with torch.no_grad():
        merged = model.merge_and_unload()
    merged.eval()
    prepare_seconds = time.time() - started  # loading, the reference replies and loss, the merge
    name = f"{run_dir.name} ({config.model})"
    entries = []
    span = 0.5 / len(plan.types)
    for index, kind in enumerate(plan.types):
        path = target / gguf_file_name(run_dir, kind)
        offset = 0.2 + span * index
        written = write_gguf(merged, tokenizer, path, kind, name, lambda f, m, o=offset: progress(o + span * f, m))
        entries.append(
            {
                "type": kind,
                "file": path.name,
                "bytes": written["bytes"],
                "estimated_bytes": plan.estimated_bytes[kind],
                "convert_seconds": written["seconds"],
                "tensors": written["tensors"],
                "metadata": read_metadata(path),
            }
        )
    stops = list(dict.fromkeys(tokenizer.convert_ids_to_tokens(end_of_turn_ids(merged, tokenizer))))
    del merged, model, base
    gc.collect()  # one model in memory at a time: the files are loaded back next
    template = ollama_template(tokenizer)
    system = common_system_prompt(train_rows) if train_rows else None
    main_file = next((e for e in entries if e["type"] == DEFAULT_TYPE), entries[0])["file"]  # the Modelfile's FROM
    modelfile = modelfile_text(main_file, template, stops, system)
    (target / MODELFILE).write_text(modelfile, encoding="utf-8")
    report = {
        "run": run_dir.name,
        "model": config.model,
        "architecture": plan.model_type,
        "device": device_name(),
        "created_at": time.time(),
        "prepare_seconds": round(prepare_seconds, 2),
        "files": entries,
        "modelfile": MODELFILE,
        "modelfile_from": main_file,
        "stop": stops,
        "system_prompt": system,
        "template": check_template(template, tokenizer, conversations),
        "chat_template_in_metadata": all(
            e["metadata"]["chat_template"] == gguf_chat_template(tokenizer.chat_template) for e in entries
        ),
        "eos_token": tokenizer.eos_token,
        "notes": [n for n in (loss_note,) if n],
    }
    if verify:
        report["reference"] = {"texts": reference["texts"], "heldout_loss": reference["loss"]}
        span = 0.28 / len(entries)
        for index, entry in enumerate(entries):
            progress(0.7 + span * index, f"Loading {entry['file']} back and answering the probe prompts")
            entry["verification"] = verify_file(
                target / entry["file"], reference, conversations, rows, config.answers_only
            )
            gc.collect()
    report["seconds"] = round(time.time() - started, 1)
    files = [main_file] + [e["file"] for e in entries if e["file"] != main_file]
    (target / "README.md").write_text(readme_text(run_dir.name, files, report), encoding="utf-8")
    write_gguf_report(run_dir, report)
    progress(1.0, f"GGUF export done in {report['seconds']:.0f} s")
    return report


def summary_lines(report: dict) -> list[str]:
    """The export in a few lines: per file its size, conversion time and how it answered when loaded back."""
    lines = []
    for entry in report.get("files", []):
        text = (
            f"- `{entry['file']}`: {human_bytes(entry['bytes'])} (estimated {human_bytes(entry['estimated_bytes'])}), "
            f"written in {entry['convert_seconds']:.1f} s"
        )
        check = entry.get("verification")
        if check:
            text += (
                f"; loaded back with transformers in {check['load_seconds']:.1f} s: "
                f"{check['replies_identical']}/{check['prompts']} probe replies identical to base + adapter "
                f"(greedy, {MAX_NEW_TOKENS} tokens at most)"
            )
            if check.get("loss_difference") is not None:
                text += (
                    f", held-out loss {check['heldout_loss']:.4f} ({check['loss_difference']:+.4f} vs base + "
                    f"adapter on {check['loss_rows']} rows)"
                )
            if check["prompt_tokens_identical"] != check["prompts"]:
                text += (
                    f"; its tokenizer encodes {check['prompt_tokens_identical']}/{check['prompts']} prompts as "
                    "the original does"
                )
        lines.append(text)
    template = report.get("template") or {}
    lines.append(
        f"- Modelfile (FROM `{report.get('modelfile_from')}`): TEMPLATE "
        + (
            f"renders {template.get('checked')} conversations exactly as the chat template does"
            if template.get("matches")
            else f"not derived or not matching ({template.get('note') or str(template.get('differing')) + ' differ'}); "
            "Ollama then uses the template in the file"
        )
        + f"; stop {', '.join(f'`{s}`' for s in report.get('stop', []))}"
        + ("; SYSTEM from the training data" if report.get("system_prompt") else "")
    )
    lines += [f"- {note}" for note in report.get("notes", [])]
    return lines


# ------------------------------------------------------------------ command line
class _Bar:
    """A text progress bar with the time left, on stderr."""

    def __init__(self):
        self.started = time.time()

    def __call__(self, fraction: float, message: str) -> None:
        width = 30
        filled = int(width * min(max(fraction, 0.0), 1.0))
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} {message[:90]:<90}", end="", file=sys.stderr)
        if fraction >= 1.0:
            print(file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sft_space.export_gguf",
        description="Export a run's tuned model (base + adapter merged) as GGUF with an Ollama Modelfile, and check "
        "that the file loads back and answers like the tuned model.",
    )
    parser.add_argument("run_dir", help="the run directory (or a run id)")
    parser.add_argument(
        "--type",
        action="append",
        dest="types",
        metavar="TYPE",
        help=f"weight type, repeatable: {', '.join(TYPES)} (default {DEFAULT_TYPE})",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip loading the files back")
    args = parser.parse_args(argv)
    try:
        plan = plan_export(args.run_dir, args.types)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"GGUF export of {plan.run_dir.name}: {estimate_text(plan)}", file=sys.stderr)
    try:
        report = export_gguf(plan.run_dir, plan.types, verify=not args.no_verify, progress=_Bar())
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"\nerror: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    print(f"Files in {gguf_dir(plan.run_dir)}: {', '.join(e['file'] for e in report['files'])}, Modelfile, README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
