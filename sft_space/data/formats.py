"""Dataset formats: what a row looks like, and how any known shape becomes a conversation.

Owns the formats a user brings (FORMATS: chat messages, ShareGPT, Alpaca, Self-Instruct, Dolly, question/answer,
prompt/completion, plain text, and the user's own column mapping or template), recognising them from the first
row, reading a local .jsonl/.json/.csv/.parquet file into rows, turning one row into {'messages': [...]} or
{'text': ...}, dropping empty rows and counting duplicates, and checking that conversations end with an answer.
It knows nothing about where rows come from (files by path only; not the Hub, not demo sets), about splitting,
tokenizers or TRL.
"""

from __future__ import annotations

import csv
import json
import string
from pathlib import Path

ROLES = ("system", "user", "assistant")
UPLOAD_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
MAX_TEMPLATE_CHARACTERS = 2_000  # a user's text template
MAX_TEMPLATE_FIELDS = 20  # placeholders in it

# Formats a user brings, in the order they are recognised, and what each needs in a row.
FORMATS = {
    "messages": "chat messages: role/content turns (also OpenAI fine-tuning jsonl)",
    "sharegpt": "ShareGPT: conversations of from/value (human, gpt, system)",
    "alpaca": "Alpaca: instruction, input, output",
    "self-instruct": "Self-Instruct seed tasks: instruction with instances of input/output (one example per instance)",
    "dolly": "Dolly: instruction, context, response",
    "instruction-response": "instruction, response",
    "question-answer": "question, answer (optional context)",
    "prompt-completion": "prompt, completion (plain text or conversational)",
    "text": "plain text, trained as a whole",
    "columns": "your own columns: pick the prompt, answer and (optional) system columns",
    "template": "your own template, e.g. '### Question: {question}\\n### Answer: {answer}' (trained as plain text)",
}
CUSTOM_FORMATS = ("columns", "template")  # never detected: the user chooses them and says how
FORMAT_KEYS = {
    "messages": {"messages"},
    "sharegpt": {"conversations"},
    "alpaca": {"instruction", "output"},
    "self-instruct": {"instruction", "instances"},
    "dolly": {"instruction", "context", "response"},
    "instruction-response": {"instruction", "response"},
    "question-answer": {"question", "answer"},
    "prompt-completion": {"prompt", "completion"},
    "text": {"text"},
}
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}


# A row or cell of an uploaded or Hub file, at most: far past any max_length (a 40 MB row once went whole to the
# page), and a bound on what one row costs the app.
MAX_ROW_CHARACTERS = 1_000_000
MAX_JSON_FILE_BYTES = 20 * 2**20  # a .json list is parsed whole; larger files must be .jsonl (read line by line)
MAX_ROW_GROUP_BYTES = 256 * 2**20  # a parquet row group is decoded at once: a tiny file may expand to gigabytes
# Text all the rows of one file may hold together, read into the app: a few KB of compressed parquet can decode to
# 40,000 rows of a million characters each.
MAX_FILE_CHARACTERS = 100_000_000
PARQUET_BATCH_ROWS = 64


def _too_long(name: str, where: str) -> ValueError:
    return ValueError(
        f"{name} {where} is longer than {MAX_ROW_CHARACTERS:,} characters: far more than a model trains on. "
        "Shorten or split it."
    )


class _Budget:
    """The characters left for the rest of one file's rows."""

    def __init__(self, name: str) -> None:
        self.name, self.left = name, MAX_FILE_CHARACTERS

    def spend(self, characters: int) -> None:
        self.left -= characters
        if self.left < 0:
            raise ValueError(
                f"{self.name} holds more than {MAX_FILE_CHARACTERS:,} characters of text in the rows read: far more "
                "than a run here trains on. Use fewer or shorter rows."
            )


def _checked(row, name: str, number: int, budget: _Budget | None = None):
    """A row whose text is not absurdly long (strings counted inside lists and dicts too), charged to `budget`."""
    size, stack = 0, [row]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, dict):
            stack += value.values()
        elif isinstance(value, (list, tuple)):
            stack += value
        if size > MAX_ROW_CHARACTERS:
            raise _too_long(name, f"row {number}")
    if budget is not None:
        budget.spend(size)
    return row


def read_rows(path: Path, max_rows: int | None = None) -> list[dict]:
    """Rows of a .jsonl, .json (a list), .csv or .parquet file; a bad JSON line is named by its number.

    max_rows: read at most this many rows and one more (so a caller can say the file holds more), streaming: a
    CSV or JSONL file is read line by line and a parquet file by batches, stopping there before the rest of the
    file is decoded. Each row is at most MAX_ROW_CHARACTERS of text."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Dataset file {path} does not exist: check the path, or pick a demo set such as demo:json-extract."
        )
    wanted = None if max_rows is None else max_rows + 1
    suffix = path.suffix.lower()  # data.JSONL as data.jsonl, as the Data tab accepts it
    if suffix == ".csv":
        return _csv_rows(path, wanted)
    if suffix == ".parquet":
        return _parquet_rows(path, wanted)
    if suffix == ".json":
        if path.stat().st_size > MAX_JSON_FILE_BYTES:
            raise ValueError(
                f"{path.name} is {path.stat().st_size / 2**20:,.0f} MB: a .json file is read whole, up to "
                f"{MAX_JSON_FILE_BYTES / 2**20:.0f} MB; save larger data as .jsonl (one row per line)."
            )
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path.name} is not valid JSON (line {error.lineno}: {error.msg}).") from None
        except RecursionError:
            raise ValueError(f"{path.name} nests its values too deeply to be rows of a dataset.") from None
        if isinstance(rows, dict) and len(rows) == 1 and isinstance(next(iter(rows.values())), list):
            rows = next(iter(rows.values()))  # {"train": [...]} or {"data": [...]}
        if not isinstance(rows, list):
            raise ValueError(f"{path.name} must hold a JSON list of rows, one object per example.")
        rows = rows[:wanted] if wanted else rows
        return [_checked(row, path.name, number) for number, row in enumerate(rows, start=1)]
    rows = []
    budget = _Budget(path.name)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(iter(lambda: f.readline(MAX_ROW_CHARACTERS + 1), ""), start=1):
            if len(line) > MAX_ROW_CHARACTERS:
                raise _too_long(path.name, f"line {number}")
            budget.spend(len(line))
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except RecursionError:
                raise ValueError(f"{path.name} line {number} nests its values too deeply to be a row.") from None
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path.name} line {number} is not valid JSON ({error.msg}): fix or remove that line."
                ) from None
            if wanted and len(rows) >= wanted:
                break
    return rows


def _csv_rows(path: Path, wanted: int | None) -> list[dict]:
    csv.field_size_limit(MAX_ROW_CHARACTERS)
    rows = []
    budget = _Budget(path.name)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        try:
            for row in reader:
                rows.append(_checked(dict(row), path.name, reader.line_num, budget))
                if wanted and len(rows) >= wanted:
                    break
        except csv.Error as error:
            raise ValueError(f"{path.name} line {reader.line_num}: {error}.") from None
    return rows


def _parquet_rows(path: Path, wanted: int | None) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        for index in range(file.metadata.num_row_groups):
            group = file.metadata.row_group(index)
            if group.total_byte_size > MAX_ROW_GROUP_BYTES:
                raise ValueError(
                    f"{path.name}: row group {index} holds {group.num_rows:,} rows taking "
                    f"{group.total_byte_size / 2**20:,.0f} MB once decoded (at most "
                    f"{MAX_ROW_GROUP_BYTES / 2**20:.0f} MB here): write it with smaller row groups."
                )
        rows: list[dict] = []
        budget = _Budget(path.name)
        for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            budget.spend(batch.nbytes)  # charged before its rows become Python objects
            for row in batch.to_pylist():
                rows.append(_checked(row, path.name, len(rows) + 1))
                if wanted and len(rows) >= wanted:
                    return rows
        return rows
    except ValueError:
        raise
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{path.name} is not a readable parquet file ({error}).") from None


def detect_format(rows: list[dict]) -> str:
    """The first format of FORMATS whose columns the first row has."""
    if not rows:
        raise ValueError("The dataset has no rows: add examples, or pick a demo set such as demo:json-extract.")
    first = rows[0]
    if not isinstance(first, dict):
        raise ValueError(
            'Each row must be a JSON object, e.g. {"messages": [{"role": "user", "content": "..."}, ...]}.'
        )
    for name, keys in FORMAT_KEYS.items():
        if keys <= set(first):
            return name
    raise ValueError(
        f"Unrecognised dataset columns {sorted(first)}: pick the prompt and answer columns yourself (format "
        "'columns' in the Data tab, or --data_format columns --prompt_column P --response_column R), write a "
        "template (format 'template'), or rename them to one of the known formats: "
        + "; ".join(f"{name} ({', '.join(sorted(keys))})" for name, keys in FORMAT_KEYS.items())
        + "."
    )


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def template_fields(template: str) -> list[str]:
    """The column names a template's {placeholders} name. Only bare names: a format width (`{text:x>50000000}`
    would build 50 MB rows), a conversion or an attribute or index lookup is refused."""
    if len(template) > MAX_TEMPLATE_CHARACTERS:
        raise ValueError(f"The template has {len(template):,} characters; at most {MAX_TEMPLATE_CHARACTERS:,}.")
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or spec or conversion or any(c in name for c in ".[]"):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec[:20]}" if spec else "") + "}"
            raise ValueError(
                f"{shown} is not a bare column name: placeholders are plain column names such as {{question}}, "
                "with no format, conversion, attribute or index."
            )
        names.append(name)
    if len(names) > MAX_TEMPLATE_FIELDS:  # each placeholder copies a whole cell into every row
        raise ValueError(f"The template has {len(names)} placeholders; at most {MAX_TEMPLATE_FIELDS}.")
    return names


def render_template(template: str, row: dict) -> str:
    """The template with each {column} replaced by the row's value as text: nothing else is interpreted."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            parts.append(_text(row.get(name)))
    return "".join(parts)


def check_custom(kind: str, columns: list[str], mapping: dict, template: str) -> None:
    """A column mapping or template must name columns the data really has."""
    if kind == "columns":
        for role in ("prompt", "response"):
            if not mapping.get(role):
                raise ValueError(f"Column mapping: choose the {role} column (the data has {', '.join(columns)}).")
        unknown = [mapping[r] for r in ("prompt", "response", "system") if mapping.get(r) and mapping[r] not in columns]
        if unknown:
            raise ValueError(
                f"Column mapping names {', '.join(unknown)}, which the data does not have; it has {', '.join(columns)}."
            )
    if kind == "template":
        if not template.strip():
            raise ValueError(
                "Custom template is empty: write one with {column} placeholders, e.g. "
                "'### Question: {question}\n### Answer: {answer}'."
            )
        try:
            names = template_fields(template)
        except ValueError as error:
            raise ValueError(f"The template is not valid ({error}): write placeholders as {{column}}.") from None
        unknown = [n for n in names if n not in columns]
        if unknown:
            raise ValueError(
                f"The template uses {', '.join('{' + n + '}' for n in unknown)}, which the data does not "
                f"have; its columns are {', '.join(columns)}."
            )


def _turns(row: dict, column: str) -> list[dict]:
    """A conversation column's turns, each an object; a plain string (or anything else) is named, not a crash."""
    turns = row[column]
    odd = next((turn for turn in turns if not isinstance(turn, dict)), None)
    if odd is not None:
        example = '{"role": "user", "content": "..."}' if column == "messages" else '{"from": "human", "value": "..."}'
        raise ValueError(
            f"Each item of a row's '{column}' must be an object such as {example}; this file has "
            f"{type(odd).__name__} items ({str(odd)[:60]!r}). Fix the file, or map its columns by hand."
        )
    return turns


def to_messages(row: dict, kind: str, mapping: dict | None = None, template: str = "") -> dict:
    """One row of any known format as {'messages': [...]} (or {'text': ...} for plain text)."""

    def pair(user: str, answer: str, system: str = "") -> dict:
        turns = [{"role": "system", "content": system}] if system else []
        return {"messages": turns + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}

    if kind == "columns":
        mapping = mapping or {}
        return pair(
            _text(row.get(mapping["prompt"])),
            _text(row.get(mapping["response"])),
            _text(row.get(mapping["system"])) if mapping.get("system") else "",
        )
    if kind == "template":
        template_fields(template)  # bare names only, whoever calls
        return {"text": render_template(template, row).strip()}

    if kind == "messages":
        return {
            "messages": [{"role": t.get("role"), "content": t.get("content")} for t in _turns(row, "messages")]
            if isinstance(row["messages"], list)
            else row["messages"]
        }
    if kind == "sharegpt":
        turns = _turns(row, "conversations") if isinstance(row["conversations"], list) else []
        return {
            "messages": [
                {"role": SHAREGPT_ROLES.get(str(t.get("from", "")).lower(), t.get("from")), "content": t.get("value")}
                for t in turns
            ]
        }
    if kind == "alpaca":
        user = _text(row["instruction"]) + (f"\n\n{_text(row.get('input'))}" if _text(row.get("input")) else "")
        return pair(user, _text(row["output"]), _text(row.get("system")))
    if kind == "dolly":
        user = _text(row["instruction"]) + (f"\n\n{_text(row['context'])}" if _text(row["context"]) else "")
        return pair(user, _text(row["response"]))
    if kind == "instruction-response":
        return pair(_text(row["instruction"]), _text(row["response"]))
    if kind == "question-answer":
        context = _text(row.get("context"))
        return pair((f"{context}\n\n" if context else "") + _text(row["question"]), _text(row["answer"]))
    if kind == "prompt-completion":
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, list):  # conversational prompt/completion
            return {
                "messages": list(prompt)
                + (
                    list(completion)
                    if isinstance(completion, list)
                    else [{"role": "assistant", "content": _text(completion)}]
                )
            }
        return pair(_text(prompt), _text(completion))
    return {"text": _text(row["text"])}


def is_empty(row: dict) -> bool:
    if "text" in row:
        return not row["text"]
    messages = row.get("messages")
    return (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(t, dict) and _text(t.get("content")) for t in messages)
    )


def normalise(
    rows: list[dict], kind: str, mapping: dict | None = None, template: str = ""
) -> tuple[list[dict], int, int]:
    """Rows converted to messages/text, with empty ones dropped; (rows, dropped empty, duplicates)."""
    if kind == "self-instruct":  # one Alpaca example per instance of each task
        rows = [
            {
                "instruction": row.get("instruction"),
                "input": instance.get("input", ""),
                "output": instance.get("output", ""),
            }
            for row in rows
            if isinstance(row, dict)
            for instance in row.get("instances") or []
            if isinstance(instance, dict)
        ]
        kind = "alpaca"
    converted = [to_messages(row, kind, mapping, template) for row in rows if isinstance(row, dict)]
    kept = [row for row in converted if not is_empty(row)]
    dropped = len(rows) - len(kept)
    duplicates = len(kept) - len({json.dumps(row, sort_keys=True) for row in kept})
    return kept, dropped, duplicates


def check_messages(rows: list[dict]) -> None:
    for number, row in enumerate(rows, start=1):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"Row {number}: 'messages' must be a non-empty list of {{role, content}} turns.")
        for turn in messages:
            if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
                raise ValueError(
                    f"Row {number}: every turn needs a role ({', '.join(ROLES)}) and a text content, got {turn!r}."
                )
        if messages[-1]["role"] != "assistant":
            raise ValueError(
                f"Row {number}: the last turn must be the assistant's answer (it is what the model learns)."
            )
