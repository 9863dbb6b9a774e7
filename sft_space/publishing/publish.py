"""Pushing a run to the Hub: the adapter or the merged model, with its model card, in one commit.

Owns the Hub token's handling (taken per call, never stored, logged or written; scrubbed from any message), the
translation of Hub errors into messages a user can act on, retries with backoff on network and server errors,
the repo name a push goes to, the files of one push (weights, tokenizer, card, loss curve, settings) and the
check that a merged model answers like base + adapter. It reads run directories; what the card says is `card`'s
business, exporting a run `export`'s, running it on Jobs `jobs`'. It knows nothing about Gradio.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

from .. import Progress, no_progress
from ..config import BUNDLED_MODEL
from ..hub import hub_endpoint, network_error, public
from ..rundir import (
    MODELFILE,
    adapter_dir,
    gguf_dir,
    has_adapter,
    read_config,
    read_metrics,
    read_published,
    read_status,
    run_path,
    write_published,
)
from .card import loss_curve_png, model_card

PUSH_ATTEMPTS = 4  # one try and three retries: about 14 s of backoff in all before giving up
BACKOFF_SECONDS = 2.0
REPO_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")


# ------------------------------------------------------------------ tokens and errors
def resolve_token(explicit: str | None = None) -> str | None:
    """The token for one call: the signed-in or typed one, else (not on a Space) HF_TOKEN or a `hf auth login`.

    On a Space the environment's token is the Space owner's secret: a visitor must never push with it, so there
    only the visitor's own sign-in or pasted token counts. Never stored.
    """
    from huggingface_hub import get_token

    explicit = (explicit or "").strip()
    if explicit or public():
        return explicit or None
    return get_token()


def scrub(text: str, token: str | None) -> str:
    """A message with the token (and anything that looks like a Hub token) blanked out."""
    if token:
        text = text.replace(token, "hf_***")
    return re.sub(r"\bhf_[A-Za-z0-9]{8,}\b", "hf_***", text)


def hub_api(token: str | None):
    """A Hub client for one call, on HF_ENDPOINT, with this token only (never the environment's by accident)."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=token or False)


def _status_code(error: Exception) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def readable(error: Exception, token: str | None, what: str) -> Exception:
    """A user-facing exception for a failed Hub call, with the token scrubbed."""
    code = _status_code(error)
    if code == 401:
        return PermissionError(
            f"The Hub did not accept your token while {what} (expired or revoked?): sign in again. "
            "Nothing was lost: the run stays here and you can push again."
        )
    if code == 403:
        return PermissionError(
            f"Your token may not write there ({what}): use a token with write access, or a repo "
            "under your own name or an organisation you can write to."
        )
    return RuntimeError(
        scrub(f"{what} failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", token)
    )


def transient(error: Exception) -> bool:
    """Worth retrying: the network or the server, not the request."""
    code = _status_code(error)
    if code is not None:
        return code >= 500 or code == 429
    return network_error(error)


def with_retries(call, what: str, token: str | None, attempts: int = PUSH_ATTEMPTS, progress: Progress = no_progress):
    """call() with exponential backoff on network and server errors; other errors at once."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:
            if not transient(error) or attempt == attempts:
                raise readable(error, token, what) from None
            wait = BACKOFF_SECONDS * 2 ** (attempt - 1) * (0.8 + 0.4 * random.random())
            progress(0.5, f"{what}: attempt {attempt} failed ({type(error).__name__}); retrying in {wait:.0f} s")
            time.sleep(wait)


def signed_in_user(token: str | None) -> str:
    """The Hub username the token belongs to; PermissionError when there is no usable token."""
    if not token:
        raise PermissionError("Sign in with Hugging Face first (or paste a write token, or set HF_TOKEN).")
    info = with_retries(lambda: hub_api(token).whoami(), "checking your sign-in", token)
    return info["name"]


# ------------------------------------------------------------------ repo names
def repo_id_for(user: str, name: str) -> str:
    """owner/name from what the user typed: a bare name goes under their own account."""
    name = (name or "").strip()
    owner, _, bare = name.rpartition("/")
    if not REPO_NAME.match(bare or ""):
        raise ValueError(f"{name!r} is not a valid repo name: use letters, digits, '-', '_' or '.', e.g. my-sft-model.")
    return f"{owner or user}/{bare}"


def default_repo_name(run: str | Path) -> str:
    config = read_config(run)
    base = "smollm2-135m" if config.model == BUNDLED_MODEL else Path(config.model).name.lower()
    data = Path(config.dataset.replace("demo:", "")).stem.split("/")[-1].lower()
    return re.sub(r"[^a-z0-9.-]+", "-", f"{base}-{data}-lora").strip("-")[:90]


# ------------------------------------------------------------------ files to push
def require_adapter(run: str | Path) -> Path:
    """The run's directory, when it has a saved adapter to publish."""
    run_dir = run_path(run)
    if not has_adapter(run_dir):
        raise FileNotFoundError(f"Run {run_dir.name} has no adapter to push: wait for it to finish, or Stop & save it.")
    return run_dir


def gguf_files(run: str | Path) -> list[Path]:
    """The run's exported GGUF files and their Modelfile, as the last GGUF export wrote them; a clear error when
    there are none to push."""
    from ..export.gguf import read_report  # an export from before reports held their summary gets it (the card's)

    run_dir = run_path(run)
    report = read_report(run_dir)
    files = [gguf_dir(run_dir) / entry["file"] for entry in report.get("files", [])]
    if not files or not all(path.is_file() for path in files):
        raise FileNotFoundError(
            f"Run {run_dir.name} has no GGUF export to push: export it first (Publish, Take it home: GGUF), "
            "or untick the GGUF option."
        )
    modelfile = gguf_dir(run_dir) / MODELFILE
    return files + ([modelfile] if modelfile.is_file() else [])


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows it (a GGUF file is hundreds of MB), else a copy."""
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)


def publish_files(
    run: str | Path,
    repo_id: str,
    merged: bool = False,
    progress: Progress = no_progress,
    extra: dict[str, bytes] | None = None,
    gguf: bool = False,
) -> Path:
    """A staging folder with everything one push commits: weights, tokenizer, README.md, loss.png, settings, and
    (gguf) the exported GGUF files with their Modelfile."""
    run_dir = require_adapter(run)
    exported = gguf_files(run_dir) if gguf else []  # before any work: a missing export is refused at once
    staging = Path(tempfile.mkdtemp(prefix="sft-space-push-"))
    if merged:
        from ..export.merged import save_merged

        save_merged(run_dir, staging, progress)
    else:
        for path in adapter_dir(run_dir).iterdir():
            if path.is_file():
                shutil.copy2(path, staging / path.name)
    for path in exported:
        _link_or_copy(path, staging / path.name)
    (staging / "README.md").write_text(model_card(run_dir, repo_id, merged, gguf=gguf), encoding="utf-8")
    image = loss_curve_png(read_metrics(run_dir))
    if image:
        (staging / "loss.png").write_bytes(image)
    (staging / "sft_space_run.json").write_text(
        json.dumps(
            {
                "config": read_config(run_dir).to_dict(),
                "status": {k: v for k, v in read_status(run_dir).items() if k not in ("pid", "owner")},
            },
            indent=2,
        )
    )
    for name, data in (extra or {}).items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    return staging


def ensure_repo(api, repo_id: str, private: bool, token: str | None, progress: Progress = no_progress) -> None:
    """Create the model repo unless it exists already (an existing repo of the user's is pushed to as it is)."""
    if not with_retries(lambda: api.repo_exists(repo_id), f"looking up {repo_id}", token, progress=progress):
        with_retries(
            lambda: api.create_repo(repo_id, private=private, exist_ok=True),
            f"creating {repo_id}",
            token,
            progress=progress,
        )


# ------------------------------------------------------------------ the push
def push_run(
    run: str | Path,
    name: str,
    token: str | None,
    *,
    private: bool = False,
    merged: bool = False,
    gguf: bool = False,
    progress: Progress = no_progress,
) -> dict:
    """Push the run's adapter (or merged model) with its model card to the user's repo, in one commit; with gguf,
    the run's exported GGUF files and Modelfile go in the same commit."""
    from huggingface_hub import CommitOperationAdd

    run_dir = require_adapter(run)  # before any network call
    if gguf:
        gguf_files(run_dir)
    progress(0.02, "Checking your sign-in")
    user = signed_in_user(token)
    repo_id = repo_id_for(user, name)
    staging = publish_files(run_dir, repo_id, merged, progress, gguf=gguf)
    try:
        api = hub_api(token)
        progress(0.85, f"Creating {repo_id}")
        ensure_repo(api, repo_id, private, token, progress)
        operations = [
            CommitOperationAdd(path_in_repo=str(p.relative_to(staging)), path_or_fileobj=str(p))
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        ]
        what = ("merged model" if merged else "LoRA adapter") + (" with GGUF files and a Modelfile" if gguf else "")
        progress(0.9, f"Uploading {len(operations)} files in one commit")
        commit = with_retries(
            lambda: api.create_commit(
                repo_id, operations, commit_message=f"Upload {what} trained with SFT Space (run {run_dir.name})"
            ),
            f"uploading to {repo_id}",
            token,
            progress=progress,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record = {
        "repo_id": repo_id,
        "url": f"{hub_endpoint()}/{repo_id}",
        "kind": "merged" if merged else "adapter",
        "gguf": [p.name for p in gguf_files(run_dir)] if gguf else [],
        "private": private,
        "commit": getattr(commit, "oid", None),
        "pushed_at": time.time(),
    }
    history = read_published(run_dir) or {"pushes": []}
    history["pushes"].append(record)
    write_published(run_dir, history)
    progress(1.0, f"Pushed to {record['url']}")
    return record
