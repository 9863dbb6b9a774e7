"""Chat votes kept as preference data: the rows in TRL's format, a visitor's own only, the win rate, the download,
the push to a dataset repo (the real huggingface_hub client against the local Hub-compatible server), the model
card's line, and the whole thing in Chromium: blind sides, a vote, the reveal, the rate on Chat and Evaluate."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from sft_space.judging import votes
from sft_space.publishing import publish, votes_hub
from sft_space.publishing.card import model_card

from helpers import (
    app_page,
    launched_app,
    load_settings_file,
    page_run_id,
    send_and_wait_for_replies,
    short_run_file,
    use_test_hub,
    wait_until,
)
from hub_server import HubServer

TOKEN = "hf_votes_alice_token_1234"
PROMPT = [{"role": "user", "content": "Table for 2 at 7pm, name Sam"}]


def copy_run(trained_run, tmp_path):
    target = tmp_path / trained_run.name
    shutil.copytree(trained_run, target)
    return target


def test_rows_are_trls_preference_format_and_each_visitors_own(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    votes.record(run, "visitor-a", PROMPT, '{"name": "Sam"}', "Sure! Sam.", "tuned", blind=True)
    votes.record(run, "visitor-a", PROMPT, '{"name": "Sam"}', "I can help.", "base", blind=False)
    votes.record(run, "visitor-a", PROMPT, "A", "B", "tie", blind=True)
    votes.record(run, "visitor-b", PROMPT, "x", "y", "base", blind=True)
    mine = votes.own_votes(run, "visitor-a")
    assert len(mine) == 3 and len(votes.own_votes(run, "visitor-b")) == 1 and votes.own_votes(run, "c") == []
    first, second = mine[0], mine[1]
    assert first["prompt"] == PROMPT and first["chosen"] == [{"role": "assistant", "content": '{"name": "Sam"}'}]
    assert first["rejected"] == [{"role": "assistant", "content": "Sure! Sam."}] and first["blind"] is True
    assert second["chosen"][0]["content"] == "I can help." and second["winner"] == "base"
    raw = votes.votes_path(run).read_text()
    assert "visitor-a" not in raw and "visitor-b" not in raw  # a visitor key is a credential: only its hash
    rate = votes.win_rate(mine)
    assert (rate.votes, rate.tuned, rate.base, rate.ties, rate.rate) == (3, 1, 1, 1, 0.5)
    assert "50%" in rate.text() and "3 votes" in rate.text()
    exported = votes.write_preferences(mine, tmp_path / "prefs.jsonl").read_text().splitlines()
    assert [set(json.loads(line)) for line in exported] == [{"prompt", "chosen", "rejected"}] * 2  # the tie left out
    for bad in (dict(winner="left"), dict(tuned=" "), dict(prompt=[{"role": "assistant", "content": "x"}])):
        args = dict(prompt=PROMPT, tuned="a", base="b", winner="tuned") | bad
        with pytest.raises(ValueError):
            votes.record(run, "visitor-a", args["prompt"], args["tuned"], args["base"], args["winner"], True)
    card = model_card(run, "alice/model")
    assert "## Side-by-side votes" in card and "**38%** of **4** votes" in card  # (1 + 0.5) / 4, the run's votes


def test_votes_push_to_a_dataset_repo_of_the_visitors(trained_run, tmp_path, monkeypatch):
    from datasets import load_dataset

    run = copy_run(trained_run, tmp_path)
    with pytest.raises(ValueError, match="No decisive votes"):
        votes_hub.push_votes(run, "visitor-a", "my-votes", TOKEN)
    votes.record(run, "visitor-a", PROMPT, '{"name": "Sam"}', "Sure!", "tuned", blind=True)
    votes.record(run, "visitor-a", PROMPT, "A", "B", "tie", blind=True)
    votes.record(run, "visitor-b", PROMPT, "SECRET-OF-B", "y", "tuned", blind=True)
    with HubServer() as server:
        server.users[TOKEN] = "alice"
        use_test_hub(monkeypatch, server.url, tmp_path / "hf-home")
        monkeypatch.setattr(publish, "BACKOFF_SECONDS", 0.01)
        record = votes_hub.push_votes(run, "visitor-a", "my-votes", TOKEN)
        assert record["repo_id"] == "alice/my-votes" and record["rows"] == 1 and record["votes"] == 2
        repo = server.repos[("dataset", "alice/my-votes")]
        assert repo.private
        rows = [json.loads(line) for line in repo.files["data/train.jsonl"].decode().splitlines()]
        assert rows == [{"prompt": PROMPT, "chosen": [{"role": "assistant", "content": '{"name": "Sam"}'}],
                         "rejected": [{"role": "assistant", "content": "Sure!"}]}]  # fmt: skip
        card = repo.files["README.md"].decode()
        assert "win rate 75%" in card and "DPOTrainer" in card and "path: data/train.jsonl" in card
        pushed = b"".join(repo.files.values()).decode()
        assert "SECRET-OF-B" not in pushed and votes.voter_hash("visitor-a") not in pushed and TOKEN not in pushed
        (tmp_path / "pulled.jsonl").write_bytes(repo.files["data/train.jsonl"])
        pulled = load_dataset("json", data_files=str(tmp_path / "pulled.jsonl"), split="train")
        assert pulled.column_names == ["prompt", "chosen", "rejected"] and len(pulled) == 1
        with pytest.raises(PermissionError):
            votes_hub.push_votes(run, "visitor-a", "my-votes", "hf_not_a_known_token_000")


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_blind_votes_in_the_page(tiny_model, tmp_path):
    from sft_space.rundir import run_path

    short_run = short_run_file(tmp_path / "config.json", str(tiny_model), max_new_tokens=12)
    with launched_app() as url, app_page(url) as page:
        load_settings_file(page, short_run)
        page.locator("#start").click()
        page.wait_for_selector("#run-bar >> text=completed", timeout=240_000)
        run_id = page_run_id(page)

        page.get_by_role("tab", name="4 Chat").click()
        page.get_by_role("button", name="Generation").first.click()
        page.locator("#cfg-max_new_tokens input").fill("12")
        page.locator("#cfg-max_new_tokens input").press("Tab")
        page.locator("#vote-left").click()  # before any answer: refused, nothing kept
        page.wait_for_selector("text=Vote after both models answered", timeout=20_000)
        send_and_wait_for_replies(page, "Table for 2 at 7pm, name Sam")
        labels = page.locator("#chatbot").inner_text() + page.locator("#chatbot-base").inner_text()
        assert "Model A" in labels and "Model B" in labels and "Tuned model" not in labels  # blind
        page.screenshot(path=str(tmp_path / "before-vote.png"))
        page.locator("#vote-left").click()
        toast = page.wait_for_selector("text=/Model A was the (tuned|base) model/", timeout=20_000)
        tuned_was_a = "tuned model" in toast.inner_text()
        tuned_pane = page.locator("#chatbot" if tuned_was_a else "#chatbot-base")
        wait_until(lambda: "Tuned model" in tuned_pane.inner_text(), timeout=15, what="the panes named after the vote")
        page.wait_for_selector("#vote-rate >> text=of 1 vote", timeout=20_000)
        rate = page.locator("#vote-rate").inner_text()
        assert ("100%" if tuned_was_a else "0%") in rate
        page.screenshot(path=str(tmp_path / "after-vote.png"))
        page.locator("#vote-tie").click()  # the same answers twice: refused
        page.wait_for_selector("text=You voted on these answers already", timeout=20_000)

        rows = votes.own_votes(run_path(run_id), None)  # nobody else's key matches
        assert rows == []
        kept = [json.loads(line) for line in votes.votes_path(run_path(run_id)).read_text().splitlines()]
        assert len(kept) == 1 and kept[0]["blind"] is True
        assert kept[0]["winner"] == ("tuned" if tuned_was_a else "base")
        assert kept[0]["prompt"][-1]["content"] == "Table for 2 at 7pm, name Sam"

        page.locator("#votes-box").get_by_text("Your votes").first.click()
        page.locator("#votes-download").click()
        link = page.wait_for_selector("#votes-file a", timeout=20_000)
        assert f"{run_id}-votes.jsonl" in link.inner_text() or link.get_attribute("href")
        page.get_by_role("tab", name="5 Evaluate").click()
        page.wait_for_selector("#eval-votes >> text=of 1 vote", timeout=20_000)
        page.screenshot(path=str(tmp_path / "evaluate.png"))
        assert "Traceback" not in page.content()


def test_a_votes_file_cannot_grow_without_end(trained_run, tmp_path, monkeypatch):
    run = copy_run(trained_run, tmp_path)
    escaped = "\u0001" * 20_000  # 20,000 characters, 120,000 bytes once JSON escapes them
    with pytest.raises(ValueError, match="too long"):
        votes.record(run, "visitor-a", PROMPT, escaped, "b", "tuned", blind=True)
    assert not votes.votes_path(run).exists()
    monkeypatch.setattr(votes, "MAX_FILE_BYTES", 2_000)
    while True:
        try:
            votes.record(run, "visitor-a", PROMPT, "a" * 300, "b", "tuned", blind=True)
        except ValueError as error:
            assert "as many votes as it can keep" in str(error)
            break
    assert votes.votes_path(run).stat().st_size < 2_000 + votes.MAX_VOTE_BYTES


def test_blind_sides_the_left_pane_answers_first(monkeypatch):
    """With the tuned model on the right, the base model (left) answers first: the order gives nothing away."""
    from sft_space.ui import chat_tab

    calls = []

    def fake_replies(run_id, system, tuned, base, seed, settings, base_first=False):
        calls.append(base_first)
        order = [("", "base words"), ("tuned words", "base words")] if base_first else [("tuned words", ""),
                 ("tuned words", "base words")]  # fmt: skip
        for tuned_text, base_text in order:
            yield tuned_text, base_text, None
        yield tuned_text, base_text, 4

    monkeypatch.setattr(chat_tab, "_replies_call", fake_replies)
    monkeypatch.setattr(chat_tab, "owned", lambda *args: {})
    settings = (0, 0.7, 0.9, 16, 1.0, "visitor-a")
    for tuned_left in (False, True):
        sides = {"blind": True, "tuned_left": tuned_left, "revealed": False}
        steps = [
            copy.deepcopy(step) for step in chat_tab.respond_panes("hi", [], [], "run-x", "", True, *settings, sides)
        ]
        first_left, first_right = steps[0][1][-1]["content"], steps[0][2][-1]["content"]
        assert first_left and not first_right  # the left pane filled first, whichever model it holds
        assert (steps[-1][1][-1]["content"] == "tuned words") is tuned_left
    assert calls == [True, False]


def test_a_stranger_cannot_vote_read_or_push_another_visitors_votes(trained_run):
    """The calls no button of theirs makes, with another visitor's run id: refused before anything is read or
    written (Chat, the download, the push, the rate, Load settings' Use these settings)."""
    import gradio as gr

    from sft_space.rundir import runs_root
    from sft_space.ui import settings_load, votes_panel

    run_id = "20990101-000000-votes-owner-a1b2"
    shutil.copytree(trained_run, runs_root() / run_id)
    (runs_root() / run_id / "owner.json").write_text(json.dumps({"owner": "visitor-a", "address": None}))
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]
    votes.record(runs_root() / run_id, "visitor-a", PROMPT, "mine", "theirs", "tuned", blind=True)
    before = votes.votes_path(runs_root() / run_id).read_bytes()
    for stranger in ("visitor-b", None, ""):
        with pytest.raises(gr.Error, match="another visitor|no run"):
            votes_panel.vote("left", history, history, run_id, None, stranger, "", 0.7, 0.9)
        with pytest.raises(gr.Error):
            votes_panel.download(run_id, stranger)
        with pytest.raises(gr.Error):
            votes_panel.push(run_id, stranger, "x-votes", "hf_anything_123456")
        with pytest.raises(gr.Error):
            settings_load.use_run(run_id, stranger)
        assert votes_panel.rate_text(run_id, stranger) == ""
    assert votes.votes_path(runs_root() / run_id).read_bytes() == before
    assert "100%" in votes_panel.rate_text(run_id, "visitor-a")  # the owner's own
    shutil.rmtree(runs_root() / run_id)
