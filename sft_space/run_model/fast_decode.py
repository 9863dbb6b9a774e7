"""One token at a time on a CPU, near the memory bandwidth: a reply's decode steps for Llama-shaped models
(Llama, SmolLM, Mistral, Qwen2) run in a short loop of plain tensor ops over the model's own weight tensors,
instead of through transformers' generate (whose per-token cost on a small model is mostly Python and small
ops, not reading the weights).

The prompt still goes through the model's own forward (its attention mask, its rotary embedding, PEFT's
wrappers, the many-rows dtype of loading._many_rows_in); its keys and values are then copied into preallocated
fp32 buffers, and each following token reads every weight once (torch.mv, which reads half-precision weights
fastest on the CPUs measured) with attention in fp32 (the CPU's half-precision attention kernels are slow for
one query). The next token is chosen as generate chooses it, from the generation config generate would use
(run_model.sampling; transformers' own logits processors where a setting asks for one it does not handle).

`decoder_for` returns None where this path does not apply (a GPU, another architecture, a sliding window,
a rotary embedding that changes with the length, LoRA layers neither merged nor switched off, settings it
does not know): the caller then uses generate. bench/chat_decode.py measures both; tests/test_fast_decode.py
holds it to generate's tokens and logits.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from .sampling import HANDLED, Sampler

FIRST_BUFFER = 256  # positions past the prompt the key/value buffers are first made for
ENABLED = True  # False: every reply through generate (bench/speed.py compares the two)
SUPPORTED_TYPES = {"llama", "mistral", "qwen2"}
STATIC_ROPE = {"default", "linear", "llama3", "yarn"}  # cos/sin do not depend on the sequence's length
KNOWN_SETTINGS = {
    "max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "min_new_tokens",
}  # fmt: skip


class _Layer:
    __slots__ = ("norm1", "eps1", "qkv", "o", "norm2", "eps2", "gate_up", "down")


def _weights(module, tuned: bool):
    """(weight, bias) a projection computes with now, or None when its output is not weight @ x + bias:
    a LoRA layer that adds its adapter at run time (not merged while answering as the tuned model)."""
    import torch

    if module is None:
        return None
    if type(module) is torch.nn.Linear:
        return module.weight, module.bias
    base = getattr(module, "base_layer", None)
    if type(base) is not torch.nn.Linear or not hasattr(module, "lora_A"):
        return None
    active = [name for name in getattr(module, "active_adapters", []) if name in module.lora_A]
    if tuned and active and not module.merged:
        return None
    if not tuned and module.merged:
        return None
    return base.weight, base.bias


def _norm(module):
    weight = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if weight is None or eps is None or type(module).__name__ not in {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"}:
        return None
    return weight.float(), float(eps)


class Decoder:
    """The weight tensors of one model, as the tuned or the base model, for decode steps."""

    def __init__(self, model, language_model, layers: list[_Layer], dtype) -> None:
        config = language_model.config
        self.model = model
        self.language_model = language_model
        self.inner = language_model.model
        self.config = config
        self.layers = layers
        self.dtype = dtype
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = self.head_dim**-0.5
        self.final_norm, self.final_eps = _norm(self.inner.norm)
        self.embed = model.get_input_embeddings()
        self.head = model.get_output_embeddings()

    # ------------------------------------------------------------------ prompt
    def prefill(self, input_ids, attention_mask, capacity: int, limit: int | None = None):
        """The prompt through the model's forward; its keys and values into buffers for `capacity` positions.
        Returns the last position's logits (fp32)."""
        import inspect

        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        named = "cache" if "cache" in inspect.signature(self.language_model.forward).parameters else "past_key_values"
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=True, logits_to_keep=1, **{named: cache}
        )
        length = input_ids.shape[-1]
        self.keys_values = []
        for index in range(len(self.layers)):
            layer_cache = cache.layers[index]
            both = torch.empty((2, self.kv_heads, capacity, self.head_dim), dtype=torch.float32)
            both[0, :, :length] = layer_cache.keys[0]
            both[1, :, :length] = layer_cache.values[0]
            self.keys_values.append(both)
        self.capacity = capacity
        self.limit = limit or capacity  # the most positions this reply can reach (prompt + max_new_tokens + 1)
        self._rotary(capacity)
        rows = self.heads + 2 * self.kv_heads
        # per step, the rotation of every row of q, k and v (v's: cos 1, sin 0), shared by all layers
        self.cos_rows = torch.ones(rows, self.head_dim)
        self.sin_rows = torch.zeros(rows, self.head_dim)
        self.rotated = torch.empty(rows, self.head_dim)
        self.normed = torch.empty(self.config.hidden_size, dtype=self.dtype)
        self.attended = torch.empty(self.heads * self.head_dim, dtype=self.dtype)
        self.length = length
        return out.logits[0, -1].float()

    def _rotary(self, capacity: int) -> None:
        import torch

        positions = torch.arange(capacity).unsqueeze(0)
        probe = torch.zeros(1, 1, dtype=self.dtype)
        cos, sin = self.inner.rotary_emb(probe, positions)  # the model's own, scaling included
        half = self.head_dim // 2
        sign = torch.cat([-torch.ones(half), torch.ones(half)])
        self.cos, self.sin_signed = cos[0].float(), sin[0].float() * sign  # rotate_half as a roll and a sign

    def _grow(self) -> None:
        """Twice the positions (a reply longer than the buffers were made for), never past the reply's limit."""
        import torch

        capacity = min(self.capacity * 2, max(self.limit, self.capacity + 1))
        for index, both in enumerate(self.keys_values):
            grown = torch.empty((2, self.kv_heads, capacity, self.head_dim), dtype=torch.float32)
            grown[:, :, : self.capacity] = both
            self.keys_values[index] = grown
        self.capacity = capacity
        self._rotary(capacity)

    def _plain(self):
        """The scripted layer loop (`_scripted_layers`) with this model's weights as lists, or None where a
        projection is not one product (weights not side by side) or TorchScript is unavailable."""
        if not hasattr(self, "_lists"):
            parts = [(layer.qkv, layer.o, layer.gate_up, layer.down) for layer in self.layers]
            plain = SCRIPTED and all(not isinstance(part, list) for group in parts for part in group)
            self._lists = None
            if plain:
                self._lists = (
                    [layer.norm1 for layer in self.layers],
                    [layer.eps1 for layer in self.layers],
                    [layer.norm2 for layer in self.layers],
                    [layer.eps2 for layer in self.layers],
                    *([group[i][j] for group in parts] for i in range(4) for j in range(2)),
                )
        return _scripted_layers() if self._lists is not None else None

    # ------------------------------------------------------------------ one token
    def step(self, token: int):
        """Append one token; returns the logits (fp32) of the next. The residual stream, the rotary embedding,
        keys, values and attention are fp32 (the model's own forward keeps them in its dtype: this is as
        precise or more); every product reads the half-precision weights once; few ops, into buffers."""
        import torch
        import torch.nn.functional as F

        position = self.length
        if position >= self.capacity:
            self._grow()
        heads, dim, end = self.heads, self.head_dim, position + 1
        rows = heads + 2 * self.kv_heads
        qk = heads + self.kv_heads
        self.cos_rows[:qk] = self.cos[position]
        self.sin_rows[:qk] = self.sin_signed[position]
        rotated, normed = self.rotated, self.normed
        hidden = self.embed(torch.tensor([token]))[0].float()
        plain = self._plain()
        if plain is not None:  # the same ops as below, in one TorchScript function: no Python between them
            hidden = plain(
                hidden, *self._lists, self.keys_values, self.cos_rows, self.sin_rows, rotated, normed,
                self.attended, position, heads, self.kv_heads, dim,
            )  # fmt: skip
            self.length = end
            return self.head(_rms(hidden, self.final_norm, self.final_eps, normed).unsqueeze(0))[0].float()
        for layer, both in zip(self.layers, self.keys_values):
            qkv = _products(layer.qkv, _rms(hidden, layer.norm1, layer.eps1, normed)).view(rows, dim)
            torch.mul(qkv, self.cos_rows, out=rotated)
            rotated.addcmul_(qkv.roll(dim // 2, -1), self.sin_rows)  # the rotary embedding (v's rows: unchanged)
            both[:, :, position] = rotated[heads:].view(2, -1, dim)
            attended = F.scaled_dot_product_attention(
                rotated[:heads].view(1, heads, 1, dim), both[0:1, :, :end], both[1:2, :, :end], enable_gqa=True
            )
            hidden += _products(layer.o, self.attended.copy_(attended.view(-1)))
            gate_up = _products(layer.gate_up, _rms(hidden, layer.norm2, layer.eps2, normed))
            half = gate_up.shape[0] // 2
            hidden += _products(layer.down, F.silu(gate_up[:half]).mul_(gate_up[half:]))
        self.length = end
        return self.head(_rms(hidden, self.final_norm, self.final_eps, normed).unsqueeze(0))[0].float()


SCRIPTED = True  # False: the layer loop in Python (tests compare the two)
_script_lock = threading.Lock()
_script: list = []  # the compiled loop, once per process ([None]: TorchScript failed here)


def _scripted_layers():
    """The decode step's layer loop compiled by TorchScript once per process, or None (then the same loop runs in
    Python). Measured on a 2-vCPU AMD EPYC: 12.9 ms a token instead of 14.5 for SmolLM2-135M, the difference being
    Python's overhead on ~20 small ops a layer; the ops and their results are the same."""
    with _script_lock:
        if not _script:
            try:
                import warnings

                import torch

                from .decode_loop import layer_loop

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # deprecated in favour of torch.compile, which needs a compiler
                    _script.append(torch.jit.script(layer_loop))
            except Exception:  # noqa: BLE001 - a torch without TorchScript: the Python loop
                _script.append(None)
    return _script[0]


def _rms(hidden, weight, eps: float, out):
    """The model's RMSNorm of one fp32 vector, into `out` (the weights' dtype): the sum of squares read back as a
    Python number (a CPU tensor: no wait), then two multiplications, the second casting as it writes (half the
    time of F.rms_norm and a cast at this size)."""
    import math

    import torch

    scale = 1.0 / math.sqrt(float(hidden.dot(hidden)) / hidden.shape[0] + eps)
    return torch.mul(torch.mul(hidden, scale), weight, out=out)


def _side_by_side(found: list[tuple]):
    """One (weight, bias) for projections of the same input whose weights lie one after another in memory (as
    fuse_projections leaves them), else the list as it is."""
    import torch

    if len(found) == 1:
        return found[0]
    weights = [weight for weight, _ in found]
    first = weights[0]
    offset, adjacent = first.storage_offset(), True
    for weight in weights:
        adjacent &= weight.is_contiguous() and weight.storage_offset() == offset
        adjacent &= weight.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        offset += weight.numel()
    if not adjacent:
        return found
    rows = sum(weight.shape[0] for weight in weights)
    joined = torch.empty(0, dtype=first.dtype).set_(
        first.untyped_storage(), first.storage_offset(), (rows, first.shape[1])
    )
    if all(bias is None for _, bias in found):
        return joined, None
    biases = [torch.zeros(w.shape[0], dtype=w.dtype) if b is None else b for w, b in found]
    return joined, torch.cat(biases)


def fuse_projections(model) -> None:
    """Put the weights of projections that read the same input (attention's q, k, v; the MLP's gate and up) one
    after another in memory, each module's weight a view of the block, so a decode step reads them with one
    product instead of several (about 1 ms per token of 14 on a 2-core CPU for SmolLM2-135M). The modules work
    as before; merging an adapter writes into the same memory."""
    import torch

    language_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    for block in getattr(getattr(language_model, "model", None), "layers", []):
        for owner, parts in ((getattr(block, "self_attn", None), ("q_proj", "k_proj", "v_proj")),
                             (getattr(block, "mlp", None), ("gate_proj", "up_proj"))):  # fmt: skip
            modules = [getattr(owner, part, None) for part in parts]
            linears = [getattr(m, "base_layer", m) for m in modules]
            if not all(type(m) is torch.nn.Linear for m in linears):
                continue
            weights = [m.weight for m in linears]
            if len({(w.dtype, w.shape[1], w.device) for w in weights}) != 1:
                continue
            block_weights = torch.cat([w.data for w in weights])
            start = 0
            for weight in weights:
                weight.data = block_weights[start : start + weight.shape[0]]
                start += weight.shape[0]


def _products(parts, x):
    """x through one or more projections whose outputs are concatenated: one torch.mv where their weights lie
    side by side in memory (fuse_projections), else one per projection."""
    import torch

    if isinstance(parts, list):
        return torch.cat([_products(part, x) for part in parts])
    weight, bias = parts
    out = torch.mv(weight, x)
    return out if bias is None else out.add_(bias)


def decoder_for(model, tuned: bool, prompt_length: int, capacity: int) -> Decoder | None:
    """A Decoder for `model` as it answers now (tuned: adapter merged; else the adapter out), or None where
    this path does not apply and generate should run."""
    import torch

    if torch.cuda.is_available() or getattr(model, "device", torch.device("cpu")).type != "cpu":
        return None
    language_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(language_model, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED_TYPES:
        return None
    if getattr(config, "hidden_act", None) != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return None
    window = getattr(config, "sliding_window", None)
    if window is not None and (getattr(config, "use_sliding_window", True) and capacity > window):
        return None
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if (rope.get("rope_type") or rope.get("type") or "default") not in STATIC_ROPE:
        return None
    inner = getattr(language_model, "model", None)
    if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(inner, "layers"):
        return None
    if getattr(config, "num_attention_heads", 0) % (getattr(config, "num_key_value_heads", None) or 1):
        return None
    dtype = next(language_model.parameters()).dtype
    layers = []
    for block in inner.layers:
        layer = _Layer()
        attention, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
        if attention is None or mlp is None or hasattr(attention, "q_norm"):
            return None
        norms = (
            _norm(getattr(block, "input_layernorm", None)),
            _norm(getattr(block, "post_attention_layernorm", None)),
        )
        if None in norms:
            return None
        (layer.norm1, layer.eps1), (layer.norm2, layer.eps2) = norms
        for name, owner, parts in (
            ("qkv", attention, ("q_proj", "k_proj", "v_proj")),
            ("o", attention, ("o_proj",)),
            ("gate_up", mlp, ("gate_proj", "up_proj")),
            ("down", mlp, ("down_proj",)),
        ):
            found = [_weights(getattr(owner, part, None), tuned) for part in parts]
            if any(f is None or f[0].dtype != dtype for f in found):
                return None
            setattr(layer, name, _side_by_side(found))
        layers.append(layer)
    if _norm(getattr(inner, "norm", None)) is None or prompt_length >= capacity:
        return None
    return Decoder(model, language_model, layers, dtype)


def generate(
    model,
    tuned: bool,
    inputs: dict,
    settings: dict[str, Any],
    eos_token_ids: list[int],
    streamer,
    stopped: Callable[[], bool] | threading.Event,
) -> bool:
    """Generate a reply into `streamer` (put/end, as generate drives it). Returns False, having done nothing,
    where this path does not apply (the caller then calls generate)."""
    import copy

    import torch

    if not ENABLED or set(settings) - KNOWN_SETTINGS:
        return False
    input_ids, attention_mask = inputs["input_ids"], inputs.get("attention_mask")
    if input_ids.shape[0] != 1:
        return False
    language_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = copy.deepcopy(language_model.generation_config)
    config.update(**settings)
    config.eos_token_id = list(eos_token_ids)
    max_new = int(config.max_new_tokens or 0)
    prompt_length = input_ids.shape[-1]
    decoder = decoder_for(model, tuned, prompt_length, prompt_length + max_new + 1)
    if decoder is None or max_new <= 0:
        return False
    try:
        config._eos_token_tensor = torch.tensor(config.eos_token_id)  # as generate prepares it
        processors = language_model._get_logits_processor(
            generation_config=config,
            input_ids_seq_length=prompt_length,
            encoder_input_ids=input_ids,
            prefix_allowed_tokens_fn=None,
            logits_processor=None,
            device="cpu",
            model_kwargs={"attention_mask": attention_mask},
        )
    except Exception:  # a transformers whose private helper changed: generate still works
        return False
    if {type(processor).__name__ for processor in processors} <= HANDLED:
        choose = Sampler(config, eos_token_ids)  # the same choice without sorting the vocabulary per token
    else:

        def choose(logits, sequence, produced: int) -> int:
            scores = processors(sequence, logits.unsqueeze(0))
            if config.do_sample:
                return int(torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)[0, 0])
            return int(torch.argmax(scores, dim=-1)[0])

    is_stopped = stopped.is_set if isinstance(stopped, threading.Event) else stopped
    ends = set(eos_token_ids)
    streamer.put(input_ids.cpu())
    sequence = input_ids
    # buffers for a typical reply, doubled when one runs longer: max_new_tokens may be 4,096 for a 256-token reply
    limit = prompt_length + max_new + 1
    logits = decoder.prefill(input_ids, attention_mask, prompt_length + min(max_new, FIRST_BUFFER) + 1, limit)
    for produced in range(max_new):
        token = choose(logits, sequence, produced)
        sequence = torch.cat([sequence, torch.tensor([[token]])], dim=-1)
        streamer.put(torch.tensor([token]))
        if token in ends or is_stopped() or produced + 1 == max_new:
            break
        logits = decoder.step(token)
    streamer.end()
    return True
