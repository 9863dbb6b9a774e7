"""Hub datasets: a dataset repository on the Hugging Face Hub (`owner/name`), read through `huggingface_hub`.

Owns telling a Hub id from a local path, the dataset's layout from its file list alone ({subset: {split: data
files}}, nothing downloaded), checking a chosen subset/split/revision against it, the commit a revision points
at, downloading a split's data files at that commit (into $SFT_SPACE_HOME/hub) and reading them into raw rows, and
the preview that reads only the first rows of a file by HTTP range requests (HubFile). HF_ENDPOINT and
HF_HUB_OFFLINE are honoured when used; a gated, private, missing or script-built dataset, an unknown revision and
an unreachable Hub become messages that say what to do. Rows come back as the files hold them: formats
(`formats`), splitting and DatasetSplits (`sources`) are not known here; neither are demo sets or tokenizers.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import NamedTuple

from .. import home
from ..hub import (
    HUB_ID,
    HUB_TIMEOUT_SECONDS,
    has_read_token,
    hub_endpoint,
    hub_offline,
    read_error,
    read_token,
    repo_url,
)
from .formats import UPLOAD_SUFFIXES, read_rows

SPLIT_WORDS = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "eval"),
    "check": ("check", "challenge"),  # rows written unlike the training rows: scored beside the held-out rows
}
PREVIEW_ROWS = 50  # rows a Hub preview reads
PREVIEW_BYTES = 512 * 1024  # bytes of a jsonl/csv file a Hub preview reads


def _exists(name: str) -> bool:
    """A local path of that name exists (a name too long for the file system is none)."""
    try:
        return Path(name).expanduser().exists()
    except (OSError, ValueError):
        return False


def is_hub_id(source: str) -> bool:
    return bool(HUB_ID.match(source)) and not _exists(source) and Path(source).suffix not in UPLOAD_SUFFIXES


def split_of(path: str) -> str | None:
    stem = Path(path).name.lower()
    for split, words in SPLIT_WORDS.items():
        if any(re.search(rf"(^|[^a-z]){word}([^a-z]|$)", stem) for word in words):
            return split
    return None


def _dataset_info(repo_id: str, revision: str | None):
    """The Hub's info of the dataset at a revision (its commit sha and file list), refusals made readable."""
    from huggingface_hub import HfApi

    if not HUB_ID.match(repo_id):
        raise ValueError(
            f"{repo_id!r} is not a Hub dataset id: it looks like owner/name, e.g. HuggingFaceH4/no_robots."
        )
    if hub_offline():
        raise ValueError(
            "The Hugging Face Hub is switched off here (HF_HUB_OFFLINE=1): use a demo set or upload a file."
        )
    try:
        info = HfApi(endpoint=hub_endpoint(), token=read_token()).dataset_info(
            repo_id, revision=revision or None, timeout=HUB_TIMEOUT_SECONDS
        )
    except Exception as error:
        readable = read_error(error, repo_id, "dataset", revision)
        if readable is None:
            raise
        raise readable from None
    if info.gated:
        if not has_read_token():
            raise ValueError(
                f"{repo_id} is gated: accept its conditions at {repo_url(repo_id, 'dataset')}, then sign in."
            )
    return info


def _layout_of(repo_id: str, files: list[str]) -> dict[str, dict[str, list[str]]]:
    data = [f for f in files if Path(f).suffix in UPLOAD_SUFFIXES and not Path(f).name.startswith(".")]
    if not data:
        if any(f.endswith(".py") for f in files):
            raise ValueError(
                f"{repo_id} is built by a loading script, which could run any code and is refused: "
                "pick a dataset stored as data files (parquet, jsonl, csv, json)."
            )
        raise ValueError(f"{repo_id} has no data files (.jsonl, .json, .csv, .parquet) to read.")
    layout: dict[str, dict[str, list[str]]] = {}
    for path in sorted(data):
        parts = Path(path).parts
        config = parts[0] if len(parts) > 1 and parts[0] not in ("data",) and split_of(parts[0]) is None else "default"
        split = split_of(path) or "train"
        layout.setdefault(config, {}).setdefault(split, []).append(path)
    return layout


def hub_layout(repo_id: str, revision: str | None = None) -> dict[str, dict[str, list[str]]]:
    """{config: {split: [data files]}} of a Hub dataset, from its file list only (nothing is downloaded)."""
    info = _dataset_info(repo_id, revision)
    return _layout_of(repo_id, [s.rfilename for s in info.siblings or []])


class HubChoice(NamedTuple):
    """A subset and split of a Hub dataset, checked against its files at the commit a revision points at."""

    config: str
    split: str
    splits: dict[str, list[str]]  # {split: data files} of the subset
    commit: str | None  # the commit sha the revision resolved to (None only if the Hub did not say)


def hub_choice(repo_id: str, config: str = "", revision: str = "", split: str = "") -> HubChoice:
    """The user's subset/split choices checked against the dataset at `revision`, and the commit it is at now."""
    info = _dataset_info(repo_id, revision or None)
    layout = _layout_of(repo_id, [s.rfilename for s in info.siblings or []])
    config = config or ("default" if "default" in layout else sorted(layout)[0])
    if config not in layout:
        raise ValueError(f"{repo_id} has no subset {config!r}; it has {', '.join(sorted(layout))}.")
    splits = layout[config]
    split = split or ("train" if "train" in splits else sorted(splits)[0])
    if split not in splits:
        raise ValueError(f"{repo_id} ({config}) has no {split!r} split; it has {', '.join(sorted(splits))}.")
    return HubChoice(config, split, splits, getattr(info, "sha", None) or None)


def hub_splits(
    repo_id: str, config: str = "", revision: str = "", split: str = ""
) -> tuple[str, str, dict[str, list[str]]]:
    """(subset, training split, {split: files}) of a Hub dataset, with the user's choices checked against it."""
    config, split, splits, _ = hub_choice(repo_id, config, revision, split)
    return config, split, splits


def load_hub_rows(
    repo_id: str, config: str = "", revision: str = "", split: str = "", max_rows: int | None = None
) -> tuple[list[dict], list[dict] | None, list[str], str | None, list[dict]]:
    """(training rows, the dataset's own validation rows or None, notes, the commit sha they were read at, the rows
    of its check/challenge split or []).

    The revision (a branch, tag or commit; empty = main) is resolved to its commit once, and every file is
    downloaded at that commit, so all rows come from one version of the dataset even if the branch moves."""
    from huggingface_hub import hf_hub_download

    config, split, splits, commit = hub_choice(repo_id, config, revision, split)

    def rows_of(name: str) -> list[dict]:
        rows = []
        for path in splits[name]:
            local = hf_hub_download(
                repo_id,
                path,
                repo_type="dataset",
                revision=commit or revision or None,
                endpoint=hub_endpoint(),
                token=read_token(),
                cache_dir=str(home() / "hub"),
            )
            rows += read_rows(Path(local), max_rows and max_rows - len(rows))
            if max_rows and len(rows) > max_rows:  # this host's limit: the rest of the files stay unread
                return rows[: max_rows + 1]
        return rows

    own = next((s for s in ("validation", "test") if s in splits and s != split), None)
    notes = [f"{repo_id} ({config}, {split}) from {hub_endpoint()}"]
    if own:
        notes.append(f"validation = the dataset's own {own} split")
    unlike = "check" in splits and split != "check"  # a check or challenge split: rows unlike the training rows
    if unlike:
        notes.append("its check split (rows unlike the training rows) is scored beside the held-out rows (Evaluate)")
    return rows_of(split), rows_of(own) if own else None, notes, commit, rows_of("check") if unlike else []


class HubFile(io.RawIOBase):
    """A file on the Hub read by HTTP range requests: a preview reads a few KB, not the dataset."""

    def __init__(self, url: str) -> None:
        from huggingface_hub import get_session
        from huggingface_hub.utils import build_hf_headers

        self.url, self.session, self.headers, self.position = (
            url,
            get_session(),
            build_hf_headers(token=read_token()),
            0,
        )
        head = self.session.head(url, headers=self.headers, follow_redirects=True, timeout=HUB_TIMEOUT_SECONDS)
        head.raise_for_status()
        self.size = int(head.headers["Content-Length"])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: offset, 1: self.position + offset, 2: self.size + offset}[whence]
        return self.position

    def readinto(self, buffer) -> int:
        if self.position >= self.size or len(buffer) == 0:
            return 0
        last = min(self.position + len(buffer), self.size) - 1
        response = self.session.get(
            self.url,
            headers={**self.headers, "Range": f"bytes={self.position}-{last}"},
            follow_redirects=True,
            timeout=HUB_TIMEOUT_SECONDS,
        )
        response.raise_for_status()
        data = response.content[: len(buffer)]
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def preview_hub_rows(
    repo_id: str, config: str = "", revision: str = "", split: str = "", count: int = PREVIEW_ROWS
) -> tuple[list[dict], str, int | None, str | None]:
    """(first rows of the training split, the file they came from, rows in that file when its metadata says,
    the commit sha they were read at)."""
    from huggingface_hub import hf_hub_url

    config, split, splits, commit = hub_choice(repo_id, config, revision, split)
    name = splits[split][0]
    url = hf_hub_url(repo_id, name, repo_type="dataset", revision=commit or revision or None, endpoint=hub_endpoint())
    remote = HubFile(url)
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(io.BufferedReader(remote, buffer_size=64 * 1024))
        batch = next(parquet.iter_batches(batch_size=count, row_groups=[0]), None) if parquet.num_row_groups else None
        return (batch.to_pylist() if batch is not None else []), name, parquet.metadata.num_rows, commit
    head = io.BufferedReader(remote, buffer_size=PREVIEW_BYTES).read(PREVIEW_BYTES).decode("utf-8", errors="ignore")
    lines = head.splitlines()
    if len(head.encode()) >= PREVIEW_BYTES and lines:
        lines = lines[:-1]  # the last line may be cut in the middle
    if name.endswith(".csv"):
        return [dict(r) for r in csv.DictReader(lines)][:count], name, None, commit
    if name.endswith(".json"):
        raise ValueError(
            f"{name} is one JSON document; it can only be read whole: train on it, or preview a jsonl file."
        )
    rows = [json.loads(line) for line in lines if line.strip()][:count]
    return rows, name, None, commit
