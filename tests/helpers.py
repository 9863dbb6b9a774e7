"""Helpers the tests share: a tiny model builder, the training command line, waiting, the test Hub, the launched
app. Fixtures live in conftest.py, which also isolates the environment before anything is imported."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(
    folder: Path,
    hidden_size: int = 16,
    layers: int = 2,
    architecture: str = "llama",
    base: bool = False,
    initializer_range: float = 0.02,
) -> Path:
    """A random causal LM with a byte-level BPE tokenizer trained on the demo data.

    architecture: llama (LlamaForCausalLM, untied head) or qwen2 (Qwen2ForCausalLM, tied embeddings).
    base=False: an instruct-style model with a ChatML template, <|im_end|> as eos and a <pad> token.
    base=True: a base model as pretraining leaves it: no chat template, no ChatML tokens, eos <|endoftext|>, no pad.
    initializer_range: the weights' spread; at 0.02 a 16-wide frozen head can barely move its logits, so tests that
    need the model to learn a reply use a wider one.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    texts = []
    for line in (ROOT / "sft_space" / "demo_data" / "json-extract.train.jsonl").read_text().splitlines()[:300]:
        texts += [m["content"] for m in json.loads(line)["messages"]]
    specials = ["<|endoftext|>"] if base else ["<pad>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    if base:
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    else:
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<pad>")
        tokenizer.chat_template = CHATML
    config_class, model_class = (
        (Qwen2Config, Qwen2ForCausalLM) if architecture == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    )
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=architecture == "qwen2",
        initializer_range=initializer_range,
    )
    import torch

    torch.manual_seed(0)
    model = model_class(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m sft_space.train ARGS` as a user would type it."""
    return subprocess.run(
        [sys.executable, "-m", "sft_space.train", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def wait_until(predicate, timeout: float = 300, poll: float = 0.5, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


TINY_FAST = [
    "--dataset",
    "demo:json-extract",
    "--per_device_train_batch_size",
    "2",
    "--max_length",
    "128",
    "--logging_steps",
    "1",
    "--eval_steps",
    "2",
    "--eval_max_rows",
    "4",
    "--save_steps",
    "2",
    "--learning_rate",
    "0.005",
]


def use_test_hub(patch: pytest.MonkeyPatch, url: str, hf_home: Path) -> None:
    """Point the real huggingface_hub client at a test Hub server (tests otherwise run with the Hub switched off),
    with no token from this machine."""
    import huggingface_hub.constants as constants

    patch.setenv("HF_ENDPOINT", url)
    patch.setenv("HF_HUB_OFFLINE", "0")
    patch.setattr(constants, "HF_HUB_OFFLINE", False)
    patch.delenv("HF_TOKEN", raising=False)
    patch.setenv("HF_HOME", str(hf_home))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def launched_app():
    """The real app on a free local port (launch(prevent_thread_lock=True)); yields its URL."""
    from sft_space.runs import queue as run_queue
    from sft_space.ui import build_app, launch_kwargs

    run_queue.start_queue_worker()  # as app.py does
    demo = build_app()
    demo.queue()
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True, **launch_kwargs()
    )
    try:
        yield url
    finally:
        demo.close()


# Debian's Chromium, headless, with nothing reaching for the network (the closed network refuses it loudly).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def app_settings(tiny_model, steps: int, **changes) -> dict:
    """The Start button's fields for a short run of the tiny model on the demo data, by name (gradio_client)."""
    base = dict(
        dataset="demo:json-extract",
        model=str(tiny_model),
        per_device_train_batch_size=2,
        max_length=128,
        logging_steps=1,
        eval_steps=1000,
        eval_max_rows=4,
        save_steps=1000,
        max_steps=steps,
        train_minutes=0,  # a number of steps, not the Quick demo's 3 minutes (the page's default)
    )
    return {**base, **changes}


def run_id_of(bar: str) -> str:
    """The run id the run bar names."""
    return re.search(r"\*\*Run:\*\* (\S+)", bar).group(1)


def send_and_wait_for_replies(page, message: str, timeout: float = 120) -> None:
    """On the Chat tab (a Playwright page): send `message` and wait for the tuned and the base model's replies."""
    page.locator("#chat-input textarea").fill(message)
    page.locator("#chat-send").click()
    for chatbot in ("#chatbot", "#chatbot-base"):
        wait_until(
            lambda: (
                page.locator(f"{chatbot} .message.bot").count() >= 1
                and page.locator(f"{chatbot} .message.bot").last.inner_text().strip()
            ),
            timeout=timeout,
            poll=0.5,
            what=f"a reply in {chatbot}",
        )


def short_run_file(path: Path, model: str, **changes) -> Path:
    """A run's config.json (every field) for a short run of `model` on the demo data: what the Train tab's Load
    settings takes to fill the forms before Start."""
    from sft_space.config import RunConfig

    settings = dict(
        model=model,
        dataset="demo:json-extract",
        max_steps=2,
        train_minutes=0.0,
        max_length=128,
        per_device_train_batch_size=2,
        eval_steps=1000,
        save_steps=1000,
        eval_max_rows=4,
    )
    path.write_text(json.dumps({**RunConfig().to_dict(), **settings, **changes}))
    return path


def open_loader(page) -> None:
    """Open the Train tab's Load settings accordion (its file input is rendered once it opens)."""
    page.locator("#load-settings").get_by_text("Load settings").first.click()
    page.wait_for_selector("#settings-file input[type=file]", state="attached", timeout=20_000)


def load_settings_file(page, path: Path) -> None:
    """On the Train tab: load a settings file and wait for the note that says it was loaded."""
    page.get_by_role("tab", name="3 Train").click()
    if not page.locator("#settings-file input[type=file]").count():
        open_loader(page)
    page.locator("#settings-file input[type=file]").set_input_files(str(path))
    page.wait_for_selector(f"#settings-note >> text=Loaded from {path.name}", timeout=20_000)


def page_run_id(page) -> str:
    """The run id the page's run bar shows."""
    return re.search(r"\d{8}-\d{6}-\S+", page.locator("#run-bar").inner_text()).group(0)


@contextlib.contextmanager
def app_page(url: str, height: int = 1100):
    """Chromium on the app's page, loaded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": height})
        page.goto(url)
        page.wait_for_selector("text=SFT Space", timeout=30_000)
        try:
            yield page
        finally:
            browser.close()
