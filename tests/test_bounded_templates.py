"""A model's chat template is a stranger's code: in the app process every render of it is bounded per call (time,
memory, output), whatever the conversation, and another visitor's render goes on meanwhile (sft_space/host/templates).

The templates here behave only on a chosen word, as a hostile Hub model's would: the check before loading renders a
fixed sample and passes them."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from sft_space.host import templates
from sft_space.host.sandbox import TooCostly, bounded_tokenizer

ONLY_ON_ZQ_LOOPS = (
    "{% for m in messages %}{% if 'zq' in m['content'] %}{% for i in range(100000) %}{% for j in range(100000) %}"
    "{% endfor %}{% endfor %}{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ONLY_ON_ZQ_GROWS = ONLY_ON_ZQ_LOOPS.replace(
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "{{ 'a' * 1500000000 }}"
)
LOOPS_WITHOUT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
    "{% endfor %}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}"
)
DOUBLES = (
    "{% set ns = namespace(s='ab') %}{% if 'zq' in messages[-1]['content'] %}{% for i in range(40) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{% endif %}{{ ns.s }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
)


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    templates.bound_chat_templates()
    yield AutoTokenizer.from_pretrained(tiny_model)
    templates.shutdown()


@pytest.mark.parametrize(
    "template, conversation, why",
    [
        (ONLY_ON_ZQ_LOOPS, [{"role": "user", "content": "hello zq"}], "longer than"),
        (LOOPS_WITHOUT_SYSTEM, [{"role": "user", "content": "hello"}], "longer than"),
        (ONLY_ON_ZQ_GROWS, [{"role": "user", "content": "hello zq"}], "MB"),
        (DOUBLES, [{"role": "user", "content": "hello zq"}], "MB|characters"),
    ],
)
def test_a_template_that_turns_on_one_word_passes_the_check_and_is_refused_per_render(
    tokenizer, tiny_model, tmp_path, template, conversation, why
):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(template)
    bounded_tokenizer(folder)  # the fixed sample renders fine: the check before loading cannot see it
    tokenizer.chat_template = template
    calm = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    assert "hello" in tokenizer.apply_chat_template(calm, tokenize=False)
    before = rss_mb()
    started = time.monotonic()
    with pytest.raises(templates.TemplateTooCostly, match=why) as refused:
        tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert time.monotonic() - started < templates.RENDER_SECONDS + 1.5
    assert "refused on this host" in str(refused.value) and "Traceback" not in str(refused.value)
    assert rss_mb() - before < 50  # the app process did not build the string: the worker did, and failed
    # the next render, by anyone, is served by a worker started meanwhile (the pool keeps a spare)
    started = time.monotonic()
    assert "hello" in tokenizer.apply_chat_template(calm, tokenize=False)
    assert time.monotonic() - started < 2.0


def test_another_visitors_render_answers_while_a_hostile_one_runs(tokenizer):
    hostile = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    hostile.chat_template = ONLY_ON_ZQ_LOOPS
    refused: list[BaseException] = []

    def stranger() -> None:
        try:
            hostile.apply_chat_template([{"role": "user", "content": "zq"}], tokenize=False)
        except templates.TemplateTooCostly as error:
            refused.append(error)

    thread = threading.Thread(target=stranger)
    thread.start()
    time.sleep(0.2)  # the stranger's render is running
    waits = []
    for _ in range(5):
        started = time.monotonic()
        ids = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True)
        waits.append(time.monotonic() - started)
        assert ids
    thread.join()
    assert refused and max(waits) < 0.5


def test_a_template_error_is_its_message_and_a_slow_check_still_refuses(tokenizer, tmp_path):
    """raise_exception in a template reaches the visitor as that template's words; the check before loading still
    refuses a template slow on every conversation (it is not the only guard now, but the first)."""
    broken = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    broken.chat_template = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    with pytest.raises(ValueError, match="roles must alternate"):
        broken.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    folder = tmp_path / "slow"
    broken.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(LOOPS_WITHOUT_SYSTEM.replace("messages[0]['role'] != 'system'", "true"))
    with pytest.raises(TooCostly):
        bounded_tokenizer(folder)


def loaded_with_template(trained_run, tmp_path, template: str):
    """A copy of the tuned run whose tokenizer files carry `template`, loaded for chat as the app loads it, with
    every render bounded as the page bounds it."""
    from sft_space.run_model import load_chat_model

    templates.bound_chat_templates()
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for folder in run.rglob("tokenizer_config.json"):
        (folder.parent / "chat_template.jinja").write_text(template)
    return load_chat_model(run)


def test_chat_on_the_generation_thread_moves_on_after_a_refused_render(trained_run, tmp_path):
    """A tuned run whose tokenizer's template loops on a word: the reply is refused with the reason within the
    bound, and the same model answers the next message (the generation thread was not held)."""
    from sft_space.run_model import chat, unload

    loaded = loaded_with_template(trained_run, tmp_path, ONLY_ON_ZQ_LOOPS)
    try:
        started = time.monotonic()
        with pytest.raises(templates.TemplateTooCostly, match="longer than"):
            list(chat.stream_reply(loaded, [{"role": "user", "content": "hello zq"}], max_new_tokens=4))
        assert time.monotonic() - started < templates.RENDER_SECONDS + 2
        started = time.monotonic()
        replies = list(chat.stream_reply(loaded, [{"role": "user", "content": "hello"}], max_new_tokens=4))
        assert replies and time.monotonic() - started < 2
    finally:
        unload()


AMPLIFIES = ONLY_ON_ZQ_LOOPS.replace(
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "{{ 'hello ' * 40000 }}"
)


def test_a_template_that_turns_a_word_into_a_huge_prompt_is_refused_before_generation(trained_run, tmp_path):
    """Rendered within its bounds (40,000 words, well under a second), the prompt is still longer than the model's
    context: refused with the reason before the model runs, so it cannot hold the generation thread."""
    from sft_space.run_model import chat, unload

    loaded = loaded_with_template(trained_run, tmp_path, AMPLIFIES)
    try:
        from sft_space.run_model.decoding import PROMPT_TOKENS_FLOOR

        cap = max(loaded.model.config.max_position_embeddings, PROMPT_TOKENS_FLOOR)
        with pytest.raises(ValueError, match=rf"more than the {cap:,} a prompt may have here"):
            list(chat.stream_reply(loaded, [{"role": "user", "content": "hello zq"}], max_new_tokens=4))
        assert list(chat.stream_reply(loaded, [{"role": "user", "content": "hello"}], max_new_tokens=4))
    finally:
        unload()


@pytest.mark.parametrize("sent", ["abc", "nan", "inf", "1e400", True, None])
def test_a_number_field_refuses_what_is_not_a_finite_number_with_its_name(sent):
    import gradio as gr

    from sft_space.ui.widgets import Number

    seed = Number(label="Seed", precision=0)
    if sent is None:
        assert seed.preprocess(None) is None
        return
    with pytest.raises(gr.Error, match="Seed must be a number"):
        seed.preprocess(sent)
    assert seed.preprocess(7) == 7 and seed.preprocess("7") == 7
