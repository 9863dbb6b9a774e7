"""GGUF export (sft_space.export.gguf): the merged model written with the gguf package, loaded back through
transformers' GGUF loader and compared with base + adapter; the metadata a runtime reads (chat template, end-of-turn
token, added ChatML tokens); the Ollama Modelfile's template against the chat template; the refusals before any work
(unmapped architecture, unknown type, full disk) and the command line. Tiny Llama and Qwen2 models with a real LoRA
adapter (random, non-zero, so it changes the replies); one slow test on the bundled SmolLM2 after a few training
steps."""

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sft_space import rundir
from sft_space.config import RunConfig
from sft_space.export import gguf as export_gguf
from sft_space.export import gguf_check, ollama
from sft_space.models import fit_model_to_tokenizer, load_model, load_tokenizer
from sft_space.publishing import publish
from sft_space.run_model import greedy_each

from helpers import ROOT, build_tiny_model, run_cli, use_test_hub
from hub_server import HubServer

PROBES = "Order 2 pizzas to 5 Main St\nBook a table for 4 at 7pm on Friday"
# Q8_0 keeps 8 bits per weight in blocks of 32 with one scale each: on these models the held-out loss moves by
# about 0.001-0.003 nats per token; the tolerance leaves a margin of several times that.
Q8_LOSS_TOLERANCE = 0.02


def make_run(root, architecture: str = "llama", base: bool = False, probes: str = PROBES, run=None):
    """A run directory (root/run unless given) with a tiny model and a saved LoRA adapter on every linear layer (B
    not zero, so the adapter moves the replies), its tokenizer prepared as the trainer prepares it (ChatML for a base
    model)."""
    from peft import LoraConfig, get_peft_model

    model_dir = build_tiny_model(root / "model", hidden_size=32, architecture=architecture, base=base)
    run = run or root / "run"
    (run / "adapter").mkdir(parents=True)
    rundir.write_config(run, RunConfig(model=str(model_dir), dataset="demo:json-extract", probe_prompts=probes))
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    fit_model_to_tokenizer(model, tokenizer)
    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(run / "adapter")
    tokenizer.save_pretrained(run / "adapter")
    return run


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def exported(request, tmp_path_factory):
    """One run per architecture, exported as f16 and q8_0 with the check: (run, report)."""
    run = make_run(tmp_path_factory.mktemp(request.param), request.param)
    return run, export_gguf.export_gguf(run, ["f16", "q8_0"])


def entry(report, kind):
    return next(e for e in report["files"] if e["type"] == kind)


def merged_model(run):
    from peft import PeftModel

    tokenizer = load_tokenizer(run / "adapter")
    base = load_model(json.loads((run / "config.json").read_text())["model"])
    fit_model_to_tokenizer(base, tokenizer)
    return PeftModel.from_pretrained(base, run / "adapter").merge_and_unload().eval(), tokenizer


def load_back(run, kind):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = rundir.gguf_dir(run)
    name = rundir.gguf_file_name(run, kind)
    return (
        AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval(),
        AutoTokenizer.from_pretrained(folder, gguf_file=name),
    )


def test_f16_loads_back_and_answers_exactly_like_base_plus_adapter(exported):
    run, report = exported
    check = entry(report, "f16")["verification"]
    assert check["prompts"] == 2
    assert check["prompt_tokens_identical"] == 2, "the tokenizer read from the file encodes the prompts the same"
    assert check["replies_identical"] == 2, check["examples"]
    assert check["first_tokens_agreeing"] == check["reply_lengths"]
    # the adapter matters: base + adapter does not answer as the base model alone
    base = load_model(json.loads((run / "config.json").read_text())["model"])
    tokenizer = load_tokenizer(run / "adapter")
    conversations = [[{"role": "user", "content": p}] for p in PROBES.splitlines()]
    assert greedy_each(base, tokenizer, conversations, export_gguf.MAX_NEW_TOKENS)[2] != report["reference"]["texts"]

    # the file holds exactly the merged weights rounded to f16 (q/k rows un-permuted by the loader, names mapped)
    merged, tokenizer = merged_model(run)
    for parameter in merged.parameters():
        if parameter.dim() >= 2:
            parameter.data = parameter.data.half().float()
    model, _ = load_back(run, "f16")
    ids = tokenizer.apply_chat_template(conversations[0], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, merged(ids).logits, atol=1e-5)


def test_q8_0_loads_back_with_held_out_loss_within_tolerance(exported):
    run, report = exported
    file_entry = entry(report, "q8_0")
    check = file_entry["verification"]
    assert file_entry["metadata"]["tensor_types"].get("Q8_0", 0) >= 10  # the weight matrices, in 8-bit blocks
    assert check["loss_rows"] == gguf_check.LOSS_ROWS
    assert abs(check["loss_difference"]) <= Q8_LOSS_TOLERANCE, check
    assert check["prompt_tokens_identical"] == 2
    assert 0 <= check["replies_identical"] <= 2  # measured and reported, not required
    assert file_entry["bytes"] < entry(report, "f16")["bytes"]
    # the estimate made before any weight was loaded is close to what was written
    assert 0.8 < file_entry["estimated_bytes"] / file_entry["bytes"] < 1.25
    saved = rundir.read_gguf_report(run)
    assert saved["files"][1]["verification"]["loss_difference"] == check["loss_difference"]
    lines = export_gguf.summary_lines(saved)
    assert re.search(r"q8_0\.gguf`: .* written in .*probe replies identical.*held-out loss", lines[1])
    assert saved["summary"] == lines  # written with the report: the card and the page read it there


def test_an_export_from_before_reports_held_their_summary_gets_it_for_the_card(exported):
    """gguf.json written before it carried its summary lines: the push's card and the Publish tab still show them
    (read_report writes them back), and the card never imports the exporter."""
    from sft_space.publishing.card import model_card

    run, _ = exported
    saved = rundir.read_gguf_report(run)
    rundir.write_gguf_report(run, {k: v for k, v in saved.items() if k != "summary"})
    publish.gguf_files(run)  # what a push with GGUF files asks first
    card = model_card(run, "you/model", gguf=True)
    assert rundir.read_gguf_report(run)["summary"] == saved["summary"]
    assert all(line in card for line in saved["summary"][:2])
    card_imports = [n.module for n in ast.walk(ast.parse((ROOT / "sft_space" / "publishing" / "card.py").read_text()))
                    if isinstance(n, ast.ImportFrom)]  # fmt: skip
    assert not [m for m in card_imports if m and m.startswith("export")]


def test_metadata_holds_the_chat_template_and_the_end_of_turn_token(exported):
    from gguf import GGUFReader

    run, report = exported
    tokenizer = load_tokenizer(run / "adapter")
    for kind in ("f16", "q8_0"):
        path = rundir.gguf_dir(run) / rundir.gguf_file_name(run, kind)
        reader = GGUFReader(path)
        assert reader.fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
        assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
        eos = reader.fields["tokenizer.ggml.eos_token_id"].contents()
        assert reader.fields["tokenizer.ggml.tokens"].contents()[eos] == "<|im_end|>" == tokenizer.eos_token
        assert entry(report, kind)["metadata"]["eos_token"] == "<|im_end|>"
        _, loaded = load_back(run, kind)
        conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 42"}]
        assert loaded.eos_token == "<|im_end|>" and loaded.chat_template == tokenizer.chat_template
        assert loaded.apply_chat_template(conversation, add_generation_prompt=True) == tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True
        )
    assert report["chat_template_in_metadata"] and report["stop"] == ["<|im_end|>"]


def test_modelfile_template_renders_conversations_as_the_chat_template_does(exported):
    run, report = exported
    folder = rundir.gguf_dir(run)
    modelfile = (folder / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{rundir.gguf_file_name(run, 'q8_0')}\n")  # q8_0 when it is there
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.S).group(1)
    tokenizer = load_tokenizer(run / "adapter")
    conversations = [
        [{"role": "user", "content": "Order 2 pizzas"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": '{"ok": true}'},
            {"role": "user", "content": "Again,\nplease"},
        ],
    ]
    for conversation in conversations:
        assert ollama.render_ollama_template(template, conversation) == tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
    assert report["template"] == {"matches": True, "checked": 4, "differing": 0}
    readme = (folder / "README.md").read_text()
    assert "ollama create" in readme and f"llama-cli -m {rundir.gguf_file_name(run, 'q8_0')}" in readme


def test_modelfile_template_follows_a_default_system_prompt_and_refuses_what_it_cannot_follow(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "m"))
    # SmolLM2-Instruct's template: a default system prompt when the conversation has none
    tokenizer.chat_template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    template = ollama.ollama_template(tokenizer)
    assert "You are a helpful AI assistant" in template
    check = ollama.check_template(template, tokenizer, [[{"role": "user", "content": "Hello"}]])
    assert check == {"matches": True, "checked": 3, "differing": 0}
    # a template that numbers the turns has no fixed text around each role: no TEMPLATE, said so
    tokenizer.chat_template = (
        "{% for message in messages %}{{ loop.index ~ '. ' + message['role'] + ': ' + message['content'] + '\n' }}"
        "{% endfor %}"
    )
    assert ollama.ollama_template(tokenizer) is None
    assert "No TEMPLATE" in ollama.modelfile_text("m.gguf", None, ["</s>"], "Be kind.")
    assert 'SYSTEM """Be kind."""' in ollama.modelfile_text("m.gguf", None, ["</s>"], "Be kind.")


def test_base_model_given_chatml_keeps_its_added_tokens_and_template(tmp_path):
    from gguf import GGUFReader, TokenType

    run = make_run(tmp_path, "qwen2", base=True, probes="Hi")
    report = export_gguf.export_gguf(run, ["f16"])
    tokenizer = load_tokenizer(run / "adapter")
    reader = GGUFReader(rundir.gguf_dir(run) / rundir.gguf_file_name(run, "f16"))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    for marker in ("<|im_start|>", "<|im_end|>"):
        token_id = tokenizer.convert_tokens_to_ids(marker)
        assert tokens[token_id] == marker and types[token_id] == TokenType.CONTROL
    stored = reader.fields["tokenizer.chat_template"].contents()
    assert "{% generation %}" in tokenizer.chat_template  # the markers of assistant-only training masks...
    assert stored == tokenizer.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    _, loaded = load_back(run, "f16")
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    assert loaded.apply_chat_template(conversation) == tokenizer.apply_chat_template(conversation)
    assert loaded.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id
    assert report["files"][0]["verification"]["prompt_tokens_identical"] == 1
    assert report["template"]["matches"]


def tiny_phi3_run(root):
    from peft import LoraConfig, get_peft_model
    from transformers import Phi3Config, Phi3ForCausalLM

    model_dir = build_tiny_model(root / "llama")  # for its tokenizer files
    config = Phi3Config(
        vocab_size=400,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = Phi3ForCausalLM(config)
    for path in model_dir.glob("*.safetensors"):
        path.unlink()
    (model_dir / "config.json").unlink()
    model.save_pretrained(model_dir)
    run = root / "run"
    (run / "adapter").mkdir(parents=True)
    rundir.write_config(run, RunConfig(model=str(model_dir), dataset="demo:json-extract"))
    get_peft_model(model, LoraConfig(r=2, target_modules=["qkv_proj"])).save_pretrained(run / "adapter")
    return run


def export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sft_space.export.gguf", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_unmapped_architecture_and_bad_input_are_refused_before_any_work(tmp_path, monkeypatch):
    run = tiny_phi3_run(tmp_path)
    with pytest.raises(ValueError, match=r"architecture 'phi3'.*Merged model"):
        export_gguf.plan_export(run)
    result = export_cli(str(run), "--type", "q8_0")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'phi3'" in lines[0]
    assert not list(rundir.gguf_dir(run).glob("*.gguf"))

    llama_run = make_run(tmp_path / "llama", "llama", probes="Hi")
    with pytest.raises(ValueError, match="Unknown GGUF type 'q3'"):
        export_gguf.plan_export(llama_run, ["q3"])
    result = export_cli(str(tmp_path / "nowhere"))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "not a run directory" in result.stderr
    (llama_run / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no adapter"):
        export_gguf.plan_export(llama_run)


def test_disk_check_refuses_a_file_that_does_not_fit(tmp_path, monkeypatch):
    run = make_run(tmp_path, "llama", probes="Hi")
    plan = export_gguf.plan_export(run, ["f16", "q8_0"])
    assert plan.estimated_bytes["q8_0"] < plan.estimated_bytes["f16"]
    assert "f16 about" in export_gguf.estimate_text(plan)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(export_gguf.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(OSError, match=r"needs about .* free"):
        export_gguf.export_gguf(run, ["f16"])


def test_command_line_exports_and_checks(tmp_path):
    run = make_run(tmp_path, "llama", probes="Hi")
    result = export_cli(str(run), "--type", "q8_0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"q8_0\.gguf`: .* [01]/1 probe replies identical", result.stdout)
    assert "about" in result.stderr and "s left" in result.stderr  # the size estimate, then the bar's time left
    assert (rundir.gguf_dir(run) / "Modelfile").is_file()
    assert rundir.read_gguf_report(run)["files"][0]["type"] == "q8_0"
    result = export_cli(str(run), "--type", "f16", "--no-verify")  # a new export replaces the one before
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in rundir.gguf_dir(run).glob("*.gguf")] == [rundir.gguf_file_name(run, "f16")]
    assert "verification" not in rundir.read_gguf_report(run)["files"][0]


TOKEN = "hf_aliceSECRETwriteToken0123456789"  # fake


def test_push_carries_the_gguf_files_and_modelfile_in_the_adapters_commit(tmp_path, monkeypatch):
    run = make_run(tmp_path, "llama", probes="Hi")
    with pytest.raises(FileNotFoundError, match="no GGUF export to push"):
        publish.push_run(run, "tiny-gguf", TOKEN, gguf=True)  # refused before any network call
    report = export_gguf.export_gguf(run, ["q8_0"])
    name = report["files"][0]["file"]
    with HubServer() as server:
        server.users[TOKEN] = "alice"
        use_test_hub(monkeypatch, server.url, tmp_path / "hf-home")
        record = publish.push_run(run, "tiny-gguf", TOKEN, gguf=True)
    assert record["gguf"] == [name, "Modelfile"]
    assert len(server.commits) == 1 and "GGUF" in server.commits[0]["message"]
    assert {"adapter_model.safetensors", name, "Modelfile", "README.md"} <= set(server.commits[0]["files"])
    files = server.repos[("model", "alice/tiny-gguf")].files
    assert files[name] == (rundir.gguf_dir(run) / name).read_bytes()
    card = files["README.md"].decode()
    assert '- "gguf"' in card and "### GGUF (llama.cpp, Ollama)" in card
    assert f"hf download alice/tiny-gguf {name} Modelfile" in card and "ollama create tiny-gguf -f Modelfile" in card
    assert "1/1 probe replies identical" in card or "0/1 probe replies identical" in card
    assert TOKEN not in json.dumps(rundir.read_published(run))


def test_publish_tab_estimates_then_hands_the_files_to_the_runs_owner_only(tmp_path, sft_home):
    import gradio as gr

    from sft_space.runs.cleanup import handed_out_dir
    from sft_space.ui import publish_tab

    run_id = "20260101-000000-gguf-tab-a1b2"
    run = make_run(tmp_path, "llama", probes="Hi", run=rundir.runs_root() / run_id)
    rundir.write_owner(run, "browser:alice")
    quiet = lambda fraction, desc=None: None  # noqa: E731
    estimate = publish_tab.gguf_state(run_id, "browser:alice", ["q8_0", "f16"])
    assert estimate.startswith("Before it starts: ") and "q8_0 about" in estimate and "free on the disk" in estimate
    for visitor, asked in (("browser:mallory", run_id), ("browser:alice", str(run)), ("browser:alice", "../x")):
        with pytest.raises(gr.Error):
            publish_tab.export_gguf_files(asked, visitor, ["q8_0"], progress=quiet)
        with pytest.raises(gr.Error):
            publish_tab.gguf_state(asked, visitor, ["q8_0"])
    assert not list(rundir.gguf_dir(run).glob("*.gguf"))
    with publish_tab._exporting:  # another visitor's export is running: this one waits its turn, told so
        with pytest.raises(gr.Error, match="Another GGUF export is running"):
            publish_tab.export_gguf_files(run_id, "browser:alice", ["q8_0"], progress=quiet)
    text, files = publish_tab.export_gguf_files(run_id, "browser:alice", ["q8_0"], progress=quiet)
    assert "**GGUF export**" in text and "probe replies identical" in text and "held-out loss" in text
    handed = [Path(f) for f in files]
    assert {p.name for p in handed} == {rundir.gguf_file_name(run, "q8_0"), "Modelfile", "README.md"}
    assert all(p.parent.parent == handed_out_dir() for p in handed) and len({p.parent for p in handed}) == 1
    assert "Last export:" in publish_tab.gguf_state(run_id, "browser:alice", ["q8_0"])
    card = publish_tab.preview(run_id, "browser:alice", "tiny", "adapter", True)
    assert "### GGUF (llama.cpp, Ollama)" in card


@pytest.mark.slow
def test_bundled_smollm2_after_training_exports_q8_0_that_answers_like_the_tuned_model(tmp_path, sft_home):
    run = tmp_path / "smollm2"
    result = run_cli(
        "--model",
        "bundled",
        "--dataset",
        "demo:json-extract",
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "2",
        "--max_length",
        "128",
        "--learning_rate",
        "0.0004",
        "--logging_steps",
        "2",
        "--eval_steps",
        "4",
        "--eval_max_rows",
        "2",
        "--output_dir",
        str(run),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = export_gguf.export_gguf(run, ["q8_0"])
    file_entry = report["files"][0]
    check = file_entry["verification"]
    assert file_entry["metadata"]["architecture"] == "llama" and file_entry["metadata"]["eos_token"] == "<|im_end|>"
    assert 100e6 < file_entry["bytes"] < 200e6  # 135M weights in 8-bit blocks
    assert check["prompt_tokens_identical"] == check["prompts"]
    # Measured on a 10-step Quick demo run: Q8_0 agreed with base + adapter on the first 17/17, 8/42 and 24/48
    # reply tokens of the three probe prompts (f16: 2 of 3 replies identical; its logits equal those of the merged
    # model rounded to f16 exactly, so what differs is the rounding of near-tied next tokens).
    assert max(check["first_tokens_agreeing"]) >= 8, check["examples"]
    assert abs(check["loss_difference"]) <= Q8_LOSS_TOLERANCE
    assert report["template"]["matches"]
