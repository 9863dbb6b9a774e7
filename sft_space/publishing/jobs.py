"""Running a run on Hugging Face Jobs: the same training on Hub hardware, pushed to the user's repo at the end.

Owns the hardware flavors offered, the job's files in the target repo (the exported script, its settings and the
run's data, committed in one go under sft_space_job/), the short bootstrap command the job starts with, the record
of submitted jobs in the run directory and the report of a job's stage and logs. The script and its settings come
from `export`; the token, retries and repo naming from `publish`. It knows nothing about Gradio.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import Progress, no_progress
from ..export import DATA_DIR, SCRIPT_NAME, SETTINGS_NAME, dependencies, export_run, model_reference
from ..models import is_hub_model_id
from ..rundir import export_dir, read_config, read_jobs, run_path, write_jobs
from .card import model_card
from .publish import ensure_repo, hub_api, repo_id_for, signed_in_user, with_retries

JOB_FOLDER = "sft_space_job"  # the folder of the target repo with the job's files; JOB_FOLDER in train_sft.py too
JOB_FLAVORS = ["cpu-upgrade", "t4-small", "t4-medium", "l4x1", "a10g-small", "a10g-large", "a100-large", "h100"]

# The job's command: fetch the script from the target repo (with the HF_TOKEN secret, so private repos work) and
# run it; the script then fetches its settings and data (--data_repo). Short, because run_uv_job checks every
# argument as a possible local file name.
JOB_BOOTSTRAP = (
    "import os,runpy,huggingface_hub as h;"
    "runpy.run_path(h.hf_hub_download(os.environ['SFT_SPACE_REPO'],'" + JOB_FOLDER + "/" + SCRIPT_NAME + "'),"
    "run_name='__main__')"
)


def submit_job(
    run: str | Path,
    name: str,
    token: str | None,
    *,
    flavor: str = "t4-small",
    private: bool = True,
    timeout: str = "2h",
    progress: Progress = no_progress,
) -> dict:
    """Run the same training on Hugging Face Jobs: the script, its settings and the run's data go to the target
    repo in one commit, the job runs the script there, and the job pushes the adapter to that repo."""
    if flavor not in JOB_FLAVORS:
        raise ValueError(f"Unknown hardware flavor {flavor!r}: choose one of {', '.join(JOB_FLAVORS)}.")
    run_dir = run_path(run)  # any run, trained here or not: a run too big for this machine is the point of a job
    config = read_config(run_dir)
    _, fallback = model_reference(config)
    if fallback is None and not is_hub_model_id(config.model):
        raise ValueError(
            "A job cannot read a model folder on this machine: pick a Hub model (or the bundled "
            "SmolLM2-135M-Instruct) to run this on Jobs."
        )
    user = signed_in_user(token)
    repo_id = repo_id_for(user, name)
    progress(0.1, "Exporting the run's script and data")
    export_run(run_dir)
    export = export_dir(run_dir)
    settings = json.loads((export / SETTINGS_NAME).read_text(encoding="utf-8"))
    if fallback:  # the job's machine has no local copy: load the model from the Hub
        settings["model"] = fallback
    api = hub_api(token)
    from huggingface_hub import CommitOperationAdd

    operations = [
        CommitOperationAdd(f"{JOB_FOLDER}/{SCRIPT_NAME}", str(export / SCRIPT_NAME)),
        CommitOperationAdd(f"{JOB_FOLDER}/{SETTINGS_NAME}", (json.dumps(settings, indent=2) + "\n").encode()),
    ]
    for split in ("train", "validation"):
        operations.append(
            CommitOperationAdd(f"{JOB_FOLDER}/{DATA_DIR}/{split}.jsonl", str(export / DATA_DIR / f"{split}.jsonl"))
        )
    operations.append(CommitOperationAdd("README.md", model_card(run_dir, repo_id).encode()))
    progress(0.4, f"Uploading the script and data to {repo_id}")
    ensure_repo(api, repo_id, private, token, progress)
    with_retries(
        lambda: api.create_commit(repo_id, operations, commit_message=f"SFT Space job for run {run_dir.name}"),
        f"uploading the job's files to {repo_id}",
        token,
        progress=progress,
    )
    progress(0.7, f"Submitting the job ({flavor})")
    job = with_retries(
        lambda: _quiet(
            api.run_uv_job,
            "python",
            script_args=["-c", JOB_BOOTSTRAP, "--data_repo", repo_id, "--push_to_hub", repo_id],
            dependencies=dependencies(),
            flavor=flavor,
            timeout=timeout,
            env={"SFT_SPACE_REPO": repo_id},
            secrets={"HF_TOKEN": token},
            labels={"sft-space-run": run_dir.name},
        ),
        "submitting the job",
        token,
    )
    record = {
        "job_id": job.id,
        "url": job.url,
        "flavor": flavor,
        "repo_id": repo_id,
        "namespace": user,
        "submitted_at": time.time(),
        "stage": job.status.stage if job.status else None,
    }
    history = read_jobs(run_dir) or {"jobs": []}
    history["jobs"].append(record)
    write_jobs(run_dir, history)
    progress(1.0, f"Job {job.id} submitted")
    return record


def _quiet(function, *args, **kwargs):
    """Call without huggingface_hub's 'experimental API' warning (Jobs), which means nothing to a user here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is experimental.*")
        return function(*args, **kwargs)


def job_report(run: str | Path, token: str | None, tail: int = 40) -> dict:
    """The latest job of a run: its stage and the last log lines, from the Hub."""
    history = read_jobs(run) or {"jobs": []}
    if not history["jobs"]:
        raise FileNotFoundError("This run has no job yet: submit one first.")
    record = history["jobs"][-1]
    api = hub_api(token)
    info = with_retries(
        lambda: api.inspect_job(job_id=record["job_id"], namespace=record["namespace"]),
        "reading the job's status",
        token,
    )
    logs = with_retries(
        lambda: list(api.fetch_job_logs(job_id=record["job_id"], namespace=record["namespace"], follow=False)),
        "reading the job's logs",
        token,
    )
    return {**record, "stage": info.status.stage, "message": info.status.message, "logs": logs[-tail:]}
