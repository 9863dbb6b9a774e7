"""Chat with a trained tiny model: streaming, the adapter switched on and off, one model copy."""

import torch

from sft_space.chat import generate_batch, load_chat_model, reply, stream_reply, unload


def test_adapter_on_and_off_give_different_logits_and_replies(trained_run):
    loaded = load_chat_model(trained_run)
    try:
        assert load_chat_model(trained_run) is loaded  # cached between messages
        messages = [{"role": "user", "content": "Table for two at 7pm"}]
        ids = loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.no_grad():
            tuned = loaded.model(ids).logits
            with loaded.model.disable_adapter():
                base = loaded.model(ids).logits
            again = loaded.model(ids).logits
        assert not torch.allclose(tuned, base)
        assert torch.equal(tuned, again)  # the adapter is back on after a base reply

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
