"""'Is it worth it?': prompt construction for each baseline, token counting, and the verdict text."""

import json
import subprocess
import sys

import pytest

from sft_space.data import load_dataset_source, prompt_messages, reference_answer
from sft_space.judging.baselines import (
    VARIANTS,
    build_prompt,
    checklist,
    default_instructions,
    pick_shots,
    shot_messages,
    verdict,
)
from sft_space.judging.scorers import choose_scorer

from helpers import ROOT

SPLITS = load_dataset_source("demo:json-extract")


def test_few_shot_examples_come_from_train_only_and_are_seeded():
    shots = pick_shots(SPLITS.train, 3, seed=42)
    assert len(shots) == 3 and all(s in SPLITS.train for s in shots)
    held_prompts = {r["messages"][0]["content"] for r in SPLITS.validation}
    assert not held_prompts & {s["messages"][0]["content"] for s in shots}
    assert pick_shots(SPLITS.train, 3, seed=42) == shots
    with pytest.raises(ValueError, match="at most"):
        pick_shots(SPLITS.train[:2], 3, seed=1)


def test_each_variant_sends_the_conversation_it_promises():
    prompt = prompt_messages(SPLITS.validation[0])
    shots = pick_shots(SPLITS.train, 2, seed=0)
    assert build_prompt("zero-shot", prompt, "X", shots) == prompt
    assert build_prompt("tuned", prompt, "X", shots) == prompt
    assert build_prompt("instructions", prompt, "Only JSON.", shots) == [
        {"role": "system", "content": "Only JSON."},
        *prompt,
    ]
    few = build_prompt("few-shot", prompt, "ignored", shots)
    assert few[:4] == shot_messages(shots) and few[4:] == prompt
    assert [m["role"] for m in few] == ["user", "assistant", "user", "assistant", "user"]
    with_system = [{"role": "system", "content": "Be brief."}, *prompt]
    merged = build_prompt("instructions", with_system, "Only JSON.", shots)
    assert merged[0] == {"role": "system", "content": "Only JSON.\n\nBe brief."} and merged[1:] == prompt
    assert build_prompt("few-shot", with_system, "", shots)[0] == with_system[0]


def test_default_instructions_describe_the_inferred_schema():
    scorer = choose_scorer([reference_answer(r) for r in SPLITS.train])
    text = default_instructions(scorer)
    for words in (
        '"intent": one of book_table',
        '"date": a date as YYYY-MM-DD or null',
        '"time": a 24-hour time as HH:MM or null',
        '"quantity": a whole number or null',
        "exactly one JSON object",
    ):
        assert words in text, text


def table(**overrides):
    rows = {
        "zero-shot": dict(schema_valid=0.0, field_accuracy=0.0, prompt_tokens=60, seconds_per_reply=1.0, ends_turn=0.9),
        "instructions": dict(
            schema_valid=0.2, field_accuracy=0.1, prompt_tokens=180, seconds_per_reply=1.2, ends_turn=0.9
        ),
        "few-shot": dict(
            schema_valid=1.0, field_accuracy=0.12, prompt_tokens=240, seconds_per_reply=1.4, ends_turn=1.0
        ),
        "tuned": dict(schema_valid=1.0, field_accuracy=0.94, prompt_tokens=60, seconds_per_reply=1.0, ends_turn=1.0),
    }
    for variant, values in overrides.items():
        rows[variant] = {**rows[variant], **values}
    return rows


def test_verdict_when_sft_wins():
    text = verdict(table(), "json-schema")
    assert text == (
        "SFT is worth it here: base, few-shot prompting reaches 100% schema-valid JSON but 12% correct "
        "fields; the tuned model reaches 94% correct fields with 4.0x fewer prompt tokens."
    )


def test_verdict_when_prompting_is_enough_or_even():
    losing = verdict(table(tuned=dict(field_accuracy=0.05), instructions=dict(field_accuracy=0.6)), "json-schema")
    assert losing.startswith(
        "Prompting is enough here: base + instructions prompting reaches 20% schema-valid JSON but 60% correct fields"
    )
    even = verdict(table(tuned=dict(field_accuracy=0.62), instructions=dict(field_accuracy=0.6)), "json-schema")
    assert even.startswith("About even:") and "3.0x fewer prompt tokens" in even


def test_verdict_without_a_format_check_talks_about_cost():
    rows = {v: dict(prompt_tokens=p, seconds_per_reply=1.0, ends_turn=1.0) for v, p in zip(VARIANTS, [40, 90, 300, 40])}
    assert "No format check applies" in verdict(rows, "none") and "300 for few-shot" in verdict(rows, "none")


def test_checklist_marks_what_the_numbers_say():
    items = dict(checklist(table(), "json-schema", {"base": 2.0, "tuned": 0.3}))
    assert items["Precise output format"].startswith("even: tuned 100% vs best prompt 100%")
    assert items["Domain knowledge"].startswith("yes: held-out loss 2.000 (base) -> 0.300")
    assert items["Adherence to guidelines"].startswith("yes: tuned 94% vs 10% correct fields")
    assert items["Consistent response patterns"].startswith("even")
    assert dict(checklist(table(), "json-schema"))["Domain knowledge"].startswith("not measured")


def test_prompt_tokens_are_counted_from_the_chat_template(trained_run):
    from sft_space.run_model import generate_once, load_chat_model, unload

    loaded = load_chat_model(trained_run)
    try:
        prompt = prompt_messages(SPLITS.validation[0])
        few = build_prompt("few-shot", prompt, "", pick_shots(SPLITS.train, 2, seed=0))
        for messages in (prompt, few):
            out = generate_once(loaded, messages, max_new_tokens=5)
            expected = len(
                loaded.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=True, return_dict=True
                )["input_ids"]
            )
            assert out["prompt_tokens"] == expected
            assert out["new_tokens"] <= 5 and isinstance(out["ended_turn"], bool)
    finally:
        unload()


def test_baselines_command_writes_the_four_rows(trained_run):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sft_space.judging.evaluate",
            str(trained_run),
            "--count",
            "2",
            "--loss_rows",
            "2",
            "--baselines",
            "--shots",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((trained_run / "eval.json").read_text())
    baselines = saved["baselines"]
    assert list(baselines["rows"]) == VARIANTS and baselines["prompts"] == 2 and baselines["shots"] == 2
    rows = baselines["rows"]
    assert rows["few-shot"]["prompt_tokens"] > rows["zero-shot"]["prompt_tokens"]
    assert rows["instructions"]["prompt_tokens"] > rows["zero-shot"]["prompt_tokens"]
    assert rows["tuned"]["prompt_tokens"] == rows["zero-shot"]["prompt_tokens"]
    assert baselines["verdict"] in result.stdout and "base" in saved and "tuned" in saved
