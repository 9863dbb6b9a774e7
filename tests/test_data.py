"""Demo datasets and the loader: counts, determinism, formats, and the messages a bad file gets."""

import json
import re
from types import SimpleNamespace

import pytest

from sft_space.config import RunConfig
from sft_space.data import load_dataset_source, load_for_run, preview_table, to_trl_rows, trainer_rows
from sft_space.demo_data.make_demo_data import JSON_EXTRACT_SCHEMA, build
from sft_space.judging.scorers import schema_errors
from sft_space.models.bundled import DEMO_DIR


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


def test_json_extract_teaches_the_task_not_a_list():
    """Open vocabularies and distractors: many names (some in their own script) and products, the name next to
    other people, numbers that are not the quantity, parties that add up, dates without a year, relative dates."""
    rows = load_dataset_source("demo:json-extract").train
    pairs = [(r["messages"][0]["content"], json.loads(r["messages"][-1]["content"])) for r in rows]
    names = {a["name"].casefold() for _, a in pairs if a["name"]}
    items = {a["item"].casefold() for _, a in pairs if a["item"]}
    assert len(names) > 300 and len(items) > 250, (len(names), len(items))
    assert any(not n.isascii() and not any("a" <= c <= "z" for c in n) for n in names), "a name in its own script"
    for text, a in pairs:  # every name and item is copied from its message
        assert a["name"] is None or a["name"] in text, (text, a)
        assert a["item"] is None or a["item"] in text, (text, a)
    assert sum(a["name"] is None for _, a in pairs) > 100, "many senders give no name"
    assert any(a["name"] and text.endswith(f"\n{a['name']}") for text, a in pairs), "a name in a sign-off"
    assert any(a["name"] and re.search(rf"(Dr|Mr|Ms|Mrs)\.? {re.escape(a['name'])}", t) for t, a in pairs), "a title"
    assert any(t.startswith(("Bonjour!", "Merhaba!", "Hola!")) for t, _ in pairs), "a greeting that is not a name"
    greeted = [(re.match(r"(?:Hi|Hello|Hey|Dear) (\w+),\n", t), a) for t, a in pairs]
    assert sum(bool(m) and m.group(1) != a["name"] for m, a in greeted) > 10, "the member of staff greeted"
    parties = [a["quantity"] for t, a in pairs if a["intent"] == "book_table" and "friend" in t]
    assert parties and all(q >= 2 for q in parties), "me and N friends adds up"
    numbers_not_counts = [
        (t, a) for t, a in pairs if re.search(r"#\d{4,}|07\d{3} \d{6}", t) and a["quantity"] is not None
    ]
    assert numbers_not_counts and all(str(a["quantity"]) not in re.findall(r"\d{4,}", t) for t, a in numbers_not_counts)
    assert any(a["intent"] == "cancel_order" and a["quantity"] for _, a in pairs), "a count on a cancellation"
    assert any(a["intent"] == "report_issue" and a["quantity"] for _, a in pairs), "how many arrived broken"
    assert any(a["intent"] == "schedule_delivery" and a["time"] is None for _, a in pairs), "a delivery, no time"
    assert any("tomorrow" in t.lower() and a["date"] is None for t, a in pairs), "a relative date has no ISO form"
    assert any(re.search(r"\b\d{1,2}h\d{2}\b|\d{4} hrs|\d\.\d{2}[ap]m", t) for t, _ in pairs), "19h30, 1930 hrs, 7.30pm"
    assert any("\n\n" in t for t, _ in pairs) and any(t == t.lower() for t, _ in pairs), "emails and chat lines"


def test_json_extract_check_split_is_hand_written_and_apart():
    """The check requests: hand-written (not by make_demo_data), every intent, answers by the rules, and no
    request shared with the generated rows."""
    splits = load_dataset_source("demo:json-extract")
    check = splits.unlike
    assert len(check) >= 100
    answers = [json.loads(r["messages"][-1]["content"]) for r in check]
    assert all(not schema_errors(a, JSON_EXTRACT_SCHEMA) for a in answers)
    assert list(answers[0]) == ["intent", "name", "date", "time", "quantity", "item"]
    intents = {i: sum(a["intent"] == i for a in answers) for i in JSON_EXTRACT_SCHEMA["properties"]["intent"]["enum"]}
    assert min(intents.values()) >= 12, intents
    for row, a in zip(check, answers):
        text = row["messages"][0]["content"].casefold()
        assert a["name"] is None or a["name"].casefold() in text, (text, a)
        assert a["intent"] != "book_table" or a["item"] is None
    generated = {r["messages"][0]["content"] for r in splits.train + splits.validation + splits.test}
    assert not generated & {r["messages"][0]["content"] for r in check}
    assert "json-extract.check.jsonl" not in build(), "the script never writes the hand-written split"
    assert load_dataset_source("demo:pirate-chat").unlike == []


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
