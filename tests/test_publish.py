"""Publishing against the local Hub test server with the real huggingface_hub client: sign-in check, pushes of the
adapter and the merged model in one commit, private and existing repos, 401/403, a flaky server, the model card
field by field, the token never written anywhere; export (the standalone script runs and trains the same steps);
Jobs submission; a 2-process run under `accelerate launch` on the CPU (gloo)."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sft_space import rundir
from sft_space.export import SCRIPT_NAME, YAML_NAME, export_run, trl_command
from sft_space.publishing import jobs, publish
from sft_space.publishing.card import model_card

from helpers import ROOT, TINY_FAST, build_tiny_model, run_cli, use_test_hub
from hub_server import HubServer

TOKEN = "hf_aliceSECRETwriteToken0123456789"  # fake, known: grepped for afterwards
BOB = "hf_bobSECRETwriteToken98765432100"


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = build_tiny_model(tmp_path_factory.mktemp("base") / "tiny-llama")
    with HubServer() as hub_server:
        hub_server.users.update({TOKEN: "alice", BOB: "bob"})
        card = "---\nlicense: mit\n---\n# A tiny chat model\n"  # as on the Hub: the license in the README
        hub_server.add_repo(
            "acme/tiny-llama-chat",
            {**folder_files(base), "README.md": card},
            kind="model",
            card_data={"license": "mit"},
        )
        hub_server.add_repo(
            "acme/recipes",
            {
                "train.jsonl": "".join(
                    json.dumps({"instruction": f"Double {i}", "input": "", "output": str(2 * i)}) + "\n"
                    for i in range(24)
                )
            },
        )
        hub_server.add_repo("bob/existing", {"README.md": "# bob's"}, kind="model")
        yield hub_server


@pytest.fixture(scope="module")
def online_env(server, tmp_path_factory):
    home = tmp_path_factory.mktemp("hf-home")
    with pytest.MonkeyPatch.context() as patch:
        use_test_hub(patch, server.url, home)
        patch.setattr(publish, "BACKOFF_SECONDS", 0.05)  # retries without the real waits
        yield home


@pytest.fixture(scope="module")
def run_dir(online_env, tmp_path_factory):
    """A run of a Hub model on a Hub dataset, so the card's links and its usage snippet can be checked for real."""
    target = tmp_path_factory.mktemp("runs") / "published"
    result = run_cli(
        "--model",
        "acme/tiny-llama-chat",
        "--max_steps",
        "4",
        "--output_dir",
        str(target),
        *TINY_FAST,
        "--dataset",
        "acme/recipes",
        "--probe_prompts",
        "Double 3\nDouble 5",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return target


def test_push_adapter_in_one_commit_with_a_card(server, run_dir):
    record = publish.push_run(run_dir, "tiny-recipes", TOKEN)
    assert record["repo_id"] == "alice/tiny-recipes" and record["kind"] == "adapter"
    repo = server.repos[("model", "alice/tiny-recipes")]
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md", "loss.png"} <= set(
        repo.files
    )
    assert [c["repo"] for c in server.commits].count("alice/tiny-recipes") == 1
    assert repo.files["loss.png"][:8] == b"\x89PNG\r\n\x1a\n"
    published = rundir.read_published(run_dir)
    assert published["pushes"][-1]["repo_id"] == "alice/tiny-recipes"


def test_model_card_documents_the_run(server, run_dir):
    evaluation = subprocess.run(
        [sys.executable, "-m", "sft_space.judging.evaluate", str(run_dir), "--count", "2", "--loss_rows", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    card = model_card(run_dir, "alice/tiny-recipes")
    meta, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "base_model: acme/tiny-llama-chat" in meta and "library_name: peft" in meta
    assert "license: mit" in meta and '- "acme/recipes"' in meta and '- "sft"' in meta
    assert "[acme/tiny-llama-chat](https://huggingface.co/acme/tiny-llama-chat)" in body
    assert "[acme/recipes](https://huggingface.co/datasets/acme/recipes)" in body
    status = json.loads((run_dir / "status.json").read_text())
    assert f"Rows: {status['train_rows']} training, {status['validation_rows']} validation" in body
    assert "Format: alpaca -> messages" in body and "Tokens per training row: min" in body
    commit = server.repos[("dataset", "acme/recipes")].sha  # the commit training read, for every later reader
    assert status["data_revision"] == commit and f"commit `{commit[:12]}`" in body
    config = json.loads((run_dir / "config.json").read_text())
    for name in (
        "learning_rate",
        "per_device_train_batch_size",
        "max_length",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "warmup_ratio",
        "lr_scheduler_type",
        "seed",
    ):
        assert f"| {name} | `{config[name]}` |" in body, name
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final_loss = [m["loss"] for m in metrics if "loss" in m][-1]
    final_eval = [m["eval_loss"] for m in metrics if "eval_loss" in m][-1]
    assert f"Final training loss **{final_loss:.4f}**, validation loss **{final_eval:.4f}**" in body
    assert "![Training and validation loss](loss.png)" in body
    assert "| Double 3 |" in body and "| Double 5 |" in body  # probe prompts, base vs tuned
    results = json.loads((run_dir / "eval.json").read_text())
    assert "## Evaluation" in body and "Loss on 2 held-out rows" in body
    assert f"| held-out loss (answers) | {results['base']['heldout']['loss']:.3f} | " in body
    assert "## Intended use and limitations" in body and "PeftModel.from_pretrained" in body


def test_usage_snippet_from_the_card_runs(server, run_dir):
    """The card's Python snippet, run as a user would paste it (models come from the test server)."""
    repo = server.repos[("model", "alice/tiny-recipes")]
    card = repo.files["README.md"].decode()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("max_new_tokens=128", "max_new_tokens=4")
    result = subprocess.run(
        [sys.executable, "-c", snippet],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "0"},
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_push_merged_model_checks_it_first(server, run_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from sft_space.run_model import generate_once, load_chat_model, unload

    record = publish.push_run(run_dir, "tiny-merged", TOKEN, merged=True)
    files = server.repos[("model", "alice/tiny-merged")].files
    assert "model.safetensors" in files and "config.json" in files and "adapter_model.safetensors" not in files
    assert "library_name: transformers" in files["README.md"].decode()
    from huggingface_hub import snapshot_download

    merged = AutoModelForCausalLM.from_pretrained(
        snapshot_download("alice/tiny-merged", endpoint=server.url, token=TOKEN)
    )
    loaded = load_chat_model(run_dir)
    try:
        expected = generate_once(loaded, [{"role": "user", "content": "Double 3"}], max_new_tokens=8)
        inputs = loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": "Double 3"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            output = merged.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=8,
                eos_token_id=loaded.tokenizer.eos_token_id,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
        text = loaded.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    finally:
        unload()
    assert text == expected["text"] and record["kind"] == "merged"


def test_private_repo_and_an_existing_repo(server, run_dir):
    publish.push_run(run_dir, "alice/secret-model", TOKEN, private=True)
    assert server.repos[("model", "alice/secret-model")].private
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):  # invisible without the owner's token
        HfApi(endpoint=server.url, token=False).model_info("alice/secret-model")
    publish.push_run(run_dir, "alice/secret-model", TOKEN, private=True)  # pushing again updates the same repo
    assert [c["repo"] for c in server.commits].count("alice/secret-model") == 2


def test_bad_token_and_foreign_repo_are_refused_and_keep_the_run(server, run_dir):
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(PermissionError, match="sign in again"):
        publish.push_run(run_dir, "x", "hf_revokedTOKEN000000000000")
    with pytest.raises(PermissionError, match="may not write"):
        publish.push_run(run_dir, "bob/existing", TOKEN)
    with pytest.raises(PermissionError, match="Sign in with Hugging Face first"):
        publish.push_run(run_dir, "x", None)
    assert server.repos[("model", "bob/existing")].files == {"README.md": b"# bob's"}
    assert sorted(p.name for p in run_dir.iterdir()) == before and (run_dir / "adapter").is_dir()


def test_flaky_server_retries_and_never_leaves_half_a_push(server, run_dir):
    server.fail_commits = 2
    messages = []
    publish.push_run(run_dir, "flaky", TOKEN, progress=lambda fraction, message: messages.append(message))
    assert server.fail_commits == 0 and sum("retrying" in m for m in messages) == 2
    assert [c["repo"] for c in server.commits].count("alice/flaky") == 1  # two failed tries committed nothing
    server.fail_commits = 10
    with pytest.raises(RuntimeError, match="uploading to alice/flaky2 failed"):
        publish.push_run(run_dir, "flaky2", TOKEN)
    assert server.repos[("model", "alice/flaky2")].files == {}  # created, but not one file half-written
    server.fail_commits = 0


def test_export_runs_as_is_and_trains_the_same_steps(run_dir, tmp_path):
    archive = export_run(run_dir)
    export = rundir.export_dir(run_dir)
    assert archive.is_file() and (export / "data" / "train.jsonl").is_file()
    status = json.loads((run_dir / "status.json").read_text())
    rows = (export / "data" / "train.jsonl").read_text().splitlines()
    assert len(rows) == status["train_rows"]
    assert "--use_peft" in trl_command(run_dir) and "max_steps: 4" in (export / YAML_NAME).read_text()
    script = (export / SCRIPT_NAME).read_text()
    assert "sft_space" not in script.replace("sft_space_job", "")  # TRL/PEFT/transformers/datasets only
    result = subprocess.run(
        [sys.executable, str(export / SCRIPT_NAME), "--output_dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"trained {status['step']} steps" in result.stdout
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    # TRL's own command line with the exported YAML, from the export folder (where data/ is)
    trl = Path(sys.executable).with_name("trl")
    result = subprocess.run(
        [str(trl), "sft", "--config", YAML_NAME, "--output_dir", str(tmp_path / "trl-out")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=export,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((tmp_path / "trl-out" / f"checkpoint-{status['step']}" / "trainer_state.json").read_text())
    assert state["global_step"] == status["step"]


def test_jobs_submission_and_status(server, run_dir):
    record = jobs.submit_job(run_dir, "tiny-on-jobs", TOKEN, flavor="t4-small")
    job = server.jobs[record["job_id"]]
    assert job["flavor"] == "t4-small" and job["command"][:2] == ["uv", "run"]
    assert "--push_to_hub" in job["command"] and "alice/tiny-on-jobs" in job["command"]
    assert job["environment"]["SFT_SPACE_REPO"] == "alice/tiny-on-jobs"
    files = server.repos[("model", "alice/tiny-on-jobs")].files
    assert {"sft_space_job/train_sft.py", "sft_space_job/data/train.jsonl"} <= set(files)
    report = jobs.job_report(run_dir, TOKEN)
    assert report["stage"] == "RUNNING" and report["logs"][-1] == "Pushed"
    # No Jobs container exists here, so the job's own command runs locally, after its `uv run --with ...` prefix,
    # with the environment and secret the job gets: it fetches script and data from the repo, trains, pushes.
    command = job["command"][job["command"].index("python") + 1 :]
    result = subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=run_dir.parent,
        env={**os.environ, **job["environment"], "HF_TOKEN": TOKEN},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert f"trained {status['step']} steps" in result.stdout
    assert "adapter_model.safetensors" in server.repos[("model", "alice/tiny-on-jobs")].files
    with pytest.raises(ValueError, match="Unknown hardware flavor"):
        jobs.submit_job(run_dir, "x", TOKEN, flavor="quantum")


def test_token_is_never_written_or_logged(server, run_dir, online_env, caplog, capfd):
    """After pushes, a failed push, an export and a job: grep every file the run, the app home and the Hub
    client wrote, and the captured logs, for the token."""
    caplog.set_level(logging.DEBUG)
    publish.push_run(run_dir, "grep-me", TOKEN)
    with pytest.raises(PermissionError) as refused:
        publish.push_run(run_dir, "bob/existing", TOKEN)
    assert TOKEN not in str(refused.value)
    jobs.submit_job(run_dir, "grep-job", TOKEN)
    places = [run_dir, Path(os.environ["SFT_SPACE_HOME"]), online_env]
    leaks = [
        str(p) for place in places for p in Path(place).rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()
    ]
    assert leaks == []
    out, err = capfd.readouterr()
    assert TOKEN not in out + err and TOKEN not in caplog.text
    for repo in server.repos.values():
        assert not any(TOKEN.encode() in data for data in repo.files.values())


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_with_gloo(tiny_model, tmp_path):
    target = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "sft_space.train",
            "--model",
            str(tiny_model),
            "--max_steps",
            "4",
            "--output_dir",
            str(target),
            *TINY_FAST,
            "--precision",
            "fp32",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = json.loads((target / "status.json").read_text())
    assert status["state"] == "completed" and status["processes"] == 2 and "gloo" in status["distributed_backend"]
    assert "(process 1 of 2)" in result.stdout and "(process 0 of 2)" in result.stdout
    steps = [
        json.loads(line)["step"]
        for line in (target / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert steps == sorted(set(steps)) and steps[-1] == 4  # one writer: no step logged twice
    assert (target / "adapter" / "adapter_model.safetensors").is_file()


def served_status(address: str) -> int:
    """The HTTP status the app answers for an address."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(address, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def home_outside_tmp(monkeypatch):
    """An app home where a user's is (~/.cache), outside the temp and working folders Gradio serves by default."""
    home = Path.home() / ".cache" / f"sft-space-test-{os.getpid()}"
    monkeypatch.setenv("SFT_SPACE_HOME", str(home))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_publish_through_the_app_with_a_typed_token(server, online_env, tiny_model, home_outside_tmp, capfd):
    """The launched app driven by gradio_client: train, push with a pasted token, a failing push offers Retry,
    export (its zip downloads from the run directory in the app's home); then no file of the app's home and no
    line of its output holds the token."""
    from gradio_client import Client

    from helpers import launched_app, wait_until

    tiny = dict(
        per_device_train_batch_size=2,
        max_length=128,
        logging_steps=1,
        eval_steps=2,
        eval_max_rows=4,
        save_steps=100,
        learning_rate=0.005,
        max_steps=2,
    )
    with launched_app() as url:
        client = Client(url, verbose=False)
        client.predict(dataset="demo:json-extract", model=str(tiny_model), **tiny, api_name="/start_run")
        wait_until(
            lambda: "completed" in client.predict(api_name="/run_status")[0],
            timeout=300,
            poll=1,
            what="the run to finish",
        )
        # the API returns the message (the Retry button beside it is for the page)
        result = client.predict("from-the-app", False, "adapter", TOKEN, api_name="/push_to_hub")
        assert result.startswith("Pushed the LoRA adapter to [alice/from-the-app]"), result
        assert "README.md" in server.repos[("model", "alice/from-the-app")].files
        server.fail_commits = 10
        result = client.predict("from-the-app-2", False, "adapter", TOKEN, api_name="/push_to_hub")
        server.fail_commits = 0
        assert result.startswith("**Push failed:**") and "press **Retry**" in result
        result = client.predict("from-the-app", False, "adapter", "hf_expiredTOKEN0000000000", api_name="/push_to_hub")
        assert "sign in again" in result and "hf_expiredTOKEN" not in result
        command, yaml, archive = client.predict(api_name="/export_run")
        assert command.startswith("trl sft") and "use_peft: true" in yaml and archive.endswith(".zip")
        with zipfile.ZipFile(archive) as exported:  # the file the page offers for download
            assert {"train_sft.py", "sft_settings.json", "sft_config.yaml", "data/train.jsonl"} <= set(
                exported.namelist()
            )
        run_file = next((Path(os.environ["SFT_SPACE_HOME"]) / "runs").glob("*/status.json"))
        for path in (run_file, run_file.parent / "config.json", run_file.parent / "export" / "data" / "train.jsonl"):
            assert served_status(f"{url.rstrip('/')}/gradio_api/file={path}") in (403, 404), path  # never served
    home = Path(os.environ["SFT_SPACE_HOME"])
    assert [str(p) for p in home.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()] == []
    out, err = capfd.readouterr()
    assert TOKEN not in out + err


def test_a_space_never_pushes_with_its_own_token(monkeypatch):
    """On a Space, HF_TOKEN is the owner's secret: visitors push only with their own sign-in or pasted token."""
    monkeypatch.setenv("HF_TOKEN", "hf_ownerSECRETtoken0000000000")
    assert publish.resolve_token(None) == "hf_ownerSECRETtoken0000000000"  # a laptop: the user's own environment
    monkeypatch.setenv("SPACE_ID", "someone/sft-space")
    assert publish.resolve_token(None) is None and publish.resolve_token("") is None
    assert publish.resolve_token(" hf_visitorTOKEN ") == "hf_visitorTOKEN"
    with pytest.raises(PermissionError, match="Sign in with Hugging Face first"):
        publish.signed_in_user(publish.resolve_token(None))
