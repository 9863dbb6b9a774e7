"""The tokenizer in a GGUF file's metadata: a byte-level BPE vocabulary with token types (added ChatML markers stay
whole control tokens), merges, bos/eos/pad ids, and the chat template without transformers' generation markers.
"""

from __future__ import annotations

import json
import re


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
