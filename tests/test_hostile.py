"""A stranger's requests against the launched app: quotas, stalls, clean-up and deletion. Each attack is refused
with a message that says why, and the victim's run, files and state stay as they were.

Forged visitor ids, run files by URL, typed server paths and the Space owner's token are covered in
test_visitors.py, test_browser.py and test_hub_data.py; a reused pid, a live resume and a corrupt owner in
test_processes.py; a full disk in test_recovery.py.
"""

import os
import tempfile
import threading
import time

import pytest
from gradio_client import Client

from sft_space import rundir
from sft_space.config import RunConfig
from sft_space.judging import scorers
from sft_space.runs import cleanup
from sft_space.runs import lifecycle as runs
from sft_space.runs import queue as run_queue

from helpers import app_settings, launched_app, run_cli, run_id_of, wait_until


@pytest.fixture(scope="module")
def app_url():
    with launched_app() as url:
        yield url


def chat(client, run_id, message="Table for two at 7pm", max_new_tokens=8):
    return client.predict(
        message=message,
        tuned_history=[],
        base_history=[],
        run_id=run_id,
        system_prompt="",
        compare=False,
        seed=0,
        temperature=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        repetition_penalty=1.0,
        api_name="/chat",
    )


def test_quotas_refuse_with_their_reasons(app_url, tiny_model, monkeypatch):
    """The owner's quota variables (a public host's defaults, set smaller here) through the launched app."""
    for name, value in {
        "RUNS_PER_ADDRESS": "1",
        "TRAIN_TOKENS": "2000000",
        "CHECKPOINTS": "20",
        "RUN_MINUTES": "0.25",
        "EVAL_ROWS": "50",
        "CHAT_TOKENS_PER_HOUR": "8",
        "MAX_NEW_TOKENS": "300",
        "LORA_R": "64",
    }.items():
        monkeypatch.setenv("SFT_SPACE_" + name, value)
    first, script = Client(app_url, verbose=False), Client(app_url, verbose=False)

    with pytest.raises(Exception, match=r"could train on up to 32,768,000,000,000 tokens .* allows 2,000,000 per run"):
        first.predict(**app_settings(tiny_model, 10**9, per_device_train_batch_size=256), api_name="/start_run")
    with pytest.raises(Exception, match="save_steps 1 writes 100 checkpoints in 100 steps; .* at least 5"):
        first.predict(**app_settings(tiny_model, 100, save_steps=1), api_name="/start_run")
    monkeypatch.setenv("SFT_SPACE_MODEL_BILLIONS", "0.000001")
    with pytest.raises(Exception, match=r"B parameters; this Space trains models up to 1e-06B"):
        first.predict(**app_settings(tiny_model, 10), api_name="/start_run")
    monkeypatch.delenv("SFT_SPACE_MODEL_BILLIONS")
    with pytest.raises(Exception, match="lora_r 1024: this Space trains LoRA ranks up to 64"):
        first.predict(**app_settings(tiny_model, 10, lora_r=1024), api_name="/start_run")
    assert not [r for r in runs.list_runs(None) if r["state"] in runs.ACTIVE_STATES]  # nothing was queued

    # a run of many steps: the 15-second budget stops it and saves the adapter
    run_id = run_id_of(first.predict(**app_settings(tiny_model, 5000), api_name="/start_run"))
    wait_until(lambda: rundir.read_status(run_id).get("state") == "running", timeout=60, what="the run to start")
    # a second client (a script minting itself a new id) from the same address gets no second run
    with pytest.raises(Exception, match="A run started from your address without signing in is training or waiting"):
        script.predict(**app_settings(tiny_model, 4), api_name="/start_run")
    status = run_queue.wait_for(run_id, timeout=180)
    assert status["state"] == "stopped" and status["step"] < 5000, status
    assert "time budget of 0.25 min reached" in status["note"] and "resume the run" in status["note"]
    assert rundir.has_adapter(run_id)
    bar = first.predict(api_name="/run_status")[0]
    assert "time budget of 0.25 min reached" in bar

    with pytest.raises(Exception, match="this Space scores at most 50 per evaluation"):
        first.predict(run_id=run_id, count=1000, scorer="auto", pattern="", api_name="/evaluate")
    with pytest.raises(Exception, match="replies here are at most 300"):
        chat(first, run_id, max_new_tokens=4000)
    chat(first, run_id)  # books its 8 tokens: what it leaves of this hour's 8 is less than the next reply's 8
    with pytest.raises(Exception, match="this hour's 8 chat tokens"):
        chat(first, run_id)
    # Evaluate and the baselines generate too: the same budget, booked before any model work (a visitor refused
    # for chat once ran Evaluate on 200 prompts for 142 s)
    started = time.monotonic()
    with pytest.raises(Exception, match="this hour's 8 chat tokens on this Space .*chat, Evaluate and the baselines"):
        first.predict(run_id=run_id, count=2, scorer="auto", pattern="", api_name="/evaluate")
    with pytest.raises(Exception, match="this hour's 8 chat tokens on this Space .*chat, Evaluate and the baselines"):
        first.predict(
            run_id=run_id, count=2, shots=1, instructions="", scorer="auto", pattern="", api_name="/compare_baselines"
        )
    assert time.monotonic() - started < 10
    # a value that is not a number gets a message naming the field, not an empty error
    with pytest.raises(Exception, match="Held-out prompts must be a number, not 'abc'"):
        first.predict(run_id=run_id, count="abc", scorer="auto", pattern="", api_name="/evaluate")


def test_a_template_width_and_a_catastrophic_pattern_do_not_stall_the_app(app_url):
    started = time.time()
    with pytest.raises(Exception, match=r"\{prompt:x>50000000\} is not a bare column name"):
        Client(app_url, verbose=False).predict(
            dataset="demo:json-extract", data_format="template", text_template="{prompt:x>50000000}",
            api_name="/preview_dataset",
        )  # fmt: skip
    assert time.time() - started < 30

    # (a|aa)+$ against "aaa...ab" backtracks for ever (the regex package defuses (a+)+$ itself, this one it does
    # not); the check stops at its time limit, and releases the interpreter meanwhile, so another thread (another
    # visitor's request) keeps running.
    ticks = []
    stop = threading.Event()

    def other_visitor():
        while not stop.is_set():
            ticks.append(time.time())
            time.sleep(0.01)

    thread = threading.Thread(target=other_visitor)
    thread.start()
    started = time.time()
    try:
        with pytest.raises(ValueError, match=r"took longer than 0.5 s on one reply .* simplify it"):
            scorers.score_replies(["a" * 60 + "b"], ["x"], {"kind": "regex", "pattern": "(a|aa)+$"})
    finally:
        stop.set()
        thread.join()
    assert time.time() - started < 5
    during = [t for t in ticks if started < t < started + 0.5]
    assert len(during) > 10, "the other thread was frozen while the pattern ran"


def test_a_broken_data_file_on_the_command_line_is_one_line_and_exit_2(tiny_model, tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": \n')
    run_dir = tmp_path / "run"
    result = run_cli("--model", str(tiny_model), "--dataset", str(data), "--output_dir", str(run_dir), timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "broken.jsonl" in errors[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "Traceback" in rundir.log_path(run_dir).read_text()  # the details stay in train.log
    assert rundir.read_status(run_dir)["state"] == "failed"


def test_delete_is_for_the_owner_and_never_a_live_run(app_url, tiny_model):
    owner, stranger = Client(app_url, verbose=False), Client(app_url, verbose=False)
    run_id = run_id_of(owner.predict(**app_settings(tiny_model, 3000), api_name="/start_run"))
    wait_until(lambda: rundir.read_status(run_id).get("step", 0) >= 1, timeout=120, what="the run to train")
    with pytest.raises(Exception, match="belongs to another visitor"):
        stranger.predict(run_id=run_id, selected=[], api_name="/delete_run")
    with pytest.raises(Exception, match="stop or cancel it before deleting it"):
        owner.predict(run_id=run_id, selected=[], api_name="/delete_run")
    owner.predict(api_name="/stop_run")
    run_queue.wait_for(run_id, timeout=120)
    assert rundir.run_path(run_id).is_dir()  # the stranger's and the early delete left it alone
    owner.predict(run_id=run_id, selected=[], api_name="/delete_run")
    assert not rundir.run_path(run_id).exists()


def test_clean_up_removes_only_what_is_old_and_idle(tmp_path, monkeypatch):
    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path / "home"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # this test's own temp folder
    now = time.time()
    day = 86400

    def run(name, state, age_days):
        run_dir = rundir.runs_root() / name
        run_dir.mkdir(parents=True)
        rundir.write_config(run_dir, RunConfig(dataset=str(cleanup.uploads_dir() / f"{name}.jsonl")))
        rundir.write_status(run_dir, state=state, created_at=now - age_days * day, ended_at=now - age_days * day)
        return run_dir

    old, recent, live = run("old", "completed", 10), run("recent", "failed", 1), run("live", "running", 30)
    cleanup.uploads_dir().mkdir(parents=True)
    stale_upload = cleanup.uploads_dir() / "someone.jsonl"
    used_upload = cleanup.uploads_dir() / "live.jsonl"  # old, but a live run trains on it
    for path in (stale_upload, used_upload):
        path.write_text("{}\n")
        os.utime(path, (now - 10 * day, now - 10 * day))
    handed = cleanup.handed_out_dir() / "export-x"
    handed.mkdir()
    os.utime(handed, (now - 7200, now - 7200))

    assert cleanup.clean_up(None, now=now) == [str(handed)]  # a private machine keeps runs and uploads
    assert old.exists()
    removed = cleanup.clean_up(3, now=now)
    assert sorted(removed) == ["runs/old", "uploads/someone.jsonl"]
    assert recent.exists() and live.exists() and used_upload.exists()


def test_the_disk_check_counts_a_hub_models_download(tmp_path, monkeypatch):
    """A 70B model was once estimated at 413 MB (checkpoints only): its download now counts, from the Hub's
    safetensors headers, before anything is fetched."""
    from sft_space.models.facts import ModelFacts
    from sft_space.training import estimates

    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path))
    big = ModelFacts(
        choice="acme/huge",
        source="hub",
        config={"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80},
        tensors={f"layer{i}.weight": ("BF16", [8192, 8192 * 8]) for i in range(80)},  # 80 x 1 GiB
        has_chat_template=True,
    )
    config = RunConfig(model="acme/huge")
    assert big.weight_bytes == 80 * 2**30
    assert estimates.needed_bytes(config, big) - estimates.needed_bytes(config) == 80 * 2**30
    monkeypatch.setattr(estimates, "free_bytes", lambda: 50 * 2**30)
    with pytest.raises(RuntimeError, match=r"needs about 8[0-9],[0-9]{3} MB \(the model's download"):
        estimates.check_disk(config, big)


def test_parallel_starts_from_one_visitor_give_one_run(tiny_model, tmp_path, monkeypatch):
    """Four starts at once from one visitor (the app serves four requests at a time): one run, three refusals."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path))
    monkeypatch.setenv("SFT_SPACE_RUNS_PER_VISITOR", "1")
    config = RunConfig(**{**app_settings(tiny_model, 3000), "model": str(tiny_model)})

    def start(_):
        try:
            return runs.start_run(config, owner="browser:greedy")
        except RuntimeError as error:
            return error

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(start, range(4)))
    started = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, RuntimeError)]
    try:
        assert len(started) == 1 and len(refused) == 3, outcomes
        assert all("You already have a run training or waiting" in str(e) for e in refused)
    finally:
        for run_id in started:
            runs.cancel_run(run_id, "browser:greedy")
            run_queue.wait_for(run_id, timeout=120)


def test_chat_generation_is_served_in_arrival_order():
    from sft_space.run_model import FairLock

    lock, served, arrived = FairLock(), [], []
    gate = threading.Event()

    def visitor(name):
        arrived.append(name)
        with lock:
            served.append(name)

    with lock:  # someone is generating; five visitors arrive one after another
        threads = []
        for name in "abcde":
            threads.append(threading.Thread(target=visitor, args=(name,)))
            threads[-1].start()
            wait_until(lambda: len(arrived) == len(threads) and len(lock._waiting) == len(threads) + 1, timeout=5)
        gate.set()
    for thread in threads:
        thread.join()
    assert served == list("abcde")


def test_on_a_public_host_a_hub_dataset_is_never_loaded_into_the_app_to_plan_a_run(monkeypatch):
    """Epochs over a Hub dataset are planned from the most rows a run may read, not by downloading it here."""
    import sft_space.data as data
    from sft_space.host import limits
    from sft_space.training import estimates

    def no_download(*args, **kwargs):
        raise AssertionError("the whole dataset was read in the app process")

    monkeypatch.setattr(data, "load_for_run", no_download)
    monkeypatch.setenv("SFT_SPACE_PUBLIC", "1")
    config = RunConfig(dataset="acme/huge-chat", max_steps=-1, num_train_epochs=1, per_device_train_batch_size=8)
    rows = limits.current().dataset_rows
    assert estimates.planned_steps(config) == -(-rows // 8)
    with pytest.raises(ValueError, match="could train on up to"):  # and the token budget says so before queueing
        limits.check_run(config, estimates.planned_steps(config), 135_000_000)


def test_a_reply_books_its_tokens_before_it_starts():
    """Parallel chat requests cannot all pass the hourly budget: each reply books its most tokens up front and
    gives back what it did not use."""
    from sft_space.host.limits import ChatBudget

    budget = ChatBudget()
    first = budget.reserve("browser:v", 10, 8)  # in flight
    with pytest.raises(ValueError, match=r"would pass this hour.s 10 chat tokens on this Space \(2 left; chat, Eval"):
        budget.reserve("browser:v", 10, 8)  # a second request at the same moment
    budget.settle(first, 2)  # the first reply was short
    second = budget.reserve("browser:v", 10, 8)
    assert second is not None and budget.reserve("browser:other", 10, 8) is not None  # budgets are per visitor
    with pytest.raises(ValueError, match=r"used this hour.s 10 chat tokens on this Space \(chat, .*\): try again in"):
        budget.reserve("browser:v", 10, 1)
