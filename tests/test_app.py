"""The real app, launched on a local port and driven with gradio_client, as a script or a Space visitor would."""

import math
import re

import pytest
from gradio_client import Client

from helpers import launched_app, wait_until


@pytest.fixture(scope="module")
def app_url():
    with launched_app() as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


TINY = dict(
    per_device_train_batch_size=2,
    max_length=128,
    logging_steps=1,
    eval_steps=2,
    eval_max_rows=4,
    save_steps=100,
    learning_rate=0.005,
    max_steps=4,
    train_minutes=0,  # steps, not the page's default (the Quick demo's 3 minutes)
)


def test_dataset_preview_counts_rows(client):
    counts, table, *_ = client.predict(dataset="demo:json-extract", api_name="/preview_dataset")
    assert "**576** train rows · **64** validation rows · **120** test rows (kept for Evaluate)" in counts
    assert counts.count("test rows") == 1, counts  # said once, not again in the notes
    assert len(table["data"]) == 8 and table["data"][0][2].startswith('{"intent"')


def test_what_the_model_sees(client, tiny_model):
    view, stats, histogram = client.predict(
        dataset="demo:json-extract",
        model=str(tiny_model),
        row_number=0,
        answers_only=True,
        max_length=500,
        batch_size=4,
        packing=False,
        api_name="/what_the_model_sees",
    )
    assert [piece["class_or_confidence"] for piece in view] == [None, "trained"], view  # prompt, then the answer
    assert view[1]["token"].startswith('{"intent"') and "<|im_end|>" in view[1]["token"]
    assert "576 training rows" in stats and "longer than max_length 500" in stats
    assert histogram["x_bin"] >= 1  # the page gets a plot update: its data, bin width and colours
    columns = histogram["value"]["columns"]
    bins = [row for row in histogram["value"]["data"] if row[columns.index("rows")] is not None]  # not the empty rows
    assert sum(row[columns.index("rows")] for row in bins) == 576  # every training row in one bar
    assert {row[columns.index("part")] for row in bins} == {"within max_length"}  # nothing is past 500 tokens
    with pytest.raises(Exception, match="Row 9999 does not exist"):
        client.predict(
            dataset="demo:json-extract",
            model=str(tiny_model),
            row_number=9999,
            answers_only=True,
            max_length=40,
            batch_size=4,
            packing=False,
            api_name="/what_the_model_sees",
        )


def test_bad_settings_show_a_clear_error(client, tiny_model):
    with pytest.raises(Exception) as info:
        client.predict(
            dataset="demo:json-extract", model=str(tiny_model), **{**TINY, "learning_rate": 0}, api_name="/start_run"
        )
    message = str(info.value)
    assert "learning_rate must be above 0" in message and "Traceback" not in message


def test_train_then_chat_through_the_app(client, tiny_model):
    bar = client.predict(dataset="demo:json-extract", model=str(tiny_model), **TINY, api_name="/start_run")
    run_id = re.search(r"\*\*Run:\*\* (\S+)", bar).group(1)

    def finished():
        outputs = client.predict(api_name="/run_status")
        return outputs if ("completed" in outputs[0] or "failed" in outputs[0]) else None

    bar, progress, health, chart, lr, grad, gpu_memory, gpu_utilization, probe_prompts, probes = wait_until(
        finished, timeout=300, poll=1, what="the run to finish"
    )
    assert health.startswith("**Health:**")
    assert len(lr["data"]) == 4 and len(grad["data"]) == 4  # logged at steps 1-4
    assert gpu_memory is None and gpu_utilization is None  # a CPU run logs no GPU memory: those plots stay unbuilt
    assert run_id in bar and "completed" in bar and "step 4/4" in bar, bar
    assert "width:100.0%" in progress
    points, columns = chart["data"], chart["columns"]
    points = [row for row in points if row[columns.index("loss")] is not None]  # not the empty per-series rows
    series = {row[columns.index("series")] for row in points}
    assert series == {"train", "validation"}
    assert all(math.isfinite(row[columns.index("loss")]) for row in points)

    log = client.predict(api_name="/show_log")
    assert "Adapter saved" in log

    assert "probe 1:" in probe_prompts
    assert [row[0] for row in probes["data"]] == ["0 (base)", "2", "4"]  # before training, then each evaluation

    _, tuned, base = client.predict(
        message="Table for two at 7pm please",
        tuned_history=[],
        base_history=[],
        run_id=run_id,
        system_prompt="",
        compare=True,
        seed=0,
        temperature=0,
        top_p=1.0,
        max_new_tokens=12,
        repetition_penalty=1.0,
        api_name="/chat",
    )
    for history in (tuned, base):
        assert [m["role"] for m in history] == ["user", "assistant"]
        reply = history[-1]["content"]
        reply = reply if isinstance(reply, str) else "".join(p.get("text", "") for p in reply)
        assert reply.strip(), history

    about, table, failures = client.predict(run_id=run_id, count=2, scorer="auto", pattern="", api_name="/evaluate")
    metrics = [row[0] for row in table["data"]]
    assert "held-out loss (answers)" in metrics and "schema-valid JSON" in metrics


def test_model_check_reports_fit_and_refuses_unreachable_hub_ids(client, tiny_model):
    settings = dict(
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        max_length=256,
        lora_r=16,
        lora_target_modules="all-linear",
        gradient_checkpointing="auto",
        precision="auto",
        quantization="none",
    )
    report = client.predict(model="bundled", **settings, api_name="/check_model")
    assert "135M parameters" in report and "Fits" in report and "Gradient checkpointing: off (auto)" in report
    report = client.predict(model=str(tiny_model), **settings, api_name="/check_model")
    assert "chat template: yes" in report and "gate_proj" in report
    # the tests run with the Hub switched off, as on an offline laptop: a clear message, not a hang
    report = client.predict(model="HuggingFaceTB/SmolLM2-360M-Instruct", **settings, api_name="/check_model")
    assert report.startswith("**Error:**") and "HF_HUB_OFFLINE=1" in report
    with pytest.raises(Exception, match="HF_HUB_OFFLINE=1"):
        client.predict(
            dataset="demo:json-extract", model="HuggingFaceTB/SmolLM2-360M-Instruct", **TINY, api_name="/start_run"
        )


def test_a_machine_token_without_a_network_does_not_stop_the_app(monkeypatch):
    """HF_TOKEN set on a laptop with no network: the page builds (no sign-in button to mock), and the Publish tab
    still uses that token."""
    from sft_space.publishing.publish import resolve_token
    from sft_space.ui import build_app, sign_in_available

    monkeypatch.setenv("HF_TOKEN", "hf_laptopTOKEN000000000000000")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not sign_in_available()
    build_app()
    assert resolve_token(None) == "hf_laptopTOKEN000000000000000"
