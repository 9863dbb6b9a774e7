"""A visitor's judgements of tuned against base replies, kept as preference data.

In Chat, after both models answered, the visitor marks the better answer (or a tie), blind by default. Each vote
is one line of RUN_DIR/votes.jsonl in TRL's conversational preference format (prompt as messages, chosen,
rejected: what DPOTrainer and its kin read), plus who was preferred, whether the vote was blind, the sampling
settings, the time, and the voter as a hash of their visitor key (never the key: it is a credential). A visitor
sees, counts and exports their own votes only. The export for TRL holds the decisive votes (ties have no
chosen answer), with only prompt, chosen and rejected.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..rundir import read_jsonl_records as read_jsonl
from ..rundir import run_path

VOTES = "votes.jsonl"
_lock = threading.Lock()  # one line appended at a time
WINNERS = ("tuned", "base", "tie")
MAX_VOTE_BYTES = 64 * 1024  # one vote as written (JSON escapes counted): the prompt and both answers
MAX_FILE_BYTES = 5 * 1024 * 1024  # a run's votes.jsonl: a page cannot grow a run's folder, or each read, without end


def voter_hash(visitor: str | None) -> str:
    return hashlib.sha256(f"sft-space-voter:{visitor or ''}".encode()).hexdigest()[:16]


def votes_path(run: str | Path) -> Path:
    return run_path(run) / VOTES


def record(
    run: str | Path,
    visitor: str | None,
    prompt: list[dict],
    tuned: str,
    base: str,
    winner: str,
    blind: bool,
    settings: dict | None = None,
) -> dict:
    """Append one vote; returns the row. ValueError for what cannot be a vote."""
    if winner not in WINNERS:
        raise ValueError(f"A vote is one of {', '.join(WINNERS)}, not {str(winner)[:20]!r}.")
    if not prompt or prompt[-1].get("role") != "user" or not tuned.strip() or not base.strip():
        raise ValueError("Vote after both models answered a message.")
    path = votes_path(run)
    if path.is_file() and path.stat().st_size >= MAX_FILE_BYTES:  # counted without reading it
        raise ValueError("This run holds as many votes as it can keep: download them, or vote on another run.")
    tuned_turn = [{"role": "assistant", "content": tuned}]
    base_turn = [{"role": "assistant", "content": base}]
    chosen, rejected = (base_turn, tuned_turn) if winner == "base" else (tuned_turn, base_turn)
    row = {
        "prompt": [{"role": m["role"], "content": str(m["content"])} for m in prompt],
        "chosen": chosen,
        "rejected": rejected,
        "winner": winner,
        "blind": bool(blind),
        "settings": settings or {},
        "voter": voter_hash(visitor),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    line = json.dumps(row, ensure_ascii=False) + "\n"
    if len(line.encode("utf-8")) > MAX_VOTE_BYTES:
        raise ValueError("This conversation is too long to keep as a vote: press Clear and vote on a shorter one.")
    with _lock, open(path, "a", encoding="utf-8") as f:
        f.write(line)
    return row


def own_votes(run: str | Path, visitor: str | None) -> list[dict]:
    mine = voter_hash(visitor)
    return [row for row in read_jsonl(votes_path(run)) if isinstance(row, dict) and row.get("voter") == mine]


@dataclass
class WinRate:
    votes: int
    tuned: int
    base: int
    ties: int

    @property
    def rate(self) -> float | None:
        """The tuned model's share, a tie counting half; None without votes."""
        return (self.tuned + 0.5 * self.ties) / self.votes if self.votes else None

    def text(self) -> str:
        if not self.votes:
            return "No votes yet: after both models answer, mark the better answer."
        return (
            f"Tuned model preferred in **{self.rate:.0%}** of {self.votes} vote{'s' if self.votes != 1 else ''} "
            f"({self.tuned} tuned, {self.base} base, {self.ties} tie{'s' if self.ties != 1 else ''}; a tie counts half)"
        )


def win_rate(rows: list[dict]) -> WinRate:
    counts = {winner: sum(1 for row in rows if row.get("winner") == winner) for winner in WINNERS}
    return WinRate(len(rows), counts["tuned"], counts["base"], counts["tie"])


def preference_rows(rows: list[dict]) -> list[dict]:
    """TRL's preference format: the decisive votes, prompt / chosen / rejected only."""
    return [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows if row.get("winner") != "tie"]


def write_preferences(rows: list[dict], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in preference_rows(rows):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
