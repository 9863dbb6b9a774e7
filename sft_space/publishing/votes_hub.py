"""A visitor's Chat votes pushed to the Hub as a dataset repository of theirs: data/train.jsonl in TRL's
preference format (prompt, chosen, rejected: the decisive votes) and a dataset card saying where they come from,
the win rate, and how to train on them with TRL. The visitor's own votes only; no voter hash, no token anywhere
in what is pushed."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import BUNDLED_MODEL
from ..data import is_hub_id
from ..judging.votes import own_votes, preference_rows, win_rate
from ..rundir import read_config, run_path
from .publish import hub_api, repo_id_for, scrub, signed_in_user, with_retries


def dataset_card(run_dir: Path, repo_id: str, rows: list[dict]) -> str:
    config = read_config(run_dir)
    rate = win_rate(rows)
    decisive = len(preference_rows(rows))
    # a Hub id or a demo set by name; an uploaded file by its name only (its path on the server is nobody's business)
    data = (
        f"`{config.dataset}`" if is_hub_id(config.dataset) or config.dataset.startswith("demo:") else "an uploaded file"
    )
    base = "HuggingFaceTB/SmolLM2-135M-Instruct" if config.model == BUNDLED_MODEL else config.model
    return "\n".join(
        [
            "---",
            "configs:",
            "- config_name: default",
            "  data_files:",
            "  - split: train",
            "    path: data/train.jsonl",
            "task_categories:",
            "- text-generation",
            "tags:",
            "- preference",
            "- dpo",
            "- sft-space",
            "---",
            "",
            f"# {repo_id.split('/')[-1]}",
            "",
            f"Side-by-side judgements of two models' replies to the same messages, made in SFT Space's Chat tab: "
            f"a LoRA fine-tune of `{base}` (run `{run_dir.name}`, data {data}) against the base model.",
            "",
            f"- {rate.votes} votes: tuned preferred {rate.tuned}, base {rate.base}, ties {rate.ties}; the tuned "
            f"model's win rate {rate.rate:.0%} (a tie counts half).",
            f"- `data/train.jsonl`: the {decisive} decisive votes in TRL's conversational preference format "
            "(`prompt` as messages, `chosen`, `rejected`); ties are left out (no answer was preferred).",
            "- Votes were blind by default (the sides shuffled, revealed after the vote).",
            "",
            "## Use",
            "",
            "```python",
            "from datasets import load_dataset",
            "from trl import DPOConfig, DPOTrainer",
            "",
            f'data = load_dataset("{repo_id}", split="train")',
            "# trainer = DPOTrainer(model=..., args=DPOConfig(output_dir='dpo'), train_dataset=data, ...)",
            "```",
            "",
            "A few votes by one person: a first signal, not a benchmark.",
            "",
        ]
    )


def push_votes(run: str | Path, visitor: str | None, name: str, token: str | None, private: bool = True) -> dict:
    """Create (or update) the visitor's dataset repo with their votes on this run, in one commit."""
    from huggingface_hub import CommitOperationAdd

    run_dir = run_path(run)
    rows = own_votes(run_dir, visitor)
    data = preference_rows(rows)
    if not data:
        raise ValueError(
            "No decisive votes to push yet: vote on a few replies in the Chat tab first (ties are not kept)."
        )
    user = signed_in_user(token)
    repo_id = repo_id_for(user, name)
    api = hub_api(token)
    with_retries(
        lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
        f"creating {repo_id}",
        token,
    )
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in data).encode("utf-8")
    operations = [
        CommitOperationAdd(path_in_repo="data/train.jsonl", path_or_fileobj=lines),
        CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=dataset_card(run_dir, repo_id, rows).encode()),
    ]
    with_retries(
        lambda: api.create_commit(
            repo_id, operations, repo_type="dataset", commit_message=f"Votes on run {run_dir.name} (SFT Space)"
        ),
        f"uploading to {repo_id}",
        token,
    )
    from ..hub import hub_endpoint

    return {"repo_id": repo_id, "url": f"{hub_endpoint()}/datasets/{repo_id}", "rows": len(data), "votes": len(rows)}


__all__ = ["dataset_card", "push_votes", "scrub"]
