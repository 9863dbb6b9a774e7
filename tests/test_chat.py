"""Chat with a trained tiny model: streaming, the adapter switched on and off, one model copy."""

import torch

from sft_space.chat import answering_as, generate_batch, load_chat_model, reply, stream_reply, unload


def test_adapter_on_and_off_give_different_logits_and_replies(trained_run):
    loaded = load_chat_model(trained_run)
    try:
        assert load_chat_model(trained_run) is loaded  # cached between messages
        messages = [{"role": "user", "content": "Table for two at 7pm"}]
        ids = loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.no_grad():
            with answering_as(loaded, True):
                tuned = loaded.model(ids).logits
            with answering_as(loaded, False):
                base = loaded.model(ids).logits
            with answering_as(loaded, True):
                again = loaded.model(ids).logits
        assert not torch.allclose(tuned, base, atol=1e-2)
        assert torch.equal(tuned, again)  # the adapter is back in after a base reply

        partials = list(stream_reply(loaded, messages, do_sample=False, max_new_tokens=12))
        assert len(partials) >= 2 and all(b.startswith(a) for a, b in zip(partials, partials[1:]))
        sampled = [
            reply(
                loaded, messages, seed=3, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=12, use_adapter=use
            )
            for use in (True, True, False)
        ]
        assert sampled[0] == sampled[1]  # seeded: the same reply twice
        batch = generate_batch(loaded.model, loaded.tokenizer, [messages, messages], max_new_tokens=8)
        assert len(batch) == 2 and batch[0] == batch[1]
    finally:
        unload()


def test_closing_the_stream_stops_generation(trained_run):
    loaded = load_chat_model(trained_run)
    try:
        stream = stream_reply(loaded, [{"role": "user", "content": "hello"}], do_sample=False, max_new_tokens=400)
        first = next(stream)
        stream.close()  # what Gradio does when the user presses Stop
        assert isinstance(first, str)
    finally:
        unload()


def logits_of(loaded, ids, use_adapter: bool):
    with torch.no_grad(), answering_as(loaded, use_adapter):
        return loaded.model(ids).logits.float()


def test_half_weights_merge_for_tuned_replies_and_come_back_for_base_replies(trained_run, monkeypatch):
    """fp16 weights (what this CPU generates fastest), the adapter merged into them for tuned replies and taken
    out for base replies: one copy, and a hundred switches leave both answers where they were."""
    from transformers import AutoModelForCausalLM

    import sft_space.models
    from sft_space.rundir import read_config

    monkeypatch.setattr(sft_space.models, "generation_dtypes", lambda: ("float16", "bfloat16"))
    unload()
    loaded = load_chat_model(trained_run)
    try:
        assert loaded.dtype == "float16" and next(loaded.model.parameters()).dtype == torch.float16
        messages = [{"role": "user", "content": "Table for two at 7pm"}]
        ids = loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        tuned, base = logits_of(loaded, ids, True), logits_of(loaded, ids, False)
        assert not loaded.merged  # base replies: the adapter is out of the weights
        weights = {n: p.detach().clone() for n, p in loaded.model.named_parameters() if "base_layer" in n}
        logits_of(loaded, ids, True)
        assert loaded.merged  # tuned replies: in them (no LoRA matmuls per token)
        # fp16 rounding would move some weights by a last bit on each switch in and out: merging remembers them,
        # so a hundred switches leave the base weights bit for bit as loaded, and both answers exactly as before
        for _ in range(100):
            logits_of(loaded, ids, True), logits_of(loaded, ids, False)
        assert all(torch.equal(p, weights[n]) for n, p in loaded.model.named_parameters() if n in weights)
        assert torch.equal(logits_of(loaded, ids, True), tuned)
        assert torch.equal(logits_of(loaded, ids, False), base)
        # base replies are the base model's: the same weights loaded on their own, in the same dtype
        plain = AutoModelForCausalLM.from_pretrained(read_config(trained_run).model, dtype=torch.float16)
        with torch.no_grad():
            assert torch.allclose(plain(ids).logits.float(), base, atol=1e-2)
        # merged tuned replies are base + adapter: the same as through the unmerged LoRA layers
        loaded.merge = False
        unmerged = logits_of(loaded, ids, True)
        assert not loaded.merged
        assert torch.allclose(unmerged, tuned, atol=2e-2), (unmerged - tuned).abs().max()
        assert (unmerged - base).abs().max() > 10 * (unmerged - tuned).abs().max()  # the adapter, not noise
        # a whole prompt at once multiplies in bf16; one token at a time in fp16: the same next-token logits
        assert ids.shape[1] > 4
        with torch.no_grad(), answering_as(loaded, False):
            whole = loaded.model(ids).logits[:, -1].float()
            out = loaded.model(ids[:, :1], use_cache=True)
            for position in range(1, ids.shape[1]):
                out = loaded.model(ids[:, position : position + 1], past_key_values=out.past_key_values, use_cache=True)
        assert torch.allclose(out.logits[:, -1].float(), whole, atol=5e-2), (out.logits[:, -1] - whole).abs().max()
    finally:
        unload()


def test_replies_take_one_core_while_a_run_trains_on_the_cpu(monkeypatch):
    """Every model computation of the app runs on one generation thread; while a run the app started trains on
    the CPU it gets one thread (training keeps the others), and every core again afterwards."""
    import subprocess
    import sys
    import threading

    from sft_space import chat, runs

    monkeypatch.setattr(runs, "device_kind", lambda: "cpu")
    monkeypatch.setattr(chat, "generation_threads", runs.generation_threads)
    every_core = chat.on_generation_thread(torch.get_num_threads)
    assert every_core == chat._default_threads()
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    monkeypatch.setitem(runs._children, "a-training-run", trainer)
    try:
        assert runs.generation_threads() == 1
        assert chat.on_generation_thread(torch.get_num_threads) == 1
        assert chat.on_generation_thread(lambda: threading.current_thread().name).startswith(chat.GENERATION_THREAD)
        assert runs.training_env()["OMP_WAIT_POLICY"] == "PASSIVE"  # its waiting threads sleep, not spin
    finally:
        trainer.kill()
        trainer.wait()
    assert runs.generation_threads() is None
    assert chat.on_generation_thread(torch.get_num_threads) == every_core
