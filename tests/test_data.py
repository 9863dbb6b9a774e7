"""Demo datasets and the loader: counts, determinism, formats, and the messages a bad file gets."""

import json
from types import SimpleNamespace

import pytest

from sft_space.bundled import DEMO_DIR
from sft_space.config import RunConfig
from sft_space.data import load_dataset_source, load_for_run, preview_table, to_trl_rows, trainer_rows
from sft_space.demo_data.make_demo_data import JSON_EXTRACT_SCHEMA, build
from sft_space.scorers import schema_errors


def test_demo_sets_have_the_promised_sizes():
    json_extract = load_dataset_source("demo:json-extract")
    # validation is carved from the 640 training rows; the 120 test rows are kept apart for the final score
    assert (len(json_extract.train), len(json_extract.validation), len(json_extract.test)) == (576, 64, 120)
    assert json_extract.held_out()[0] == json_extract.test
    pirate = load_dataset_source("demo:pirate-chat")
    assert len(pirate.train) + len(pirate.validation) >= 100 and len(pirate.test) == 15
    rows = pirate.train + pirate.validation
    assert any(len([m for m in r["messages"] if m["role"] == "user"]) > 1 for r in rows), "some multi-turn"
    assert any(r["messages"][0]["role"] == "system" for r in rows), "some with a system prompt"


def test_demo_files_are_exactly_what_the_script_writes():
    for name, rows in build().items():
        on_disk = [json.loads(line) for line in (DEMO_DIR / name).read_text().splitlines()]
        assert on_disk == rows, name


def test_json_extract_answers_follow_the_schema_and_normalise():
    rows = load_dataset_source("demo:json-extract").train
    answers = [json.loads(r["messages"][-1]["content"]) for r in rows]
    assert all(not schema_errors(a, JSON_EXTRACT_SCHEMA) for a in answers)
    requests = [r["messages"][0]["content"] for r in rows]
    assert any("half past" in q for q in requests) and any("dozen" in q for q in requests)
    assert len(set(requests)) == len(requests)
    splits = load_dataset_source("demo:json-extract")
    validation = {r["messages"][0]["content"] for r in splits.validation}
    test = {r["messages"][0]["content"] for r in splits.test}
    # no row in two places: settings chosen on validation never see a test row, nor a training row
    assert not set(requests) & validation and not set(requests) & test and not validation & test


def test_local_jsonl_gets_a_seeded_holdout(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(20)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b = load_dataset_source(str(path)), load_dataset_source(str(path))
    assert (len(a.train), len(a.validation)) == (18, 2)
    assert a.validation == b.validation


def test_bad_files_get_a_message_that_says_where(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n{not json}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_dataset_source(str(bad))
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"question": "a"}\n{"question": "b"}\n')
    with pytest.raises(
        ValueError, match="Unrecognised dataset columns.*messages.*question-answer \\(answer, question\\)"
    ):
        load_dataset_source(str(wrong))
    with pytest.raises(ValueError, match="Unknown demo dataset"):
        load_dataset_source("demo:nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset_source(str(tmp_path / "missing.jsonl"))


def test_answers_only_uses_prompt_completion():
    row = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"},
        ]
    }
    converted = to_trl_rows([row], answers_only=True)[0]
    assert converted["prompt"] == row["messages"][:2] and converted["completion"] == row["messages"][2:]
    assert to_trl_rows([row], answers_only=False)[0] == {"messages": row["messages"]}
    assert preview_table([row]) == [["s", "u", "a", "1"]]


def test_trainer_rows_are_what_training_gives_trl():
    """Loss choice, chat template markers and the validation cap, as the trainer (and export) shape the rows."""
    marked = SimpleNamespace(chat_template="{% generation %}{{ m }}{% endgeneration %}")
    plain = SimpleNamespace(chat_template="{{ m }}")
    config = RunConfig(dataset="demo:pirate-chat", eval_max_rows=3)
    splits = load_for_run(config)
    train, validation = trainer_rows(config, plain)
    assert train == to_trl_rows(splits.train, answers_only=True) and "completion" in train[0]
    assert validation == to_trl_rows(splits.validation[:3], answers_only=True)
    train, validation = trainer_rows(config, marked, splits)  # every answer trained: whole conversations
    assert train == [{"messages": r["messages"]} for r in splits.train] and len(validation) == 3
    everything = RunConfig(dataset="demo:pirate-chat", eval_max_rows=0, answers_only=False)
    train, validation = trainer_rows(everything, marked, splits)
    assert "messages" in train[0] and len(validation) == len(splits.validation)
