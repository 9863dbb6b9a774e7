"""Twenty visitors on one public page, and one stranger's costly requests beside them: are the others still answered?

Launches the app as `python app.py --public` does (public mode, the queue's concurrency as in app.py), then measures
with gradio_client, in three phases:

1. idle: N visitors each repeat Data preview, Model check and the run-status poll; per-request latency.
2. training: the same while one run of the bundled model trains on the CPU.
3. attacks: while one stranger sends, one after another, the [hardening] issue's costly requests (a regex needing
   gigabytes, a 40,000-character template, a 5,000,000-row CSV, a 40 MB row, a chat template that loops, a long
   Evaluate), another visitor polls the run status every second and asks a short chat reply (8 tokens) in turn.
   The app process's peak resident memory over its start is recorded too.

Writes bench/results_load.json; prints p50 / p95 / max per phase. Never measure while something else trains.

    python bench/load.py [--visitors 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def resident_mb(field: str = "VmRSS") -> float:
    return int(Path("/proc/self/status").read_text().split(field + ":")[1].split()[0]) / 1024


def summary(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 3),
        "max_s": round(ordered[-1], 3),
    }


def visitors_phase(url: str, visitors: int, rounds: int, light: bool = False) -> dict:
    """The visitors' clients run in a process of their own, as browsers are elsewhere: their own work (HTTP, the
    event stream, JSON) must not take the app process's interpreter."""
    import multiprocessing
    import resource

    server_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result, client_cpu = pool.apply(visit_all, (url, visitors, rounds, light))
    server = resource.getrusage(resource.RUSAGE_SELF)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["app_cpu_s"] = round(server.ru_utime + server.ru_stime - server_before.ru_utime - server_before.ru_stime, 1)
    result["clients_cpu_s"] = round(client_cpu, 1)
    return result


# Each endpoint's inputs in order (the page's defaults), for the light client.
CALLS = {
    "preview": ("preview_dataset", ["demo:json-extract", "auto", "", "", "", 0.1, "", "", "", ""]),
    "check_model": ("check_model", ["bundled", 2, 1, 256, 16, "all-linear", "auto", "auto", "none"]),
    "run_status": ("run_status", []),
}


def http_call(http, url: str, api: str, data: list) -> None:
    """One call through Gradio's HTTP API (POST the inputs, read the event stream to its end), as light as a
    browser's: gradio_client's own work per call is about three times the app's."""
    event = http.post(f"{url}gradio_api/call/{api}", json={"data": data}).json()["event_id"]
    with http.stream("GET", f"{url}gradio_api/call/{api}/{event}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: error"):
                raise RuntimeError(f"{api} failed")


def visit_all(url: str, visitors: int, rounds: int, light: bool = False) -> tuple[dict, float]:
    """(latencies, this client process's CPU seconds). light: plain HTTP calls instead of gradio_client."""
    import resource

    import httpx
    from gradio_client import Client

    latencies: dict[str, list[float]] = {"preview": [], "check_model": [], "run_status": []}
    lock = threading.Lock()

    def visit(_: int) -> None:
        client = None if light else Client(url, verbose=False)
        http = httpx.Client(timeout=120) if light else None
        for _ in range(rounds):
            for name, (api, data) in CALLS.items():
                started = time.perf_counter()
                if light:
                    http_call(http, url, api, data)
                else:
                    client.predict(*data, api_name="/" + api)
                with lock:
                    latencies[name].append(time.perf_counter() - started)

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [x for values in latencies.values() for x in values]
    used = resource.getrusage(resource.RUSAGE_SELF)
    return {"all": summary(every), **{name: summary(values) for name, values in latencies.items()}}, (
        used.ru_utime + used.ru_stime
    )


def attacks(workdir: Path, run_id: str, looping_model: Path) -> list[tuple[str, dict]]:
    """(name, the /api call's keyword arguments) of each costly request."""
    csv = workdir / "lines.csv"
    csv.write_text("text\n" + "a\n" * 5_000_000)
    huge = workdir / "huge.jsonl"
    huge.write_text(json.dumps({"prompt": "x" * 40_000_000, "completion": "y"}) + "\n")
    return [
        ("regex ((a{1000}){1000}){1000}", dict(run_id=run_id, count=2, scorer="regex",
                                               pattern="((a{1000}){1000}){1000}", api_name="/evaluate")),
        ("template {messages} x 4000", dict(dataset="demo:json-extract", data_format="template",
                                            text_template="{messages}" * 4000, api_name="/preview_dataset")),
        ("CSV of 5,000,000 rows", dict(dataset=str(csv), api_name="/preview_dataset")),
        ("JSONL row of 40 MB", dict(dataset=str(huge), api_name="/preview_dataset")),
        ("chat template looping 10^8 times", dict(dataset="demo:json-extract", model=str(looping_model), row_number=0,
                                                  answers_only=True, max_length=128, batch_size=2, packing=False,
                                                  api_name="/what_the_model_sees")),
        ("Evaluate on 200 held-out prompts", dict(run_id=run_id, count=200, scorer="auto", pattern="",
                                                  api_name="/evaluate")),
    ]  # fmt: skip


def attack_phase(url: str, run_id: str, workdir: Path, looping_model: Path) -> dict:
    from gradio_client import Client

    stranger, neighbour = Client(url, verbose=False), Client(url, verbose=False)
    polls, chats, outcomes = [], [], []
    done = threading.Event()

    def chat() -> None:
        neighbour.predict(
            message="Table for two at 7pm", tuned_history=[], base_history=[], run_id=run_id, system_prompt="",
            compare=False, seed=0, temperature=0, top_p=1.0, max_new_tokens=8, repetition_penalty=1.0,
            api_name="/chat",
        )  # fmt: skip

    started = time.perf_counter()
    chat()  # the chat model loaded once, before anything is timed (its loading is not a reply's wait)
    print(f"  the neighbour's first reply (the chat model loads): {time.perf_counter() - started:.1f} s", flush=True)

    def neighbour_visits() -> None:
        while not done.is_set():
            started = time.perf_counter()
            neighbour.predict(api_name="/run_status")
            polls.append(time.perf_counter() - started)
            started = time.perf_counter()
            chat()
            chats.append(time.perf_counter() - started)
            time.sleep(1)

    start_mb = resident_mb()
    thread = threading.Thread(target=neighbour_visits)
    thread.start()
    for name, arguments in attacks(workdir, run_id, looping_model):
        started = time.perf_counter()
        try:
            stranger.predict(**arguments)
            answer = "answered"
        except Exception as error:  # a refusal is the expected answer
            answer = "refused: " + str(error).splitlines()[0][:160]
        outcomes.append({"request": name, "seconds": round(time.perf_counter() - started, 2), "answer": answer})
        print(f"  {name}: {outcomes[-1]['seconds']} s, {answer[:100]}", flush=True)
    done.set()
    thread.join()
    return {
        "requests": outcomes,
        "neighbour_poll": summary(polls),
        "neighbour_chat_8_tokens": summary(chats),
        "app_peak_resident_mb_over_start": round(resident_mb("VmHWM") - start_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle-only", action="store_true", help="only the first phase (quick comparisons)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sft-load-"))
    os.environ.setdefault("SFT_SPACE_HOME", str(workdir / "home"))
    os.environ.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", SFT_SPACE_PUBLIC="1")

    import shutil

    from sft_space import rundir
    from sft_space.config import RunConfig
    from sft_space.models import bundled
    from sft_space.runs import lifecycle as runs
    from sft_space.runs import queue as run_queue
    from sft_space.ui import build_app, launch_kwargs, queue_kwargs

    from helpers import TINY_FAST, build_tiny_model, run_cli

    bundled.ensure_bundled_model()  # converted once, before anything is timed
    tiny = build_tiny_model(workdir / "tiny")
    looping = workdir / "looping"
    shutil.copytree(tiny, looping)
    template = (tiny / "chat_template.jinja").read_text()
    (looping / "chat_template.jinja").write_text(
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}" + template
    )
    finished = rundir.runs_root() / "20990101-000000-load"
    result = run_cli("--model", str(tiny), "--max_steps", "2", "--output_dir", str(finished), *TINY_FAST)
    assert result.returncode == 0, result.stderr[-2000:]

    run_queue.start_queue_worker()
    demo = build_app()
    demo.queue(**queue_kwargs())  # as app.py
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "cpu": next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"
        ),
        "visitors": args.visitors,
        "rounds": args.rounds,
    }
    print(f"idle: {args.visitors} visitors x {args.rounds} rounds", flush=True)
    results["idle"] = visitors_phase(url, args.visitors, args.rounds)
    print(json.dumps(results["idle"]), flush=True)
    results["idle_http"] = visitors_phase(url, args.visitors, args.rounds, light=True)
    print("plain HTTP clients:", json.dumps(results["idle_http"]), flush=True)
    if args.idle_only:
        demo.close()
        return

    run_id = runs.start_run(RunConfig(model="bundled", dataset="demo:json-extract", max_steps=5000, save_steps=1000,
                                      eval_steps=1000, per_device_train_batch_size=2))  # fmt: skip
    while (rundir.read_status(run_id).get("step") or 0) < 3:  # past the base model's probe replies: training
        time.sleep(1)
    step_before = rundir.read_status(run_id)["step"]
    print("training: the same while the bundled model trains", flush=True)
    try:
        measure_beside(url, args, results, run_id, step_before)
    finally:  # whatever happened, the bundled model's run does not outlive the benchmark
        os.environ["SFT_SPACE_PUBLIC"] = "0"  # the attacks name files on this machine, as a visitor's uploads
        runs.cancel_run(run_id)  # the machine's own run (no owner): cancelled as its owner
        run_queue.wait_for(run_id, timeout=300)
    for name, value in {
        "DATASET_ROWS": "20000",
        "UPLOAD_MB": "50",
        "EVAL_ROWS": "200",
        "MAX_NEW_TOKENS": "512",
    }.items():
        os.environ["SFT_SPACE_" + name] = value  # the CPU Space's limits
    print("attacks: one stranger's costly requests while a neighbour polls and chats", flush=True)
    results["attacks"] = attack_phase(url, finished.name, workdir, looping)
    print(json.dumps({k: v for k, v in results["attacks"].items() if k != "requests"}), flush=True)
    (ROOT / "bench" / "results_load.json").write_text(json.dumps(results, indent=2) + "\n")
    demo.close()


def measure_beside(url: str, args, results: dict, run_id: str, step_before: int) -> None:
    from sft_space import rundir

    results["training_http"] = visitors_phase(url, args.visitors, args.rounds, light=True)
    print("plain HTTP clients:", json.dumps(results["training_http"]), flush=True)
    results["training"] = visitors_phase(url, args.visitors, args.rounds)
    results["training"]["steps_meanwhile"] = rundir.read_status(run_id)["step"] - step_before
    print(json.dumps(results["training"]), flush=True)


if __name__ == "__main__":
    main()
