"""A stranger's work in the shared app process stays bounded ([hardening]): uploads per request, regexes, templates,
rows read from an upload, previews; each against the launched app, with the public host's limits in force."""

import gc
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from sft_space import rundir

from helpers import TINY_FAST, launched_app, run_cli, wait_until


@pytest.fixture(scope="module")
def app_url():
    with launched_app() as url:
        yield url


@pytest.fixture
def public(monkeypatch):
    monkeypatch.setenv("SFT_SPACE_PUBLIC", "1")


def upload(url: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    return httpx.post(
        f"{url}gradio_api/upload", files=[("files", (name, data, "application/json")) for name, data in files]
    )


def test_one_upload_request_carries_one_file_of_the_capped_size(app_url, public, monkeypatch):
    """Gradio caps one file's size; a script posting three at once (each under the cap) is refused with 413 and
    the reason, a declared length over the cap is refused before anything is read, and one file still uploads."""
    monkeypatch.setenv("SFT_SPACE_UPLOAD_MB", "1")
    row = b'{"prompt": "hi", "completion": "there"}\n'
    part = row * (400_000 // len(row))
    three = upload(app_url, [(f"f{i}.jsonl", part) for i in range(3)])
    assert three.status_code == 413 and "at most 1 file(s)" in three.text
    big = upload(app_url, [("big.jsonl", part * 4)])
    assert big.status_code == 413 and "at most 1 file(s) and 1 MB" in big.text
    one = upload(app_url, [("one.jsonl", part)])
    assert one.status_code == 200, one.text
    (path,) = one.json()
    assert os.path.getsize(path) == len(part)


SEND_BODY = """
import http.client, sys, urllib.parse
url, mode = urllib.parse.urlparse(sys.argv[1]), sys.argv[2]
body = b'{"data": ["' + b"a" * (300 * 2**20) + b'"], "fn_index": 0, "session_hash": "x"}'
connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
try:
    if mode == "declared":
        connection.request("POST", "/gradio_api/queue/join", body=body, headers={"Content-Type": "application/json"})
    else:
        pieces = (body[i : i + 2**20] for i in range(0, len(body), 2**20))
        connection.request("POST", "/gradio_api/queue/join", body=pieces, encode_chunked=True,
                           headers={"Content-Type": "application/json"})
    answer = connection.getresponse()
    print(answer.status, answer.read().decode()[:200])
except (ConnectionError, OSError) as error:  # the server closed while the rest was still being sent
    print("closed", error)
"""


def test_every_request_body_is_capped_declared_or_chunked_and_a_refused_upload_leaves_nothing(app_url, public):
    """A 300 MB JSON body to the queue needs no Gradio session: it is refused at its declared length before a byte
    is read, and the same body sent chunked (no length) is cut off at the cap as it streams, the app's memory flat
    either way (the body is sent from another process, so only the app's memory is measured here). A chunked upload
    is refused before the parser writes anything, so no partial file stays behind."""
    import subprocess
    import sys

    from gradio import utils as gradio_utils

    def send(mode: str) -> str:
        done = subprocess.run([sys.executable, "-c", SEND_BODY, app_url, mode], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-1000:]
        return done.stdout

    answers = {}
    assert peak_growth_mb(lambda: answers.update(declared=send("declared"))) < 20
    assert answers["declared"].startswith("413") and "at most 2,048 KB" in answers["declared"]
    assert peak_growth_mb(lambda: answers.update(chunked=send("chunked"))) < 40  # at most the cap was read
    assert answers["chunked"].startswith(("413", "closed")), answers["chunked"]
    small = httpx.post(f"{app_url}gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "y"})
    assert small.status_code != 413  # an ordinary body passes (Gradio answers it as it does)

    uploads = Path(gradio_utils.get_upload_folder())
    before = {p for p in uploads.rglob("*") if p.is_file()} if uploads.exists() else set()
    row = b'{"prompt": "hi", "completion": "there"}\n' * 20_000

    def stream():
        yield b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.jsonl"\r\n\r\n'
        for _ in range(50):
            yield row

    refused_upload = httpx.post(
        f"{app_url}gradio_api/upload",
        content=stream(),
        headers={"content-type": "multipart/form-data; boundary=xyz"},
        timeout=60,
    )
    assert refused_upload.status_code == 411 and "Content-Length" in refused_upload.text
    # a declared length beside Transfer-Encoding: chunked is read chunked by the server: refused the same way
    import socket
    from urllib.parse import urlparse

    where = urlparse(app_url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as raw:
        raw.sendall(
            b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n"
        )
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 411") or b" 400 " in answer.split(b"\r\n")[0], answer[:200]
    after = {p for p in uploads.rglob("*") if p.is_file()} if uploads.exists() else set()
    assert after - before == set()


def resident_mb(field: str) -> float:
    return int(Path("/proc/self/status").read_text().split(field + ":")[1].split()[0]) / 1024


def peak_growth_mb(action) -> float:
    """How far the app process's resident memory (the launched app runs in this process) rose above where it
    was while `action` ran: the peak (VmHWM) is reset first, through /proc/self/clear_refs."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = resident_mb("VmRSS")
    action()
    return resident_mb("VmHWM") - before


def refused(call, match: str):
    def action():
        with pytest.raises(Exception, match=match):
            call()

    return action


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def finished_run(tiny_model):
    """A finished command-line run in the runs folder (no owner: everyone's on a private machine)."""
    run_dir = rundir.runs_root() / "20990101-000000-hardening"
    result = run_cli("--model", str(tiny_model), "--max_steps", "2", "--output_dir", str(run_dir), *TINY_FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    yield run_dir.name
    shutil.rmtree(run_dir, ignore_errors=True)  # later tests' pages show the suite's shared runs folder


def test_a_regex_that_needs_hundreds_of_megabytes_is_refused_before_the_app_compiles_it(client, finished_run):
    """((a{100}){100}){100}: 20 characters, +420 MB in the app when compiled there (the 23-character variant
    +9 GB). It is compiled first in a bounded child process and refused with the reason."""
    growth = peak_growth_mb(
        refused(
            lambda: client.predict(
                run_id=finished_run, count=2, scorer="regex", pattern="((a{100}){100}){100}", api_name="/evaluate"
            ),
            r"The pattern '\(\(a\{100\}\)\{100\}\)\{100\}' was refused: it needs more than 256 MB to check",
        )
    )
    assert growth < 60, growth
    with pytest.raises(Exception, match="The pattern has 501 characters; at most 500"):
        client.predict(run_id=finished_run, count=2, scorer="regex", pattern="a" * 501, api_name="/evaluate")


def preview(client, **fields):
    return client.predict(**{"dataset": "demo:json-extract", **fields}, api_name="/preview_dataset")


def test_a_template_repeating_a_column_thousands_of_times_is_refused(client):
    """{messages} 4,000 times (40,000 characters) built every row 4,000 times over: +1.4 GB in the app."""
    growth = peak_growth_mb(
        refused(
            lambda: preview(client, data_format="template", text_template="{messages}" * 4000),
            "The template has 40,000 characters; at most 2,000",
        )
    )
    assert growth < 30, growth
    with pytest.raises(Exception, match="The template has 21 placeholders; at most 20"):
        preview(client, data_format="template", text_template="{messages} " * 21)


def test_rows_past_the_cap_are_never_read(client, tmp_path, monkeypatch):
    """A 10 MB CSV of 5,000,000 one-letter rows (+2 GB in the app, and 500,000 validation rows shown despite the
    20,000-row cap) and a 53 KB parquet file of 20,000,000 rows (+7.9 GB, 162 s): read row by row up to the cap
    (twice the training rows, room for validation), the rest of the file never decoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("SFT_SPACE_DATASET_ROWS", "20000")
    lines = tmp_path / "lines.csv"
    lines.write_text("text\n" + "a\n" * 5_000_000)
    packed = tmp_path / "packed.parquet"
    pq.write_table(pa.table({"text": pa.array(["b"] * 20_000_000)}), packed, row_group_size=20_000_000)
    gc.collect()
    for path in (lines, packed):
        shown = []
        growth = peak_growth_mb(lambda: shown.append(preview(client, dataset=str(path))))  # noqa: B023
        counts = shown[0][0]
        assert "the first 40,000 rows read (this Space's limit per dataset)" in counts, counts
        train, validation = (int(n.replace(",", "")) for n in re.findall(r"\*\*([\d,]+)\*\* \w+ rows", counts))
        assert train <= 20000 and validation <= 20000, counts
        assert growth < 150, (path.name, growth)


def test_a_few_kilobytes_of_parquet_that_decode_to_gigabytes_are_refused(client, tmp_path):
    """120 rows of a million characters each compress to kilobytes; read into the app they were 120 MB and more (40
    GB at the row cap). The rows of one file may hold 100,000,000 characters together: refused before that."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bomb = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"text": pa.array(["x" * 999_000] * 120)}), bomb, compression="zstd")
    assert bomb.stat().st_size < 200_000
    growth = peak_growth_mb(
        refused(lambda: preview(client, dataset=str(bomb)), "bomb.parquet holds more than 100,000,000 characters")
    )
    assert growth < 300, growth


def test_a_huge_row_never_reaches_the_page(client, tmp_path):
    """A JSONL row of 40 MB went whole to the page; now a row is at most 1,000,000 characters, and a preview cell
    shows at most 2,000 of a long one."""
    huge = tmp_path / "huge.jsonl"
    huge.write_text(json.dumps({"prompt": "x" * 40_000_000, "completion": "y"}) + "\n")
    growth = peak_growth_mb(
        refused(lambda: preview(client, dataset=str(huge)), "huge.jsonl line 1 is longer than 1,000,000 characters")
    )
    assert growth < 60, growth
    long = tmp_path / "long.jsonl"
    long.write_text(
        "".join(json.dumps({"prompt": f"{i} " + "z" * 100_000, "completion": "ok"}) + "\n" for i in range(5))
    )
    table = preview(client, dataset=str(long))[1]
    cell = table["data"][0][1]
    assert len(cell) < 2_100 and cell.endswith("more characters)"), cell[-60:]


@pytest.fixture(scope="module")
def costly_models(tiny_model, tmp_path_factory):
    """The tiny model with a chat template that loops 10^8 times, one that builds a 400 MB string, and a tokenizer
    whose split pattern backtracks on long runs of a letter (the Rust tokenizer panics)."""
    root = tmp_path_factory.mktemp("costly")
    template = (tiny_model / "chat_template.jinja").read_text()
    made = {}
    for name, prefix in {
        "looping": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        "huge": "{% set x = 'a' * 400000000 %}{{ x }}",
        "panicking": "",
    }.items():
        folder = root / name
        shutil.copytree(tiny_model, folder)
        (folder / "chat_template.jinja").write_text(prefix + template)
        made[name] = folder
    tokenizer = json.loads((made["panicking"] / "tokenizer.json").read_text())
    split = {"type": "Split", "pattern": {"Regex": "(a|aa)+$"}, "behavior": "Isolated", "invert": False}
    tokenizer["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [split, tokenizer["pre_tokenizer"]]}
    (made["panicking"] / "tokenizer.json").write_text(json.dumps(tokenizer))
    return made


@pytest.mark.parametrize(
    "name, reason",
    [
        ("looping", r"its chat template took [\d.]+ s of CPU to render one short conversation"),
        ("huge", "it needs more than 768 MB to check"),
        ("panicking", "PanicException"),
    ],
)
def test_a_costly_chat_template_or_tokenizer_is_refused_before_the_app_runs_it(client, costly_models, name, reason):
    """'What the model sees' renders the model's chat template in the app: a loop of 10^8 iterations held it 34 s,
    a 400 MB string +1.3 GB, a panicking tokenizer never answered. Each is tried in a bounded child first."""
    growth = peak_growth_mb(
        refused(
            lambda: client.predict(
                dataset="demo:json-extract",
                model=str(costly_models[name]),
                row_number=0,
                answers_only=True,
                max_length=128,
                batch_size=2,
                packing=False,
                api_name="/what_the_model_sees",
            ),  # fmt: skip
            "This model's tokenizer or chat template was refused: " + reason,
        )
    )
    assert growth < 60, growth


def test_evaluate_leaves_out_held_out_rows_longer_than_the_hosts_cap(client, finished_run, tiny_model, monkeypatch):
    """A public host scores held-out conversations up to eval_prompt_tokens (CPU Space: 1,024) and says how many it
    left out; here the cap is set between the demo rows' lengths."""
    from transformers import AutoTokenizer

    from sft_space.data import load_for_run

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    held, _ = load_for_run(rundir.read_config(finished_run)).held_out()
    from sft_space.judging.evaluate import DEFAULT_LOSS_ROWS

    scored = held[:DEFAULT_LOSS_ROWS] + held[-2:]  # the loss rows and the 2 prompts answered: no other row is read
    lengths = sorted(len(tokenizer.apply_chat_template(r["messages"], return_dict=True)["input_ids"]) for r in scored)
    cap = lengths[len(lengths) // 2]
    monkeypatch.setenv("SFT_SPACE_EVAL_PROMPT_TOKENS", str(cap))
    about, table, _ = client.predict(run_id=finished_run, count=2, scorer="auto", pattern="", api_name="/evaluate")
    left = sum(n > cap for n in lengths)
    assert f"{left} held-out rows longer than {cap:,} tokens were left out (this Space's limit)" in about, about
    assert table["data"]


def test_a_crowd_of_requests_beside_a_cpu_run_takes_a_thread_from_training(app_url, sft_home):
    """Twenty visitors' requests beside a run training on the CPU (both cores) waited on half a core: while the page
    serves a crowd (8 requests in flight: here API calls whose bodies arrive slowly) it marks itself busy, and the
    training process trains on one thread less while the mark is fresh. One request is no crowd, and neither are
    the heartbeat streams every open page holds."""
    import contextlib
    import subprocess
    import sys

    import torch

    from sft_space import SERVING_MARK, home
    from sft_space.runs import liveness
    from sft_space.training.callbacks import RunDirCallback
    from sft_space.training.run_writer import StopRequested
    from sft_space.ui.busy import BUSY_REQUESTS

    # stands in for a training process this app started (a real one would take both cores for the test's length)
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    liveness._children["20990101-000000-stand-in"] = stand_in
    mark = home() / SERVING_MARK
    mark.unlink(missing_ok=True)
    try:
        assert httpx.get(f"{app_url}gradio_api/app_id").status_code == 200
        with httpx.Client(timeout=30) as http, contextlib.ExitStack() as streams:
            for i in range(BUSY_REQUESTS + 2):  # idle pages: their heartbeats are waiting, not work
                streams.enter_context(http.stream("GET", f"{app_url}gradio_api/heartbeat/idle{i}"))
            time.sleep(1.5)
            assert not mark.exists()
        release = threading.Event()

        def slow_body():
            yield b'{"data": ['
            release.wait(10)
            yield b"]}"

        crowd = [
            threading.Thread(target=lambda: httpx.post(f"{app_url}gradio_api/call/run_status", content=slow_body()))
            for _ in range(BUSY_REQUESTS)
        ]
        for visitor in crowd:
            visitor.start()
        try:
            wait_until(mark.exists, timeout=10, what="the busy mark")
        finally:
            release.set()
            for visitor in crowd:
                visitor.join()
    finally:
        stand_in.kill()
        stand_in.wait()
        del liveness._children["20990101-000000-stand-in"]
    before = torch.get_num_threads()
    callback = RunDirCallback(sft_home, {"started_at": 0.0}, StopRequested())
    callback.cpu_threads = 2
    try:
        callback._share_the_cpu()
        assert torch.get_num_threads() == 1  # the mark is fresh
        os.utime(mark, (mark.stat().st_atime - 10, mark.stat().st_mtime - 10))
        callback._share_the_cpu()
        assert torch.get_num_threads() == 2  # the crowd left: all threads again
    finally:
        torch.set_num_threads(before)
        mark.unlink(missing_ok=True)
