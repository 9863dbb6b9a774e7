"""GGUF tensors: each weight's GGUF name and type (llama.cpp's rules: norms and biases f32, a row the quantization
block does not divide f16, a tied output head left out), the size a file of each type will have (from the
safetensors headers, before any weight is loaded), and writing the merged model's tensors and metadata with the
`gguf` package's writer (q/k rows permuted for the llama architecture as llama.cpp's converter does).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from .. import Progress, no_progress
from ..models.facts import read_safetensors_header
from .gguf_tokenizer import tokenizer_metadata

# transformers' model_type -> the gguf package's MODEL_ARCH member: the architectures written and read back
ARCHITECTURES = {"llama": "LLAMA", "qwen2": "QWEN2"}


def safetensors_shapes(folder: Path) -> dict[str, list[int]]:
    """Every tensor's shape, read from the safetensors headers alone (nothing is loaded)."""
    shapes = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        shapes.update({name: shape for name, (_, shape) in read_safetensors_header(path).items()})
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
