"""Datasets a user brings: every common format and file type, detected and turned into conversations."""

import csv
import json

import pytest

from sft_space.data import load_dataset_source

from helpers import TINY_FAST, run_cli


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def loaded(tmp_path, rows, name="data.jsonl", **kw):
    splits = load_dataset_source(write_jsonl(tmp_path / name, rows), validation_share=0.25, **kw)
    return splits, splits.train + splits.validation


def find(rows, text):
    return next(r for r in rows if any(text in t["content"] for t in r["messages"]))


def test_alpaca_with_and_without_input(tmp_path):
    rows = [
        {"instruction": f"Add {i} and 1", "input": "" if i % 2 else f"({i})", "output": str(i + 1)} for i in range(8)
    ]
    splits, all_rows = loaded(tmp_path, rows)
    assert splits.source_format == "alpaca" and splits.format_label() == "alpaca -> messages"
    assert find(all_rows, "Add 2 and 1")["messages"] == [
        {"role": "user", "content": "Add 2 and 1\n\n(2)"},
        {"role": "assistant", "content": "3"},
    ]
    assert find(all_rows, "Add 1 and 1")["messages"][0]["content"] == "Add 1 and 1"


def test_self_instruct_tasks_give_one_example_per_instance(tmp_path):
    rows = [
        {
            "id": f"seed_task_{i}",
            "name": f"task{i}",
            "instruction": f"Classify {i}",
            "is_classification": True,
            "instances": [{"input": f"item {i}a", "output": "yes"}, {"input": "", "output": "no"}],
        }
        for i in range(4)
    ]
    splits, all_rows = loaded(tmp_path, rows)
    assert splits.source_format == "self-instruct" and len(all_rows) == 8
    assert find(all_rows, "item 2a")["messages"] == [
        {"role": "user", "content": "Classify 2\n\nitem 2a"},
        {"role": "assistant", "content": "yes"},
    ]


def test_sharegpt_roles_and_system(tmp_path):
    rows = [
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": f"hi {i}"},
                {"from": "gpt", "value": "hello"},
                {"from": "human", "value": "bye"},
                {"from": "gpt", "value": "bye!"},
            ]
        }
        for i in range(4)
    ]
    splits, all_rows = loaded(tmp_path, rows)
    assert splits.source_format == "sharegpt"
    assert [t["role"] for t in all_rows[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]


@pytest.mark.parametrize(
    "row, kind, user, answer",
    [
        (
            {"instruction": "Name a colour", "context": "Sky", "response": "Blue", "category": "qa"},
            "dolly",
            "Name a colour\n\nSky",
            "Blue",
        ),
        ({"instruction": "Say hi", "response": "Hi"}, "instruction-response", "Say hi", "Hi"),
        ({"question": "2+2?", "answer": "4"}, "question-answer", "2+2?", "4"),
        (
            {"question": "Who?", "answer": "Ada", "context": "Ada wrote it."},
            "question-answer",
            "Ada wrote it.\n\nWho?",
            "Ada",
        ),
        ({"prompt": "Capital of France?", "completion": "Paris"}, "prompt-completion", "Capital of France?", "Paris"),
        (
            {"prompt": [{"role": "user", "content": "Hey"}], "completion": [{"role": "assistant", "content": "Yo"}]},
            "prompt-completion",
            "Hey",
            "Yo",
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "messages",
            "q",
            "a",
        ),  # OpenAI fine-tuning jsonl
    ],
)
def test_other_formats_become_one_user_turn_and_one_answer(tmp_path, row, kind, user, answer):
    splits, all_rows = loaded(tmp_path, [row] * 4)
    assert splits.source_format == kind
    messages = all_rows[0]["messages"]
    assert [t for t in messages if t["role"] == "user"][0]["content"] == user
    assert messages[-1] == {"role": "assistant", "content": answer}
    assert "3 duplicate rows" in splits.notes


def test_plain_text(tmp_path):
    splits, all_rows = loaded(tmp_path, [{"text": f"line {i}"} for i in range(4)])
    assert splits.format == "text" and all_rows[0] == {"text": all_rows[0]["text"]}


def test_csv_and_parquet_files(tmp_path):
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows([{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)])
    splits = load_dataset_source(str(path))
    assert splits.source_format == "question-answer" and len(splits.train) + len(splits.validation) == 10

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{"instruction": f"i{i}", "input": "", "output": f"o{i}"} for i in range(10)])
    pq.write_table(table, tmp_path / "data.parquet")
    splits = load_dataset_source(str(tmp_path / "data.parquet"))
    assert splits.source_format == "alpaca" and (len(splits.train), len(splits.validation)) == (9, 1)


def test_empty_rows_dropped_and_counted(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(6)] + [
        {"question": " ", "answer": ""},
        {"question": "q", "answer": "  "},
    ]
    splits, all_rows = loaded(tmp_path, rows)
    assert len(all_rows) == 6 and "2 empty rows dropped" in splits.notes


def test_wrong_format_choice_says_which_columns_exist(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}] * 3)
    with pytest.raises(
        ValueError, match=r"The alpaca format needs the column\(s\) instruction, output; this data has answer, question"
    ):
        load_dataset_source(path, data_format="alpaca")
    with pytest.raises(ValueError, match="Unknown format 'yaml'"):
        load_dataset_source(path, data_format="yaml")
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"foo": "a", "bar": "b"}] * 3)
    with pytest.raises(
        ValueError,
        match=r"Unrecognised dataset columns \['bar', 'foo'\]: pick the prompt .*rename them .*alpaca "
        r"\(instruction, output\)",
    ):
        load_dataset_source(odd)


def test_an_alpaca_file_trains_without_editing(tmp_path, tiny_model):
    rows = [
        {"instruction": f"Repeat the word {w}", "input": "", "output": w}
        for w in ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "melon"] * 3
    ]
    path = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    run_dir = tmp_path / "run"
    flags = [f for f in TINY_FAST]
    flags[flags.index("--dataset") + 1] = path
    result = run_cli("--model", str(tiny_model), "--max_steps", "2", "--output_dir", str(run_dir), *flags)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "alpaca -> messages" in (run_dir / "train.log").read_text()
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_a_plain_text_file_trains_on_the_whole_text(tmp_path, tiny_model):
    path = write_jsonl(
        tmp_path / "text.jsonl", [{"text": f"The number {i} is {'even' if i % 2 == 0 else 'odd'}."} for i in range(20)]
    )
    flags = [f for f in TINY_FAST]
    flags[flags.index("--dataset") + 1] = path
    result = run_cli("--model", str(tiny_model), "--max_steps", "2", "--output_dir", str(tmp_path / "run"), *flags)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "training on the whole text" in (tmp_path / "run" / "train.log").read_text()


def test_column_mapping_and_template(tmp_path):
    rows = [{"q": f"What is {i}+{i}?", "a": str(2 * i), "persona": "Be terse.", "topic": "maths"} for i in range(10)]
    path = write_jsonl(tmp_path / "own.jsonl", rows)
    with pytest.raises(ValueError, match="Unrecognised dataset columns"):
        load_dataset_source(path)
    mapped = load_dataset_source(
        path, data_format="columns", mapping={"prompt": "q", "response": "a", "system": "persona"}
    )
    first = (mapped.train + mapped.validation)[0]["messages"]
    assert [t["role"] for t in first] == ["system", "user", "assistant"] and first[0]["content"] == "Be terse."
    with pytest.raises(
        ValueError, match=r"Column mapping names question, which the data does not have; it has a, persona, q, topic"
    ):
        load_dataset_source(path, data_format="columns", mapping={"prompt": "question", "response": "a"})
    with pytest.raises(ValueError, match="choose the response column"):
        load_dataset_source(path, data_format="columns", mapping={"prompt": "q"})

    templated = load_dataset_source(path, data_format="template", template="### Question: {q}\n### Answer: {a}")
    assert templated.format == "text"
    assert (templated.train + templated.validation)[0]["text"].startswith("### Question: What is")
    with pytest.raises(
        ValueError,
        match=r"The template uses \{answer\}, which the data does not have; its columns are a, persona, q, topic",
    ):
        load_dataset_source(path, data_format="template", template="### Question: {q}\n### Answer: {answer}")
    with pytest.raises(ValueError, match="not valid"):
        load_dataset_source(path, data_format="template", template="{q")


def test_validation_share_is_editable(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"q{i}", "answer": f"a{i}"} for i in range(20)])
    assert len(load_dataset_source(path, validation_share=0.25).validation) == 5
    assert len(load_dataset_source(path).validation) == 2
    from sft_space.config import RunConfig

    with pytest.raises(ValueError, match="validation_share must be above 0 and at most 0.5, got 0.9"):
        RunConfig(validation_share=0.9).validate()


def test_what_the_model_sees_trains_the_answer_and_its_end_of_turn(tiny_model):
    from sft_space.data import length_stats, loss_view, token_labels
    from sft_space.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    row = {"messages": [{"role": "user", "content": "Table for two"}, {"role": "assistant", "content": '{"a": 1}'}]}
    ids, trained = token_labels(tokenizer, row, answers_only=True)
    answer = tokenizer.decode([i for i, t in zip(ids, trained) if t])
    assert answer.startswith('{"a": 1}<|im_end|>')  # the end-of-turn token carries loss, so the model learns to stop
    assert "Table for two" not in answer
    assert all(token_labels(tokenizer, row, answers_only=False)[1])
    pieces = loss_view(tokenizer, row, answers_only=True, max_length=8)
    assert [label for _, label in pieces] == [None, "cut off"]  # 8 tokens of prompt, then the cut
    stats = length_stats(tokenizer, [row] * 4, answers_only=True, max_length=8, batch_size=2)
    assert stats["truncated_share"] == 1.0 and stats["answer_lost_share"] == 1.0
    roomy = length_stats(tokenizer, [row] * 4, answers_only=True, max_length=512, batch_size=2)
    assert roomy["truncated_share"] == 0.0 and roomy["padding_efficiency"] == 1.0


def test_upper_case_suffixes_and_deeply_nested_rows(tmp_path):
    """DATA.JSONL reads as data.jsonl (the Data tab accepts it); a row nested thousands of levels deep is a clear
    refusal naming its line, not a RecursionError."""
    upper = tmp_path / "DATA.JSONL"
    upper.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(4)))
    assert len(load_dataset_source(str(upper)).train) == 3  # one of the four held out for validation
    nested = tmp_path / "nested.jsonl"
    nested.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ValueError, match="nested.jsonl line 2 nests its values too deeply to be a row"):
        load_dataset_source(str(nested))


def test_a_conversation_of_plain_strings_is_refused_with_what_a_turn_must_look_like(tmp_path):
    """A JSONL whose `messages` are plain strings (or ShareGPT turns that are not objects) is named, never a crash
    whose message is empty on the page."""
    strings = tmp_path / "strings.jsonl"
    strings.write_text('{"messages": ["hello", "there"]}\n{"messages": ["a", "b"]}\n')
    with pytest.raises(
        ValueError, match=r"""'messages' must be an object such as \{"role": "user".*str items \('hello'\)"""
    ):
        load_dataset_source(str(strings))
    sharegpt = tmp_path / "sharegpt.jsonl"
    sharegpt.write_text('{"conversations": [["human", "hi"], ["gpt", "yo"]]}\n' * 2)
    with pytest.raises(ValueError, match=r"'conversations' must be an object such as \{\"from\": \"human\""):
        load_dataset_source(str(sharegpt))
