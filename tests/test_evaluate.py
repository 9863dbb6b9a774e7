"""Format scorers on known outputs, schema inference, and the evaluation command on a trained tiny model."""

import json
import math
import shutil
import subprocess
import sys

import pytest

from sft_space.data import load_dataset_source, reference_answer
from sft_space.demo_data.make_demo_data import JSON_EXTRACT_SCHEMA
from sft_space.judging.evaluate import summary_headers, summary_rows
from sft_space.judging.scorers import (
    choose_scorer,
    infer_json_schema,
    parse_json_object,
    schema_errors,
    score_json_replies,
    score_replies,
)

from helpers import ROOT

GOOD = json.dumps(
    {"intent": "book_table", "name": "Sam", "date": "2025-03-14", "time": "19:30", "quantity": 2, "item": None}
)


def test_schema_errors_name_the_problem():
    assert schema_errors(json.loads(GOOD), JSON_EXTRACT_SCHEMA) == []
    bad = {**json.loads(GOOD), "time": "7:30pm", "intent": "dance", "extra": 1}
    problems = " ".join(schema_errors(bad, JSON_EXTRACT_SCHEMA))
    assert (
        "'time' does not match" in problems and "'intent' not one of" in problems and "unexpected 'extra'" in problems
    )
    assert schema_errors(None, JSON_EXTRACT_SCHEMA) == ["not a JSON object"]
    twice = GOOD[:-1] + ', "date": "2025-03-14"}'
    assert "a key appears twice" in schema_errors(parse_json_object(twice), JSON_EXTRACT_SCHEMA)


def test_scores_count_valid_schema_and_fields():
    wrong_time = GOOD.replace("19:30", "20:30")
    scores = score_json_replies(
        [GOOD, wrong_time, "Sure! Here is your booking.", '{"intent": "book_table"}'], [GOOD] * 4, JSON_EXTRACT_SCHEMA
    )
    assert scores["valid_json"] == 0.75
    assert scores["schema_valid"] == 0.5
    assert scores["all_fields_exact"] == 0.25
    assert scores["field_accuracy"] == (6 + 5 + 0 + 1) / 24
    assert scores["fields"] == {"intent": 0.75, "name": 0.5, "date": 0.5, "time": 0.25, "quantity": 0.5, "item": 0.5}
    assert len(scores["failures"]) == 3


def test_schema_inferred_from_training_answers_matches_the_demo_schema():
    answers = [reference_answer(r) for r in load_dataset_source("demo:json-extract").train]
    inferred = infer_json_schema(answers)
    assert inferred["required"] == JSON_EXTRACT_SCHEMA["required"]
    props = inferred["properties"]
    assert props["intent"] == {"enum": sorted(JSON_EXTRACT_SCHEMA["properties"]["intent"]["enum"])}
    assert props["date"]["pattern"] == r"^\d{4}-\d{2}-\d{2}$" and props["time"]["pattern"] == r"^\d{2}:\d{2}$"
    assert sorted(props["quantity"]["type"]) == ["integer", "null"]
    assert "enum" not in props["item"]  # 32 different items: free text, not a closed list
    # a reply the hand-written schema rejects, the inferred one rejects too
    assert schema_errors(json.loads(GOOD.replace("19:30", "7:30pm")), inferred)
    assert schema_errors(json.loads(GOOD), inferred) == []


def test_free_text_answers_get_no_schema_and_other_scorers_work():
    pirate = [reference_answer(r) for r in load_dataset_source("demo:pirate-chat").train]
    assert choose_scorer(pirate) == {"kind": "none"}
    with pytest.raises(ValueError, match="not JSON objects"):
        choose_scorer(pirate, "json-schema")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        choose_scorer(pirate, "regex", "([")
    regex = score_replies(["Arr, matey!", "Hello."], ["x", "y"], choose_scorer(pirate, "regex", r"matey"))
    assert regex["regex_match"] == 0.5 and regex["failures"][0]["reply"] == "Hello."
    exact = score_replies(["a ", "b"], ["a", "c"], {"kind": "exact"})
    assert exact["exact_match"] == 0.5
    valid = score_replies(['{"a": 1}', "no"], ['{"a": 1}', "{}"], {"kind": "valid-json"})
    assert valid["valid_json"] == 0.5


def test_summary_rows_say_which_model_is_better():
    result = {
        "base": {"heldout": {"loss": 2.0, "perplexity": 7.39}, "format": {"schema_valid": 0.0}},
        "tuned": {"heldout": {"loss": 0.5, "perplexity": 1.65}, "format": {"schema_valid": 0.9}},
    }
    rows = summary_rows(result)
    assert ["held-out loss (answers)", "2.000", "0.500", "tuned"] in rows
    assert ["schema-valid JSON", "0%", "90%", "tuned"] in rows
    # with rows unlike the training rows the two sets stand side by side, each with its own verdict
    result["unlike"] = "hand-written check requests"
    result["base"]["unlike"] = {"heldout": {"loss": 2.5, "perplexity": 12.2}, "format": {"schema_valid": 0.1}}
    result["tuned"]["unlike"] = {"heldout": {"loss": 2.7, "perplexity": 14.9}, "format": {"schema_valid": 0.6}}
    assert summary_headers(result)[3:5] == ["base · hand-written", "tuned · hand-written"]
    rows = summary_rows(result)
    assert ["held-out loss (answers)", "2.000", "0.500", "2.500", "2.700", "tuned / base"] in rows
    assert ["schema-valid JSON", "0%", "90%", "10%", "60%", "tuned / tuned"] in rows


def test_evaluate_command_writes_base_and_tuned_results(trained_run):
    result = subprocess.run(
        [sys.executable, "-m", "sft_space.judging.evaluate", str(trained_run), "--count", "3", "--loss_rows", "6"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out loss (answers)" in result.stdout
    saved = json.loads((trained_run / "eval.json").read_text())
    assert saved["scorer"]["kind"] == "json-schema"
    for name in ("base", "tuned"):
        heldout = saved[name]["heldout"]
        assert math.isfinite(heldout["loss"]) and heldout["rows"] == 6 and heldout["tokens"] > 0
        assert saved[name]["format"]["count"] == 3
        assert 0 <= saved[name]["format"]["ended_turn"] <= 1 and set(saved[name]["format"]["fields"]) >= {"intent"}
    assert saved["tuned"]["heldout"]["loss"] < saved["base"]["heldout"]["loss"]  # three steps already help
    # a demo set is scored on its test split: rows no training or setting choice ever saw
    assert saved["held_out"].startswith("test rows")
    test_rows = (ROOT / "sft_space/demo_data/json-extract.test.jsonl").read_text().splitlines()
    assert [e["prompt"] for e in saved["tuned"]["examples"]] == [
        json.loads(line)["messages"][0]["content"] for line in test_rows[-3:]
    ]
    assert "field 'intent' right" in result.stdout
    # and beside them the set's hand-written check requests, written unlike its training rows
    assert saved["unlike"].startswith("hand-written check requests")
    check_rows = (ROOT / "sft_space/demo_data/json-extract.check.jsonl").read_text().splitlines()
    for name in ("base", "tuned"):
        assert saved[name]["unlike"]["format"]["count"] == 3 and saved[name]["unlike"]["heldout"]["rows"] == 6
    assert [e["prompt"] for e in saved["tuned"]["unlike"]["examples"]] == [
        json.loads(line)["messages"][0]["content"] for line in check_rows[:3]
    ]
    assert "tuned · hand-written" in result.stdout


def test_evaluate_command_refuses_a_run_without_adapter(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_steps": 1}))
    result = subprocess.run(
        [sys.executable, "-m", "sft_space.judging.evaluate", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "has no saved adapter" in result.stderr and "Traceback" not in result.stderr


def test_the_evaluate_tab_remembers_each_runs_count(monkeypatch):
    """Choosing a run shows its saved evaluation and puts back the number of prompts it was scored on."""
    from sft_space.ui import evaluate_tab

    saved = {
        "run": "r",
        "dataset": "demo:json-extract",
        "held_out": "test rows (never trained on nor used to choose settings)",
        "scorer": {"kind": "json-schema"},
        "base": {"heldout": {"loss": 2.0, "perplexity": 7.4, "rows": 60}, "format": {"count": 120, "valid_json": 0}},
        "tuned": {
            "heldout": {"loss": 0.1, "perplexity": 1.1, "rows": 60},
            "format": {"count": 120, "valid_json": 1.0, "fields": {"time": 0.9}},
        },
    }
    monkeypatch.setattr(evaluate_tab.ownership, "visible_run", lambda run_id, visitor: True)
    monkeypatch.setattr(evaluate_tab.rundir, "read_eval", lambda run_id: saved)
    monkeypatch.setattr(evaluate_tab, "instructions_for", lambda run_id, saved: "")
    count, about, table, *_ = evaluate_tab.load_existing("r", None)
    assert count["value"] == 120
    assert "held-out loss on 60 test rows (never trained on" in about and "120 held-out prompts" in about
    assert ["field 'time' right", "0%", "90%", "tuned"] in table.values.tolist()
    # a set with hand-written check requests: their columns beside the held-out ones, and a word on why
    saved["unlike"] = "hand-written check requests (written unlike the training rows, not by the set's generator)"
    saved["base"]["unlike"] = {"heldout": {"loss": 2.4, "rows": 60}, "format": {"count": 20, "fields": {"time": 0.0}}}
    saved["tuned"]["unlike"] = {"heldout": {"loss": 0.9, "rows": 60}, "format": {"count": 20, "fields": {"time": 0.6}}}
    _, about, table, *_ = evaluate_tab.load_existing("r", None)
    assert list(table.columns)[3:5] == ["base · hand-written", "tuned · hand-written"]
    assert ["field 'time' right", "0%", "90%", "0%", "60%", "tuned / tuned"] in table.values.tolist()
    assert "20 hand-written check requests" in about and "overstates" in about
    monkeypatch.setattr(evaluate_tab.rundir, "read_eval", lambda run_id: {})
    count, about, *_ = evaluate_tab.load_existing("r", None)
    assert "value" not in count and "No evaluation for this run yet" in about  # the field keeps what it holds


def test_the_card_shows_rows_unlike_the_training_rows_beside_the_held_out_ones():
    from sft_space.publishing.card import _evaluation_section

    evaluation = {
        "scorer": {"kind": "json-schema"},
        "unlike": "hand-written check requests (written unlike the training rows, not by the set's generator)",
        "base": {
            "heldout": {"loss": 2.0, "perplexity": 7.4, "rows": 60},
            "format": {"count": 20, "all_fields_exact": 0.0},
            "unlike": {
                "heldout": {"loss": 2.2, "perplexity": 9.0, "rows": 60},
                "format": {"count": 20, "all_fields_exact": 0.0},
            },
        },
        "tuned": {
            "heldout": {"loss": 0.1, "perplexity": 1.1, "rows": 60},
            "format": {"count": 20, "all_fields_exact": 0.9},
            "unlike": {
                "heldout": {"loss": 0.6, "perplexity": 1.8, "rows": 60},
                "format": {"count": 20, "all_fields_exact": 0.45},
            },
        },
    }
    text = "\n".join(_evaluation_section(evaluation))
    assert (
        "| metric | base · held-out | tuned · held-out | base · hand-written | tuned · hand-written | better |" in text
    )
    assert "| all fields exact | 0% | 90% | 0% | 45% | tuned / tuned |" in text
    assert "20 hand-written check requests" in text and "overstates" in text


def test_a_check_split_too_long_for_this_space_is_left_out_and_said(trained_run, tmp_path, monkeypatch):
    """Every check request longer than the Space evaluates (the real cap, real rows): the held-out rows are still
    scored, and the page says what was not."""
    from sft_space.judging.evaluate import evaluate_run
    from sft_space.models import bundled
    from sft_space.ui import evaluate_tab

    long_rows = tmp_path / "json-extract.check.jsonl"
    row = {"messages": [{"role": "user", "content": "Hi! " * 3000}, {"role": "assistant", "content": GOOD}]}
    long_rows.write_text(json.dumps(row) + "\n" + json.dumps(row).replace("Hi!", "Hey") + "\n")
    real = bundled.demo_split_path
    monkeypatch.setattr(
        "sft_space.data.sources.demo_split_path",
        lambda name, split: long_rows if split == "check" else real(name, split),
    )
    monkeypatch.setenv("SFT_SPACE_EVAL_PROMPT_TOKENS", "400")
    run = shutil.copytree(trained_run, tmp_path / "run")  # its eval.json is this test's own
    result = evaluate_run(run, count=2, loss_rows=2)
    assert "unlike" not in result and "unlike" not in result["tuned"]
    assert result["unlike_left_out"].startswith("the hand-written check requests are longer than")
    assert result["tuned"]["format"]["count"] == 2  # the held-out rows are still scored
    about = evaluate_tab.show(result)[0]
    assert "Not scored: the hand-written check requests are longer than this Space evaluates" in about
