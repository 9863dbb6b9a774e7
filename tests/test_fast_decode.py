"""run_model.fast_decode and run_model.sampling held to transformers' generate: the same greedy tokens, the same
logits at every step, the same distribution to draw from, on small random models of each supported architecture
(grouped-query attention, biases, tied heads), as the tuned and as the base model, with the projections fused;
refused where it does not apply."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from sft_space.run_model import fast_decode
from sft_space.run_model.merging import merge_exactly, unmerge_exactly
from sft_space.run_model.sampling import CANDIDATES, Sampler


def small_model(architecture: str = "llama", seed: int = 0, **extra):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_class, model_class = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[architecture]
    settings = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,  # logits far apart: greedy choices are not near-ties
        tie_word_embeddings=architecture == "qwen2",
        eos_token_id=96,
        pad_token_id=0,
        bos_token_id=None,
    )
    settings.update(extra)
    torch.manual_seed(seed)
    model = model_class(config_class(**settings)).eval()
    model.generation_config.eos_token_id = 96
    return model


def with_adapter(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    return get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()


class Collect:
    """A streamer that keeps the token ids (the first put is the prompt, as generate does)."""

    def __init__(self) -> None:
        self.puts: list[list[int]] = []
        self.ended = False

    def put(self, value) -> None:
        self.puts.append(value.view(-1).tolist())

    def end(self) -> None:
        self.ended = True

    @property
    def tokens(self) -> list[int]:
        return [t for put in self.puts[1:] for t in put]


PROMPT = torch.tensor([[5, 17, 33, 2, 81, 44, 9, 60, 12]])


def hf_tokens(model, settings: dict, eos=(96,)) -> list[int]:
    with torch.inference_mode():
        out = model.generate(
            input_ids=PROMPT, attention_mask=torch.ones_like(PROMPT), pad_token_id=0, eos_token_id=list(eos), **settings
        )
    return out[0, PROMPT.shape[1] :].tolist()


def fast_tokens(model, tuned: bool, settings: dict, eos=(96,), stop=None) -> Collect:
    streamer = Collect()
    inputs = {"input_ids": PROMPT, "attention_mask": torch.ones_like(PROMPT)}
    with torch.inference_mode():
        assert fast_decode.generate(model, tuned, inputs, settings, list(eos), streamer, stop or threading.Event())
    assert streamer.ended and streamer.puts[0] == PROMPT[0].tolist()
    return streamer


GREEDY = {"max_new_tokens": 40, "do_sample": False, "repetition_penalty": 1.0}


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_greedy_tokens_are_generates_for_the_tuned_and_the_base_model(architecture):
    model = with_adapter(small_model(architecture))
    fast_decode.fuse_projections(model)
    merge_exactly(model)
    tuned = hf_tokens(model, GREEDY)
    assert len(tuned) >= 10, "the model ends at once: nothing to compare"
    assert fast_tokens(model, True, GREEDY).tokens == tuned
    unmerge_exactly(model)
    with model.disable_adapter():
        base = hf_tokens(model, GREEDY)
        assert fast_tokens(model, False, GREEDY).tokens == base
    assert base != tuned, "the adapter changes nothing: the test could not tell the two apart"


def test_fused_projections_are_views_and_merging_writes_through_them():
    model = with_adapter(small_model())
    attention = model.get_base_model().model.layers[0].self_attn
    before = [attention.q_proj.base_layer.weight.clone(), attention.k_proj.base_layer.weight.clone()]
    fast_decode.fuse_projections(model)
    q, k = attention.q_proj.base_layer.weight, attention.k_proj.base_layer.weight
    assert torch.equal(q, before[0]) and torch.equal(k, before[1])
    assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr()
    assert k.storage_offset() == q.storage_offset() + q.numel()
    merge_exactly(model)
    decoder = fast_decode.decoder_for(model, True, 4, 16)
    joined, _ = decoder.layers[0].qkv
    rows = q.shape[0]
    assert torch.equal(joined[:rows], q) and not torch.equal(joined[:rows], before[0])  # the merged weights
    unmerge_exactly(model)
    assert torch.equal(q, before[0])


def test_each_steps_logits_are_the_models_own():
    model = small_model(num_hidden_layers=2)
    fast_decode.fuse_projections(model)
    tokens = [7, 30, 64, 11, 90, 3]
    with torch.inference_mode():
        decoder = fast_decode.decoder_for(model, True, PROMPT.shape[1], PROMPT.shape[1] + len(tokens) + 1)
        logits = decoder.prefill(PROMPT, torch.ones_like(PROMPT), PROMPT.shape[1] + len(tokens) + 1)
        sequence = PROMPT
        for token in tokens:
            expected = model(input_ids=sequence).logits[0, -1].float()
            assert torch.allclose(logits, expected, atol=1e-4), (logits - expected).abs().max()
            sequence = torch.cat([sequence, torch.tensor([[token]])], dim=-1)
            logits = decoder.step(token)


def test_half_precision_steps_stay_close_to_the_models_own():
    model = small_model().to(torch.float16)
    fast_decode.fuse_projections(model)
    with torch.inference_mode():
        decoder = fast_decode.decoder_for(model, True, PROMPT.shape[1], PROMPT.shape[1] + 2)
        decoder.prefill(PROMPT, torch.ones_like(PROMPT), PROMPT.shape[1] + 2)
        logits = decoder.step(42)
        expected = model(input_ids=torch.cat([PROMPT, torch.tensor([[42]])], dim=-1)).logits[0, -1].float()
    assert torch.argmax(logits) == torch.argmax(expected)
    assert (logits - expected).abs().max() < 0.05 * expected.abs().max()


def test_stops_at_end_of_turn_at_the_limit_and_when_asked():
    model = small_model()
    greedy = hf_tokens(model, GREEDY)
    end = greedy[5]  # a token the reply reaches: treated as the end of turn, the reply stops there
    short = fast_tokens(model, True, GREEDY, eos=(end,)).tokens
    assert short == hf_tokens(model, GREEDY, eos=(end,)) and short[-1] == end and len(short) <= 6
    assert fast_tokens(model, True, {**GREEDY, "max_new_tokens": 3}).tokens == greedy[:3]
    stop = threading.Event()
    stop.set()  # Stop pressed (or the page closed) before the first token: one token, then the end
    assert len(fast_tokens(model, True, GREEDY, stop=stop).tokens) == 1


def test_min_new_tokens_and_repetition_penalty_as_generate():
    model = small_model()
    settings = {**GREEDY, "repetition_penalty": 1.3, "min_new_tokens": 12}
    first = hf_tokens(model, GREEDY)[0]
    expected = hf_tokens(model, settings, eos=(first,))
    assert fast_tokens(model, True, settings, eos=(first,)).tokens == expected
    assert first not in expected[:12]


def test_refused_where_it_does_not_apply():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    model = small_model()
    assert fast_decode.decoder_for(model, True, 4, 16) is not None
    lora = with_adapter(small_model())
    assert fast_decode.decoder_for(lora, True, 4, 16) is None  # tuned, adapter not merged: LoRA runs per token
    assert fast_decode.decoder_for(lora, False, 4, 16) is not None  # base: the adapter is switched off
    merge_exactly(lora)
    assert fast_decode.decoder_for(lora, False, 4, 16) is None  # base asked while merged
    qwen3 = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=97,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
        )  # fmt: skip
    )
    assert fast_decode.decoder_for(qwen3, True, 4, 16) is None  # q/k norms
    dynamic = small_model(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    assert fast_decode.decoder_for(dynamic, True, 4, 16) is None  # its rotary embedding changes with the length
    streamer = Collect()
    inputs = {"input_ids": PROMPT, "attention_mask": torch.ones_like(PROMPT)}
    assert not fast_decode.generate(model, True, inputs, {**GREEDY, "num_beams": 2}, [96], streamer, threading.Event())
    assert streamer.puts == []  # nothing done: the caller runs generate


def hf_distribution(model, settings: dict, logits, sequence, produced: int, eos=(96,)):
    from transformers import GenerationConfig

    config = copy.deepcopy(GenerationConfig(**settings))
    config.eos_token_id = list(eos)
    config._eos_token_tensor = torch.tensor(list(eos))
    processors = model._get_logits_processor(
        generation_config=config,
        input_ids_seq_length=sequence.shape[1] - produced,
        encoder_input_ids=sequence,
        prefix_allowed_tokens_fn=None,
        logits_processor=None,
        device="cpu",
        model_kwargs={"attention_mask": torch.ones_like(sequence)},
    )
    return torch.softmax(processors(sequence, logits.unsqueeze(0).clone())[0], dim=-1), config


@pytest.mark.parametrize(
    "settings",
    [
        {"do_sample": True, "temperature": 0.7, "top_p": 0.9},
        {"do_sample": True, "temperature": 1.3, "top_p": 0.5, "repetition_penalty": 1.2},
        {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.95},
        {"do_sample": True, "temperature": 0.9, "top_k": 5},
        {"do_sample": True, "temperature": 0.8},
        {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "min_new_tokens": 4},
    ],
)
@pytest.mark.parametrize("spread", [4.0, 0.05])  # peaked, and nearly flat (the nucleus outside the candidates)
def test_sampling_draws_from_generates_distribution(settings, spread):
    model = small_model()
    vocabulary = 4 * CANDIDATES + 31
    torch.manual_seed(3)
    for trial in range(5):
        logits = torch.randn(vocabulary) * spread
        sequence = torch.randint(0, vocabulary, (1, 12))
        produced = trial
        expected, config = hf_distribution(
            model, settings, logits, sequence, produced, eos=(int(torch.argmax(logits)),)
        )
        index, probs = Sampler(config, config.eos_token_id).distribution(logits, sequence, produced)
        ours = torch.zeros(vocabulary)
        ours[index] = probs / probs.sum()
        assert set(torch.nonzero(ours).view(-1).tolist()) == set(torch.nonzero(expected).view(-1).tolist())
        assert torch.allclose(ours, expected, atol=1e-5)


def test_sampled_replies_follow_the_seed():
    model = small_model()
    settings = {"max_new_tokens": 20, "do_sample": True, "temperature": 1.0, "top_p": 0.9}
    torch.manual_seed(11)
    first = fast_tokens(model, True, settings).tokens
    torch.manual_seed(11)
    assert fast_tokens(model, True, settings).tokens == first
    torch.manual_seed(12)
    assert fast_tokens(model, True, settings).tokens != first


def test_a_reply_longer_than_the_first_buffers_grows_them(monkeypatch):
    model = small_model()
    monkeypatch.setattr(fast_decode, "FIRST_BUFFER", 3)  # the buffers double three times in a 40-token reply
    assert fast_tokens(model, True, GREEDY).tokens == hf_tokens(model, GREEDY)


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_the_compiled_layer_loop_is_the_python_loop(architecture, monkeypatch):
    """Decoder.step runs its layer loop as one TorchScript function where every projection is one product
    (decode_loop.layer_loop): the same logits as the Python loop, step after step (biases: Qwen2), and it is the
    path taken; where a projection is several products (weights not side by side) the Python loop runs."""
    model = small_model(architecture, num_hidden_layers=2)
    fast_decode.fuse_projections(model)
    tokens = [7, 30, 64, 11, 90, 3]

    def logits_of(scripted: bool):
        monkeypatch.setattr(fast_decode, "SCRIPTED", scripted)
        out = []
        with torch.inference_mode():
            decoder = fast_decode.decoder_for(model, True, PROMPT.shape[1], PROMPT.shape[1] + len(tokens) + 1)
            decoder.prefill(PROMPT, torch.ones_like(PROMPT), PROMPT.shape[1] + len(tokens) + 1)
            out = [decoder.step(token) for token in tokens]
        return decoder, out

    compiled, scripted = logits_of(True)
    assert compiled._plain() is fast_decode._scripted_layers() is not None
    plain, python = logits_of(False)
    assert plain._plain() is None
    for mine, theirs in zip(scripted, python):
        assert torch.allclose(mine, theirs, atol=1e-6), (mine - theirs).abs().max()

    separate = small_model(architecture, num_hidden_layers=2)  # not fused: q, k, v three products
    monkeypatch.setattr(fast_decode, "SCRIPTED", True)
    decoder = fast_decode.decoder_for(separate, True, PROMPT.shape[1], PROMPT.shape[1] + 2)
    assert isinstance(decoder.layers[0].qkv, list) and decoder._plain() is None
