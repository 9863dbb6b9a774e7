"""Chat's votes: which side holds the tuned model (blind by default: shuffled per conversation, the panes named
Model A and Model B until a vote reveals them), the vote buttons, the win rate, the download and the Hub push of
the visitor's own votes (judging.votes, publishing.votes_hub).

The side assignment lives in a gr.State: a visitor's own page state, which a stranger's API call cannot read or
set for them (an API call starts with the default: tuned on the left, not blind). A vote is checked against the
panes' contents, and its run must be the visitor's (as for chatting).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import gradio as gr

from ..judging import votes
from ..publishing import publish, votes_hub
from ..runs.cleanup import handed_out_dir
from .common import as_messages, owned, shown_as_error

NAMES = {True: ("Model A", "Model B"), False: ("Tuned model (base + LoRA adapter)", "Base model (adapter off)")}


def tuned_left(sides: dict | None) -> bool:
    return bool((sides or {}).get("tuned_left", True))


def labels(sides: dict | None) -> tuple[gr.Chatbot, gr.Chatbot]:
    sides = sides or {}
    if sides.get("blind") and not sides.get("revealed"):
        left, right = NAMES[True]
    else:
        tuned, base = NAMES[False]
        left, right = (tuned, base) if tuned_left(sides) else (base, tuned)
    return gr.Chatbot(label=left), gr.Chatbot(label=right)


def new_conversation(blind: bool) -> tuple[dict, gr.Chatbot, gr.Chatbot]:
    """A fresh side assignment: shuffled when blind."""
    sides = {"blind": bool(blind), "tuned_left": random.random() < 0.5 if blind else True, "revealed": False}
    return (sides, *labels(sides))


def before_turn(left: list, right: list, blind: bool, sides: dict | None):
    """At a conversation's first message, the sides are drawn (the blind box is read then)."""
    if not left and not right:
        return new_conversation(blind)
    return (sides, *labels(sides))


def rate_text(run_id: str | None, visitor: str | None) -> str:
    if not run_id:
        return ""
    try:
        owned(run_id, visitor, "see the votes of")
    except gr.Error:
        return ""
    return votes.win_rate(votes.own_votes(run_id, visitor)).text()


def vote(
    choice: str,
    left: list,
    right: list,
    run_id: str | None,
    sides: dict | None,
    visitor: str | None,
    system_prompt: str,
    temperature,
    top_p,
):
    """Keep the visitor's judgement of the last pair of answers; then reveal which side was which."""
    owned(run_id, visitor, "vote on")
    sides = dict(sides or {"blind": False, "tuned_left": True, "revealed": False})
    left_messages, right_messages = as_messages(left), as_messages(right)
    if not left_messages or not right_messages or left_messages[-1]["role"] != "assistant":
        raise gr.Error("Vote after both models answered: send a message with 'Also answer with the base model' on.")
    if right_messages[-1]["role"] != "assistant" or left_messages[:-1] != right_messages[:-1]:
        raise gr.Error("Vote after both models answered the same message.")
    if sides.get("voted_turn") == len(left_messages):
        raise gr.Error("You voted on these answers already: send another message to vote again.")
    tuned_is_left = tuned_left(sides)
    winner = {"tie": "tie", "left": "tuned" if tuned_is_left else "base", "right": "base" if tuned_is_left else "tuned"}
    system = [{"role": "system", "content": system_prompt.strip()}] if system_prompt and system_prompt.strip() else []
    tuned_text, base_text = (
        (left_messages if tuned_is_left else right_messages)[-1]["content"],
        (right_messages if tuned_is_left else left_messages)[-1]["content"],
    )
    blind = bool(sides.get("blind")) and not sides.get("revealed")
    with shown_as_error(errors=(ValueError, OSError)):
        votes.record(
            run_id,
            visitor,
            system + left_messages[:-1],
            tuned_text,
            base_text,
            winner[choice],
            blind,
            {"temperature": float(temperature), "top_p": float(top_p)},
        )
    sides.update(revealed=True, voted_turn=len(left_messages))
    if blind:
        gr.Info(f"Model A was the {'tuned' if tuned_is_left else 'base'} model. Vote kept.")
    else:
        gr.Info("Vote kept.")
    return (sides, *labels(sides), rate_text(run_id, visitor))


def download(run_id: str | None, visitor: str | None) -> str:
    """The visitor's decisive votes as TRL preference JSONL, handed out from a fresh temporary folder."""
    owned(run_id, visitor, "download the votes of")
    rows = votes.own_votes(run_id, visitor)
    if not votes.preference_rows(rows):
        raise gr.Error("No decisive votes yet: vote on a few replies first (ties are not kept for TRL).")
    folder = Path(tempfile.mkdtemp(prefix="votes-", dir=handed_out_dir()))
    return str(votes.write_preferences(rows, folder / f"{run_id}-votes.jsonl"))


def push(
    run_id: str | None, visitor: str | None, name: str, typed_token: str, oauth_token: gr.OAuthToken | None = None
):
    owned(run_id, visitor, "push the votes of")
    token = publish.resolve_token(typed_token or (oauth_token.token if oauth_token is not None else None))
    try:
        record = votes_hub.push_votes(run_id, visitor, name or f"{run_id}-votes", token)
    except (ValueError, PermissionError, FileNotFoundError, RuntimeError, OSError) as error:
        raise gr.Error(publish.scrub(str(error), token), print_exception=False) from None
    return f"Pushed {record['rows']} votes to [{record['repo_id']}]({record['url']}) (a private dataset), one commit."


def build(run: gr.Dropdown, visitor: gr.State):
    """The vote row and the votes accordion; returns (blind box, sides state, vote buttons, rate)."""
    with gr.Row():
        blind = gr.Checkbox(
            value=True,
            label="Blind votes",
            scale=2,
            elem_id="chat-blind",
            info="The two answers as Model A and Model B, sides shuffled per conversation; your vote reveals them.",
        )
        better_left = gr.Button("A is better", scale=1, elem_id="vote-left")
        tie = gr.Button("Tie", scale=1, elem_id="vote-tie")
        better_right = gr.Button("B is better", scale=1, elem_id="vote-right")
    rate = gr.Markdown(elem_id="vote-rate")
    with gr.Accordion("Your votes: download for TRL, or push to the Hub", open=False, elem_id="votes-box"):
        gr.Markdown(
            "Each decisive vote is a row of TRL's preference format (`prompt`, `chosen`, `rejected`), the input of "
            "DPOTrainer: preference tuning is the step after SFT. Only your own votes, never anyone else's."
        )
        with gr.Row():
            download_button = gr.Button("Download my votes (JSONL)", elem_id="votes-download")
            votes_file = gr.File(label="Votes", interactive=False, elem_id="votes-file")
        with gr.Row():
            repo_name = gr.Textbox(label="Dataset repo name", placeholder="my-run-votes", elem_id="votes-repo")
            token = gr.Textbox(label="Hub write token (unless signed in)", type="password", elem_id="votes-token")
            push_button = gr.Button("Push my votes to the Hub", elem_id="votes-push")
        pushed = gr.Markdown(elem_id="votes-pushed")
    download_button.click(download, [run, visitor], votes_file, api_name="download_votes")
    push_button.click(push, [run, visitor, repo_name, token], pushed, api_name="push_votes")
    return blind, (better_left, tie, better_right), rate
