"""Resolving a model choice to a local folder: 'bundled', a folder, or a Hub id downloaded with progress.

Owns the download of a Hub model once the metadata checks in `facts` pass
(safetensors weights, configs and tokenizer files; the tokenizer files alone
when only the tokenizer is needed), reporting its progress to a bar, and reading
the base model's license from the folder. It knows nothing about tokenizer
setup, the device or loading weights.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .. import Progress, no_progress
from ..config import BUNDLED_MODEL
from ..hub import hub_endpoint, hub_offline, read_error, read_token
from .bundled import ensure_bundled_model
from .cache import DOWNLOAD_PATTERNS, cached_snapshot, model_cache_dir
from .facts import check_model_folder, hub_facts, is_hub_model_id

TOKENIZER_PATTERNS = [p for p in DOWNLOAD_PATTERNS if p not in ("*.safetensors", "README.md")]


def _progress_bar_class(progress: Progress, what: str):
    """A tqdm class that reports file-download progress to `progress` (the UI bar, the run's status)."""
    from tqdm.auto import tqdm

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.update(disable=False, file=open(os.devnull, "w"))  # counted even without a terminal, never printed
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            result = super().update(n)
            if self.total:
                progress(min(self.n / self.total, 1.0), f"Downloading {what}: {self.n}/{self.total} files")
            return result

    return Reporting


def download_model(
    repo_id: str, progress: Progress = no_progress, token: str | None = None, weights: bool = True
) -> Path:
    """Check a Hub model from its metadata, then download only its safetensors, configs and tokenizer files
    (weights=False: configs and tokenizer only, for looking at the data through its tokenizer)."""
    from huggingface_hub import snapshot_download

    cached = cached_snapshot(repo_id) if hub_offline() else None
    if cached:
        if weights:
            check_model_folder(cached)
        return cached
    progress(0.0, f"Checking {repo_id} on the Hub")
    facts = hub_facts(repo_id, token)
    if facts.notes and facts.gated:
        raise ValueError(facts.notes[0])
    what = repo_id if weights else f"the tokenizer of {repo_id}"
    progress(0.02, f"Downloading {what}")
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                endpoint=hub_endpoint(),
                token=read_token(token),
                cache_dir=str(model_cache_dir()),
                allow_patterns=DOWNLOAD_PATTERNS if weights else TOKENIZER_PATTERNS,
                tqdm_class=_progress_bar_class(progress, what),
            )
        )
    except Exception as error:
        readable = read_error(error, repo_id, "model")
        if readable is None:
            raise
        raise readable from None
    if weights:
        check_model_folder(folder)
    progress(1.0, f"{repo_id} is ready")
    return folder


def resolve_model(choice: str, progress: Progress = no_progress, token: str | None = None) -> Path:
    """A local folder holding the model's config, safetensors weights and tokenizer."""
    choice = choice.strip()
    if choice == BUNDLED_MODEL:
        return ensure_bundled_model(progress)
    folder = Path(choice).expanduser()
    if folder.is_dir():
        check_model_folder(folder)
        return folder
    if is_hub_model_id(choice):
        return download_model(choice, progress, token)
    raise ValueError(
        f"Model {choice!r} was not found: use 'bundled' (SmolLM2-135M-Instruct, offline), a Hub id (owner/name) "
        "or the path of a local folder with config.json and *.safetensors."
    )


def base_license(folder: Path) -> str | None:
    """The license in a model folder's README front matter (a Hub download keeps it), if any."""
    if (folder / "README.md").is_file():
        match = re.search(
            r"^license:\s*(\S+)", (folder / "README.md").read_text(errors="replace").split("\n---", 1)[0], re.MULTILINE
        )
        if match:
            return match.group(1).strip("'\"")
    from .bundled import bundled_model_dir

    return "apache-2.0" if folder == bundled_model_dir() else None


def resolve_tokenizer(choice: str, progress: Progress = no_progress, token: str | None = None) -> Path:
    """A folder with the model's tokenizer; for a Hub id without downloading the weights."""
    if is_hub_model_id(choice):
        return download_model(choice.strip(), progress, token, weights=False)
    return resolve_model(choice, progress, token)
