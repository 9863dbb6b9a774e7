"""Models from the Hub test server (real huggingface_hub client), local folders and the bundled model:
metadata-only checks and refusals, the fit estimate, ChatML for base models, pad tokens, answer masking,
precision. Tiny Llama (untied head, with a chat template) and Qwen2 (tied, base model without one)."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from sft_space.config import RunConfig
from sft_space.models import (
    Device,
    check_target_modules,
    choose_precision,
    estimate_memory,
    fit_report,
    model_facts,
    prepare_tokenizer,
    resolve_model,
)

from helpers import build_tiny_model, run_cli, use_test_hub
from hub_server import HubServer

GIB = 2**30


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "llama": build_tiny_model(root / "llama"),
        "qwen-base": build_tiny_model(
            root / "qwen-base", hidden_size=32, architecture="qwen2", base=True, initializer_range=0.3
        ),  # wide enough to learn a reply in 60 steps
    }


@pytest.fixture(scope="module")
def hub(models):
    with HubServer() as server:
        llama, qwen = folder_files(models["llama"]), folder_files(models["qwen-base"])
        server.add_repo("acme/tiny-llama-chat", llama, kind="model", card_data={"license": "mit"})
        server.add_repo("acme/tiny-qwen-base", qwen, kind="model")
        server.add_repo("acme/gated-llama", llama, kind="model", gated=True)
        remote = dict(llama)
        remote["config.json"] = json.dumps(
            {**json.loads(llama["config.json"]), "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}}
        ).encode()
        server.add_repo("acme/remote-code", remote, kind="model")
        pickled = {k: v for k, v in llama.items() if not k.endswith(".safetensors")}
        pickled["pytorch_model.bin"] = b"not really a pickle"
        server.add_repo("acme/pickle-only", pickled, kind="model")
        lying = dict(llama)  # the tiny weights' header, and a config that builds TinyLlama's 1.1B parameters
        lying["config.json"] = json.dumps(
            {
                **json.loads(llama["config.json"]),
                **dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=22, intermediate_size=5632),
                **dict(num_attention_heads=32, num_key_value_heads=4, head_dim=64, tie_word_embeddings=False),
            }
        ).encode()
        server.add_repo("acme/lying-header", lying, kind="model")
        yield server


@pytest.fixture
def online(hub, monkeypatch, tmp_path):
    use_test_hub(monkeypatch, hub.url, tmp_path / "hf-home")
    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path / "home"))  # an empty model cache for each test
    hub.downloads.clear()
    return hub


def test_hub_metadata_gives_size_modules_and_template_without_downloading_weights(online, models):
    from transformers import AutoModelForCausalLM

    facts = model_facts("acme/tiny-llama-chat")
    real = AutoModelForCausalLM.from_pretrained(models["llama"])
    assert facts.parameters == sum(p.numel() for p in real.parameters())
    assert set(facts.linear_modules()) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert facts.attention_modules() == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert facts.has_chat_template and facts.license == "mit" and facts.max_length == 512
    qwen = model_facts("acme/tiny-qwen-base")
    assert not qwen.has_chat_template and qwen.tied_embeddings and qwen.text["model_type"] == "qwen2"
    assert "model.safetensors" not in online.downloads  # only the header was read, by range requests
    assert any(name == "model.safetensors" for name, _, _ in online.ranges)
    # LoRA size from the shapes: r x (in + out) for every targeted layer
    lora = facts.lora_parameters(8, ["q_proj"])
    assert lora == 8 * (16 + 16) * 2


@pytest.mark.parametrize(
    "repo, message",
    [
        ("acme/missing", "was not found, or it is private or gated"),
        ("acme/gated-llama", "is gated: accept its conditions"),
        ("acme/remote-code", "needs custom code"),
        ("acme/pickle-only", "pickle files such as pytorch_model.bin"),
    ],
)
def test_refusals_say_why_before_any_download(online, repo, message):
    with pytest.raises(ValueError, match=message):
        resolve_model(repo)
    assert not [name for name in online.downloads if name.endswith((".safetensors", ".bin"))]


def test_fit_verdicts_follow_memory_and_suggest_changes(online):
    roomy = Device("cuda", "test GPU", 80 * GIB, True)
    verdict, text = fit_report(model_facts("acme/tiny-llama-chat"), RunConfig(), roomy)
    assert verdict == "fits" and "Fits" in text and "Gradient checkpointing: off (auto)" in text
    facts = model_facts("bundled")  # SmolLM2-135M's real shapes: activations dominate at long sequences
    long = RunConfig(per_device_train_batch_size=16, max_length=2048)
    needed = estimate_memory(facts, long, roomy, False).total
    assert estimate_memory(facts, long, roomy, True).total < 0.5 * needed  # checkpointing frees most activations
    assert estimate_memory(facts, replace(long, per_device_train_batch_size=8), roomy).total < needed
    small = Device("cuda", "small GPU", int(needed * 1.05), True)
    verdict, text = fit_report(facts, replace(long, gradient_checkpointing="off"), small)
    assert verdict == "tight" and "To make it fit: turn gradient checkpointing on" in text
    verdict, text = fit_report(facts, long, small)  # auto turns it on because the estimate needs it
    assert verdict == "fits" and "Gradient checkpointing: on (auto)" in text
    verdict, text = fit_report(
        facts, replace(long, gradient_checkpointing="off"), Device("cuda", "GPU", needed // 3, True)
    )
    assert verdict == "will not fit" and "lower the batch size to" in text and "4 bits" in text
    verdict, text = fit_report(facts, long, Device("cpu", "tiny CPU", 1 * GIB, False))
    assert verdict == "will not fit" and "smaller model" in text


def test_bundled_facts_need_no_conversion():
    facts = model_facts("bundled")
    assert 130e6 < facts.parameters < 140e6 and facts.has_chat_template
    verdict, _ = fit_report(facts, RunConfig(), Device("cpu", "CPU", 16 * GIB, False))
    assert verdict == "fits"


def test_custom_lora_targets_are_checked_against_real_module_names(models):
    facts = model_facts(str(models["llama"]))
    check_target_modules(["q_proj", "down_proj"], facts)
    with pytest.raises(ValueError, match="does not have: its linear layers are down_proj, gate_proj"):
        check_target_modules(["c_attn"], facts)


def test_pad_token_is_never_the_end_of_turn_token(models, tmp_path):
    tokenizer, setup = prepare_tokenizer(models["qwen-base"])
    assert setup.chatml_added and tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>" != tokenizer.eos_token  # the base model's own eos pads
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == setup.new_token_ids
    assert "<|im_start|>user\nhi<|im_end|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )
    # an instruct model whose pad is its end-of-turn token, with no other candidate: a pad token is added
    from transformers import AutoTokenizer

    folder = tmp_path / "eos-pad"
    raw = AutoTokenizer.from_pretrained(models["llama"])
    raw.pad_token = raw.eos_token
    raw.save_pretrained(folder)
    shutil.copy(models["llama"] / "config.json", folder / "config.json")
    vocab = raw.get_vocab()
    assert "<pad>" in vocab  # the tiny tokenizer has one: it is preferred over adding a token
    tokenizer, setup = prepare_tokenizer(folder)
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id != tokenizer.eos_token_id


def test_answers_only_labels_cover_every_answer_and_end_of_turn(models, tmp_path):
    """The labels the trainer really uses: every assistant answer and its <|im_end|> count (the ChatML set up for a
    base model marks assistant turns), never a user turn, the template's scaffolding or padding."""
    from sft_space.training.run_writer import StopRequested
    from sft_space.training.trainer import build_trainer

    data = tmp_path / "data.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Say yes" + " please" * i},
                {"role": "assistant", "content": "yes"},
                {"role": "user", "content": "Again"},
                {"role": "assistant", "content": "no"},
            ]
        }
        for i in range(8)
    ]  # lengths differ: padding
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = RunConfig(
        model=str(models["qwen-base"]),
        dataset=str(data),
        max_steps=1,
        per_device_train_batch_size=4,
        max_length=64,
        probe_prompts="hi",
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    status: dict = {}
    trainer, tokenizer = build_trainer(config, run_dir, StopRequested(), status)
    assert status["loss_on"] == "every assistant turn"
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        trained = [int(t) for t, label in zip(ids, labels) if label != -100]
        assert tokenizer.decode(trained) == "yes<|im_end|>no<|im_end|>"
    padded = batch["attention_mask"] == 0
    assert padded.any() and (batch["labels"][padded] == -100).all()


def test_templates_without_markers_train_the_last_answer(tiny_model, tmp_path):
    """The tiny Llama's ChatML has no generation markers: answers-only falls back to prompt/completion."""
    from sft_space.training.run_writer import StopRequested
    from sft_space.training.trainer import build_trainer

    data = tmp_path / "data.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Say yes" + " please" * i},
                {"role": "assistant", "content": "yes"},
                {"role": "user", "content": "Again"},
                {"role": "assistant", "content": "no"},
            ]
        }
        for i in range(8)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    status: dict = {}
    trainer, tokenizer = build_trainer(
        RunConfig(
            model=str(tiny_model),
            dataset=str(data),
            max_steps=1,
            per_device_train_batch_size=4,
            max_length=64,
            probe_prompts="hi",
        ),
        run_dir,
        StopRequested(),
        status,
    )
    assert status["loss_on"] == "the last answer"
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        assert tokenizer.decode([int(t) for t, label in zip(ids, labels) if label != -100]) == "no<|im_end|>\n"


def test_base_model_from_the_hub_trains_into_a_chat_model_that_stops(online, tmp_path):
    """A base Qwen2 without a chat template: downloaded, ChatML set up, new token rows trained, replies end."""
    data = tmp_path / "short.jsonl"
    rows = [{"prompt": f"Greet guest {i}", "completion": "Ahoy"} for i in range(40)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    result = run_cli(
        "--model",
        "acme/tiny-qwen-base",
        "--dataset",
        str(data),
        "--max_steps",
        "60",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "0.02",
        "--max_length",
        "64",
        "--logging_steps",
        "10",
        "--eval_steps",
        "30",
        "--save_steps",
        "100",
        "--precision",
        "fp32",
        "--output_dir",
        str(run_dir),
    )  # the training process inherits the test server's HF_ENDPOINT
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["chatml_added"] is True
    assert any("ChatML" in note for note in status["token_notes"])
    assert status["end_of_turn"]["ended"] == status["end_of_turn"]["checked"] > 0, status
    probes = [json.loads(line) for line in (run_dir / "probes.jsonl").read_text().splitlines()]
    assert probes[0]["step"] == 0 and probes[0]["replies"] != ["Ahoy"] * 3  # the base model could not do it
    assert "model.safetensors" in online.downloads
    from safetensors.torch import load_file

    adapter = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert any("trainable_tokens" in name for name in adapter)  # the ChatML rows were trained and saved
    from sft_space.run_model import generate_once, load_chat_model, unload

    loaded = load_chat_model(run_dir)
    try:
        reply = generate_once(loaded, [{"role": "user", "content": "Greet guest 99"}], max_new_tokens=20)
    finally:
        unload()
    assert reply["ended_turn"] and reply["text"] == "Ahoy"
    # merging folds the trained token rows in too: save_merged refuses if merged replies differ from base + adapter
    from sft_space.export.merged import save_merged

    save_merged(run_dir, tmp_path / "merged")
    merged_config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert merged_config["vocab_size"] == len(loaded.tokenizer)


def test_precision_choice_on_this_cpu(tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU rules")
    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path))
    assert choose_precision("fp32") == {"bf16": False, "fp16": False}
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16")
    auto = choose_precision("auto")
    stored = json.loads((tmp_path / "cpu_precision.json").read_text())
    assert auto["bf16"] == stored["bf16"] == (stored["speedup"] >= 1.15)
    assert stored["speedup"] > 0


def test_offline_hub_id_fails_fast_with_a_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE=1"):
        resolve_model("acme/never-downloaded")


def test_unreachable_hub_fails_fast_with_a_message(monkeypatch, tmp_path):
    import time

    import huggingface_hub.constants as constants

    from helpers import free_port

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    started = time.time()
    with pytest.raises(ValueError, match="cannot be reached"):
        model_facts("acme/anything")
    assert time.time() - started < 60


def test_tokenizer_of_a_hub_model_comes_without_its_weights(online):
    from sft_space.models import resolve_tokenizer

    tokenizer, setup = prepare_tokenizer(resolve_tokenizer("acme/tiny-qwen-base"))
    assert setup.chatml_added and "<|im_start|>" in tokenizer.get_vocab()
    assert "model.safetensors" not in online.downloads and "tokenizer.json" in online.downloads


def test_a_weights_header_that_lists_few_parameters_cannot_pass_the_size_cap(online):
    """A repo whose safetensors header lists a few thousand parameters while config.json builds 1.1B (from_pretrained
    would initialise the rest) is counted by its config: refused under a CPU Space's 0.5B cap, before any download."""
    from sft_space.host import limits

    facts = model_facts("acme/lying-header")
    assert facts.header_parameters < 100_000
    assert 1.05e9 < facts.parameters < 1.15e9
    with pytest.raises(
        ValueError, match=r"acme/lying-header has 1\.1B parameters; this Space trains models up to 0\.5B"
    ):
        limits.check_run(RunConfig(model="acme/lying-header", max_steps=1), 1, facts.parameters, limits.CPU_SPACE)
    honest = model_facts("acme/tiny-llama-chat")  # an honest header: the count it always had
    assert honest.parameters == honest.header_parameters
    assert not [name for name in online.downloads if name.endswith(".safetensors")]
