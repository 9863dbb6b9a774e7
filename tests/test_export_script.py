"""The exported training script (sft_space/export/train_sft.py) runs where sft_space is not installed, so it carries
its own copy of the ChatML and pad-token set-up: these tests keep that copy and the app's (models.tokens) in step."""

import importlib.util

import pytest
from transformers import AutoTokenizer

from sft_space.models import CHATML_TEMPLATE, prepare_tokenizer

from helpers import ROOT, build_tiny_model


def exported_script():
    spec = importlib.util.spec_from_file_location("train_sft", ROOT / "sft_space" / "export" / "train_sft.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("base", [True, False], ids=["base model", "chat model"])
def test_script_sets_up_tokens_as_the_app_does(tmp_path, base):
    folder = build_tiny_model(tmp_path / "model", base=base)
    app_tokenizer, setup = prepare_tokenizer(folder)
    script_tokenizer = AutoTokenizer.from_pretrained(folder)
    new_tokens = exported_script().chatml_setup(script_tokenizer, CHATML_TEMPLATE)
    assert script_tokenizer.chat_template == app_tokenizer.chat_template
    assert (script_tokenizer.eos_token, script_tokenizer.pad_token) == (
        app_tokenizer.eos_token,
        app_tokenizer.pad_token,
    )
    assert len(script_tokenizer) == len(app_tokenizer)
    assert list(new_tokens) == list(setup.new_token_ids)
    assert bool(new_tokens) is base  # only a base model gets ChatML and trained marker rows
    assert app_tokenizer.pad_token != app_tokenizer.eos_token
