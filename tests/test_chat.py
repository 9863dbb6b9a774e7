"""Chat with a trained tiny model: streaming, the adapter switched on and off, one model copy."""

import torch

from sft_space import GENERATING_MARK, home
from sft_space.run_model import FP32_ATTENTION, answering_as, generate_batch, load_chat_model, unload
from sft_space.run_model.chat import reply, stream_reply


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
        # attention math in fp32 (the CPU's half-precision attention kernels are slow one token at a time); the
        # comparison with the plain fp16 model below holds it to the same answers
        assert loaded.model.config._attn_implementation == FP32_ATTENTION
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

    from sft_space.run_model import thread as chat
    from sft_space.runs import liveness

    monkeypatch.setattr(liveness, "device_kind", lambda: "cpu")
    monkeypatch.setattr(liveness, "_children", {})  # only this test's stand-in for a training run, not other tests'
    monkeypatch.setattr(chat, "generation_threads", liveness.generation_threads)
    every_core = chat.on_generation_thread(torch.get_num_threads)
    assert every_core == chat._default_threads()
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    liveness._children["a-training-run"] = trainer
    try:
        assert liveness.generation_threads() == 1
        assert chat.on_generation_thread(torch.get_num_threads) == 1
        assert chat.on_generation_thread(lambda: threading.current_thread().name).startswith(chat.GENERATION_THREAD)
        # while the app generates, the mark says so: the training process then trains on one thread less
        mark = home() / GENERATING_MARK
        assert chat.on_generation_thread(mark.exists) and not mark.exists()
    finally:
        trainer.kill()
        trainer.wait()
    assert liveness.generation_threads() is None
    assert chat.on_generation_thread(torch.get_num_threads) == every_core
    assert not chat.on_generation_thread(mark.exists)  # no run trains: no mark


def test_training_gives_up_a_core_while_the_app_generates(tmp_path, monkeypatch):
    """The training side of the mark: one thread less at the next step while it is fresh, all of them again after."""
    import os

    from sft_space.training.callbacks import RunDirCallback
    from sft_space.training.run_writer import StopRequested

    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path))
    before = torch.get_num_threads()
    callback = RunDirCallback(tmp_path, {"started_at": 0.0}, StopRequested())
    callback.cpu_threads = 2
    mark = tmp_path / GENERATING_MARK
    try:
        callback._share_the_cpu()
        assert torch.get_num_threads() == 2
        mark.touch()
        callback._share_the_cpu()
        assert torch.get_num_threads() == 1
        os.utime(mark, (0, 0))  # left behind by an app that died mid-reply long ago: ignored
        callback._share_the_cpu()
        assert torch.get_num_threads() == 2
        mark.touch()
        callback._share_the_cpu()
        mark.unlink()
        callback._share_the_cpu()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_probe_replies_with_the_adapter_merged_leave_training_where_it_was(tiny_model, tmp_path):
    """During training the probes merge the adapter into the (fp32) weights to answer faster: the replies are
    the unmerged model's, and afterwards every base weight is bit for bit as before, the LoRA weights still
    train (require grad, no graph attached) and the forward pass gives the same logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sft_space.training.probes import ProbeCallback
    from sft_space.training.run_writer import StopRequested

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained-looking adapter: replies differ from the base model's
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = tokenizer("Table for two at 7pm", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    probes = [[{"role": "user", "content": "Table for two at 7pm"}], [{"role": "user", "content": "Cancel my mugs"}]]
    callback = ProbeCallback(tmp_path, probes, {}, StopRequested())
    merged, merged_ends, _ = callback._generate(model, tokenizer, 12)
    unmerged, unmerged_ends, _ = callback._generate(model, tokenizer, 12, merge=False)
    with model.disable_adapter():
        base, _, _ = callback._generate(model, tokenizer, 12, merge=False)
    assert merged == unmerged and merged_ends == unmerged_ends
    assert merged != base  # the adapter was in the merged replies
    assert model.training
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.grad_fn is None and p.requires_grad == ("lora_" in name), name
    with torch.no_grad():
        assert torch.equal(model(ids).logits, logits)


def test_many_replies_in_batches_keep_their_order_and_match_one_at_a_time(trained_run):
    from sft_space.run_model import generate_many, generate_once

    loaded = load_chat_model(trained_run)
    try:
        prompts = [
            [{"role": "user", "content": text}]
            for text in ["Table for two at 7pm", "hi", "Please cancel my order of AA batteries. I'm Tom.", "ok"]
        ]
        seen = []
        many = generate_many(loaded, prompts, True, 10, batch_size=3, progress=lambda d, t: seen.append((d, t)))
        assert seen == [(3, 4), (4, 4)]
        ones = [generate_once(loaded, p, True, 10) for p in prompts]
        assert [m["text"] for m in many] == [o["text"] for o in ones]
        assert [m["ended_turn"] for m in many] == [o["ended_turn"] for o in ones]
    finally:
        unload()


def test_another_visitors_reply_comes_between_the_batches_of_an_evaluation(trained_run):
    """Evaluate's replies and held-out loss take the model a batch (or a few rows) at a time, each its own turn on
    the generation thread: a chat reply asked for during an evaluation is answered before the evaluation ends (it
    waited for the whole evaluation of a model before: 454 s behind four long prompts)."""
    import threading

    from sft_space.run_model import BATCH_PROMPT_TOKENS, generate_many, heldout_loss, token_batches
    from sft_space.run_model.chat import reply

    loaded = load_chat_model(trained_run)
    try:
        prompts = [[{"role": "user", "content": f"Table for {n} at 7pm, I'm Ann"}] for n in range(40)]
        answered_at: list[int] = []
        seen: list[int] = []
        chat = threading.Thread(
            target=lambda: (
                reply(loaded, [{"role": "user", "content": "hi"}], max_new_tokens=4),
                answered_at.append(len(seen)),
            )
        )

        def progress(done: int, total: int) -> None:
            seen.append(done)
            if len(seen) == 1:
                chat.start()  # another visitor asks while the evaluation goes on

        generate_many(loaded, prompts, True, 6, batch_size=4, progress=progress)
        chat.join()
        assert len(seen) == 10 and answered_at and answered_at[0] < 10, (seen, answered_at)
        rows = [{"messages": p + [{"role": "assistant", "content": "ok"}]} for p in prompts[:12]]
        whole = heldout_loss(loaded, rows, True)
        parts = [heldout_loss(loaded, rows[i : i + 1], True) for i in range(12)]
        total = sum(p["loss"] * p["tokens"] for p in parts)
        assert abs(whole["loss"] - total / whole["tokens"]) < 1e-4 and whole["rows"] == 12
    finally:
        unload()
    # long prompts go one at a time: a batch holds at most BATCH_PROMPT_TOKENS of padded prompt
    assert BATCH_PROMPT_TOKENS == 4096 and token_batches([0, 1, 2, 3], [10, 20, 3000, 3000], 16) == [[0, 1], [2], [3]]
    assert token_batches([0, 1, 2], [10, 10, 10], 2) == [[0, 1], [2]]


def test_replies_asked_during_an_evaluation_never_unpad_its_batches(trained_run):
    """Every use of the tokenizer runs on the generation thread: a reply tokenised elsewhere while an evaluation
    batch was being padded switched the fast tokenizer's padding off under it ('Unable to create tensor', seen by
    bench/load.py as a failed Evaluate beside a visitor's chat)."""
    import threading

    from sft_space.run_model import generate_many
    from sft_space.run_model.chat import reply

    loaded = load_chat_model(trained_run)
    stop = threading.Event()
    errors: list[BaseException] = []

    def chatter() -> None:
        while not stop.is_set():
            try:
                reply(loaded, [{"role": "user", "content": "hi " * (1 + len(errors))}], max_new_tokens=1)
            except BaseException as error:  # noqa: BLE001 (recorded for the assertion)
                errors.append(error)

    threads = [threading.Thread(target=chatter) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        prompts = [[{"role": "user", "content": "Table for two " * (1 + n % 7)}] for n in range(64)]
        for _ in range(3):
            answers = generate_many(loaded, prompts, True, 1, batch_size=8)
            assert len(answers) == 64
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        unload()
    assert not errors, errors[:1]
