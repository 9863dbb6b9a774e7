"""Datasets: where rows come from, what shape they have, and what TRL is given.

Owns loading a dataset source (a bundled demo set `demo:NAME`, or a local .jsonl,
.json, .csv or .parquet file), detecting its format among the common ones
(FORMATS) and turning every row into a conversation, splitting off a validation
set, converting rows to TRL's formats, the small previews the UI shows, and what
the model sees (token-level loss masks and length statistics, given a
tokenizer). Reading is plain Python, so the UI can preview without importing
`datasets` or torch. It knows nothing about training loops or Gradio.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from . import HUB_ID, HUB_TIMEOUT_SECONDS, home, hub_endpoint, hub_offline, network_error
from .bundled import DEMO_DATASETS, demo_split_path

DEFAULT_VALIDATION_SHARE = 0.1  # the usual hold-out when a dataset has no validation split of its own
ROLES = ("system", "user", "assistant")


@dataclass
class DatasetSplits:
    name: str
    train: list[dict]
    validation: list[dict]
    format: str  # what training sees: "messages" or "text"
    notes: list[str] = field(default_factory=list)
    source_format: str = "messages"  # what the file held (a key of FORMATS)
    columns: list[str] = field(default_factory=list)  # the file's own column names
    preview: bool = False  # only the first rows of a Hub dataset, not split

    def format_label(self) -> str:
        return self.format if self.source_format == self.format else f"{self.source_format} -> {self.format}"

    def summary(self) -> str:
        text = (
            f"{self.name}: {len(self.train)} train rows, {len(self.validation)} validation rows ({self.format_label()})"
        )
        return text + ("; " + "; ".join(self.notes) if self.notes else "")


def demo_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for a dropdown of the bundled demo sets."""
    return [(f"demo:{name} - {about}", f"demo:{name}") for name, about in DEMO_DATASETS.items()]


UPLOAD_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

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


def read_rows(path: Path) -> list[dict]:
    """Rows of a .jsonl, .json (a list), .csv or .parquet file; a bad JSON line is named by its number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Dataset file {path} does not exist: check the path, or pick a demo set such as demo:json-extract."
        )
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return [dict(row) for row in csv.DictReader(f)]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise ValueError(f"{path.name} is not a readable parquet file ({error}).") from None
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path.name} is not valid JSON (line {error.lineno}: {error.msg}).") from None
        if isinstance(rows, dict) and len(rows) == 1 and isinstance(next(iter(rows.values())), list):
            rows = next(iter(rows.values()))  # {"train": [...]} or {"data": [...]}
        if not isinstance(rows, list):
            raise ValueError(f"{path.name} must hold a JSON list of rows, one object per example.")
        return rows
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path.name} line {number} is not valid JSON ({error.msg}): fix or remove that line."
            ) from None
    return rows


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
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


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
        return {"text": template.format_map({k: _text(v) for k, v in row.items()}).strip()}

    if kind == "messages":
        return {
            "messages": [{"role": t.get("role"), "content": t.get("content")} for t in row["messages"]]
            if isinstance(row["messages"], list)
            else row["messages"]
        }
    if kind == "sharegpt":
        turns = row["conversations"] if isinstance(row["conversations"], list) else []
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


# ------------------------------------------------------------ the Hub
SPLIT_WORDS = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test", "eval")}


def is_hub_id(source: str) -> bool:
    return (
        bool(HUB_ID.match(source))
        and not Path(source).expanduser().exists()
        and Path(source).suffix not in UPLOAD_SUFFIXES
    )


def split_of(path: str) -> str | None:
    stem = Path(path).name.lower()
    for split, words in SPLIT_WORDS.items():
        if any(re.search(rf"(^|[^a-z]){word}([^a-z]|$)", stem) for word in words):
            return split
    return None


def hub_layout(repo_id: str, revision: str | None = None) -> dict[str, dict[str, list[str]]]:
    """{config: {split: [data files]}} of a Hub dataset, from its file list only (nothing is downloaded)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if not HUB_ID.match(repo_id):
        raise ValueError(
            f"{repo_id!r} is not a Hub dataset id: it looks like owner/name, e.g. HuggingFaceH4/no_robots."
        )
    if hub_offline():
        raise ValueError(
            "The Hugging Face Hub is switched off here (HF_HUB_OFFLINE=1): use a demo set or upload a file."
        )
    try:
        info = HfApi(endpoint=hub_endpoint()).dataset_info(
            repo_id, revision=revision or None, timeout=HUB_TIMEOUT_SECONDS
        )
    except GatedRepoError:
        raise ValueError(
            f"{repo_id} is gated: accept its conditions at {hub_endpoint()}/datasets/{repo_id}, then sign in."
        ) from None
    except RevisionNotFoundError:
        raise ValueError(f"{repo_id} has no revision {revision!r}: use a branch, tag or commit that exists.") from None
    except RepositoryNotFoundError:
        raise ValueError(
            f"Dataset {repo_id} was not found, or it is private or gated and you are not signed in: "
            "check the id, or sign in with an account that can read it."
        ) from None
    except Exception as error:  # connection refused, DNS failure, timeout: all mean the Hub is out of reach
        if network_error(error):
            raise ValueError(
                f"The Hugging Face Hub at {hub_endpoint()} cannot be reached ({type(error).__name__}): "
                "check the network, or use a demo set or an uploaded file."
            ) from None
        raise
    if info.gated:
        from huggingface_hub import get_token

        if not get_token():
            raise ValueError(
                f"{repo_id} is gated: accept its conditions at {hub_endpoint()}/datasets/{repo_id}, then sign in."
            )
    files = [s.rfilename for s in info.siblings or []]
    data = [f for f in files if Path(f).suffix in UPLOAD_SUFFIXES and not Path(f).name.startswith(".")]
    if not data:
        if any(f.endswith(".py") for f in files):
            raise ValueError(
                f"{repo_id} is built by a loading script, which could run any code and is refused: "
                "pick a dataset stored as data files (parquet, jsonl, csv, json)."
            )
        raise ValueError(f"{repo_id} has no data files (.jsonl, .json, .csv, .parquet) to read.")
    layout: dict[str, dict[str, list[str]]] = {}
    for path in sorted(data):
        parts = Path(path).parts
        config = parts[0] if len(parts) > 1 and parts[0] not in ("data",) and split_of(parts[0]) is None else "default"
        split = split_of(path) or "train"
        layout.setdefault(config, {}).setdefault(split, []).append(path)
    return layout


def hub_splits(
    repo_id: str, config: str = "", revision: str = "", split: str = ""
) -> tuple[str, str, dict[str, list[str]]]:
    """(subset, training split, {split: files}) of a Hub dataset, with the user's choices checked against it."""
    layout = hub_layout(repo_id, revision or None)
    config = config or ("default" if "default" in layout else sorted(layout)[0])
    if config not in layout:
        raise ValueError(f"{repo_id} has no subset {config!r}; it has {', '.join(sorted(layout))}.")
    splits = layout[config]
    split = split or ("train" if "train" in splits else sorted(splits)[0])
    if split not in splits:
        raise ValueError(f"{repo_id} ({config}) has no {split!r} split; it has {', '.join(sorted(splits))}.")
    return config, split, splits


def load_hub_rows(
    repo_id: str, config: str = "", revision: str = "", split: str = ""
) -> tuple[list[dict], list[dict] | None, list[str]]:
    """(training rows, the dataset's own validation rows or None, notes) of a Hub dataset's data files."""
    from huggingface_hub import hf_hub_download

    config, split, splits = hub_splits(repo_id, config, revision, split)

    def rows_of(name: str) -> list[dict]:
        rows = []
        for path in splits[name]:
            local = hf_hub_download(
                repo_id,
                path,
                repo_type="dataset",
                revision=revision or None,
                endpoint=hub_endpoint(),
                cache_dir=str(home() / "hub"),
            )
            rows += read_rows(Path(local))
        return rows

    own = next((s for s in ("validation", "test") if s in splits and s != split), None)
    notes = [f"{repo_id} ({config}, {split}) from {hub_endpoint()}"]
    if own:
        notes.append(f"validation = the dataset's own {own} split")
    return rows_of(split), rows_of(own) if own else None, notes


PREVIEW_ROWS = 50  # rows a Hub preview reads
PREVIEW_BYTES = 512 * 1024  # bytes of a jsonl/csv file a Hub preview reads


class HubFile(io.RawIOBase):
    """A file on the Hub read by HTTP range requests: a preview reads a few KB, not the dataset."""

    def __init__(self, url: str) -> None:
        from huggingface_hub import get_session
        from huggingface_hub.utils import build_hf_headers

        self.url, self.session, self.headers, self.position = url, get_session(), build_hf_headers(), 0
        head = self.session.head(url, headers=self.headers, follow_redirects=True, timeout=HUB_TIMEOUT_SECONDS)
        head.raise_for_status()
        self.size = int(head.headers["Content-Length"])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: offset, 1: self.position + offset, 2: self.size + offset}[whence]
        return self.position

    def readinto(self, buffer) -> int:
        if self.position >= self.size or len(buffer) == 0:
            return 0
        last = min(self.position + len(buffer), self.size) - 1
        response = self.session.get(
            self.url,
            headers={**self.headers, "Range": f"bytes={self.position}-{last}"},
            follow_redirects=True,
            timeout=HUB_TIMEOUT_SECONDS,
        )
        response.raise_for_status()
        data = response.content[: len(buffer)]
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def preview_hub_rows(
    repo_id: str, config: str = "", revision: str = "", split: str = "", count: int = PREVIEW_ROWS
) -> tuple[list[dict], str, int | None]:
    """(first rows of the training split, the file they came from, rows in that file when its metadata says)."""
    from huggingface_hub import hf_hub_url

    config, split, splits = hub_splits(repo_id, config, revision, split)
    name = splits[split][0]
    url = hf_hub_url(repo_id, name, repo_type="dataset", revision=revision or None, endpoint=hub_endpoint())
    remote = HubFile(url)
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(io.BufferedReader(remote, buffer_size=64 * 1024))
        batch = next(parquet.iter_batches(batch_size=count, row_groups=[0]), None) if parquet.num_row_groups else None
        return (batch.to_pylist() if batch is not None else []), name, parquet.metadata.num_rows
    head = io.BufferedReader(remote, buffer_size=PREVIEW_BYTES).read(PREVIEW_BYTES).decode("utf-8", errors="ignore")
    lines = head.splitlines()
    if len(head.encode()) >= PREVIEW_BYTES and lines:
        lines = lines[:-1]  # the last line may be cut in the middle
    if name.endswith(".csv"):
        return [dict(r) for r in csv.DictReader(lines)][:count], name, None
    if name.endswith(".json"):
        raise ValueError(
            f"{name} is one JSON document; it can only be read whole: train on it, or preview a jsonl file."
        )
    rows = [json.loads(line) for line in lines if line.strip()][:count]
    return rows, name, None


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


def load_dataset_source(
    source: str,
    validation_share: float = DEFAULT_VALIDATION_SHARE,
    seed: int = 42,
    data_format: str = "auto",
    hub_config: str = "",
    revision: str = "",
    hub_split: str = "",
    mapping: dict | None = None,
    template: str = "",
    preview: bool = False,
) -> DatasetSplits:
    """Load `demo:NAME`, a Hub dataset `owner/name` or a local file, in any known format.

    The set's own validation (or test) split is used when it has one; otherwise a seeded share is held out.
    preview=True reads only the first rows of a Hub dataset (by range requests), for a quick look.
    """
    source = source.strip()
    notes = []
    own_split = True
    if source.startswith("demo:"):
        name = source.split(":", 1)[1]
        train = read_rows(demo_split_path(name, "train"))
        validation = read_rows(demo_split_path(name, "test"))
        notes.append("validation = the set's own test split")
    elif is_hub_id(source) and preview:
        train, name, total = preview_hub_rows(source, hub_config, revision, hub_split)
        validation = []
        notes.append(
            f"preview: the first {len(train)} rows of {name}"
            + (f" ({total} rows in it)" if total else "")
            + ", read without downloading the dataset"
        )
    elif is_hub_id(source):
        train, validation, notes = load_hub_rows(source, hub_config, revision, hub_split)
        own_split = validation is not None
        validation = validation or []
    else:
        own_split = False
        path = Path(source).expanduser()
        if path.suffix not in UPLOAD_SUFFIXES:
            raise ValueError(
                f"{source!r} is not a demo set or a {'/'.join(UPLOAD_SUFFIXES)} file: use demo:json-extract, "
                "demo:pirate-chat or the path of your own file."
            )
        train, validation = read_rows(path), []
    if data_format != "auto" and data_format not in FORMATS:
        raise ValueError(f"Unknown format {data_format!r}: choose auto or one of {', '.join(FORMATS)}.")
    kind = detect_format(train) if data_format == "auto" else data_format
    if not train or not isinstance(train[0], dict):
        raise ValueError("The dataset has no rows: add examples, or pick a demo set such as demo:json-extract.")
    columns = sorted(train[0])
    missing = FORMAT_KEYS.get(kind, set()) - set(columns)
    if missing:
        raise ValueError(
            f"The {kind} format needs the column(s) {', '.join(sorted(missing))}; this data has "
            f"{', '.join(columns)}. Pick another format, auto, or map your columns."
        )
    mapping = mapping or {}
    check_custom(kind, columns, mapping, template)
    train, dropped, duplicates = normalise(train, kind, mapping, template)
    validation, dropped_v, _ = normalise(validation, kind, mapping, template)
    if not own_split and not (preview and is_hub_id(source)):
        if len(train) < 2:
            raise ValueError(
                f"{Path(source).name} has {len(train)} usable rows; at least 2 are needed "
                "(one to train, one to validate)."
            )
        random.Random(seed).shuffle(train)
        held = max(1, round(len(train) * validation_share))
        train, validation = train[held:], train[:held]
        notes.append(f"validation = a seeded {validation_share:.0%} hold-out")
    if dropped + dropped_v:
        notes.append(f"{dropped + dropped_v} empty rows dropped")
    if duplicates:
        notes.append(f"{duplicates} duplicate rows")
    trained_as = "text" if kind in ("text", "template") else "messages"
    if trained_as == "messages":
        check_messages(train)
        check_messages(validation)
    return DatasetSplits(
        name=source,
        train=train,
        validation=validation,
        format=trained_as,
        notes=notes,
        source_format=kind,
        columns=columns,
        preview=preview and is_hub_id(source),
    )


def load_for_run(config, preview: bool = False) -> DatasetSplits:
    """The dataset a RunConfig names, read the way its run reads it (same seed, same format choice)."""
    return load_dataset_source(
        config.dataset,
        validation_share=config.validation_share,
        seed=config.seed,
        data_format=config.data_format,
        hub_config=config.dataset_config,
        revision=config.dataset_revision,
        hub_split=config.dataset_split,
        template=config.text_template,
        mapping={"prompt": config.prompt_column, "response": config.response_column, "system": config.system_column},
        preview=preview,
    )


GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


def trains_every_answer(tokenizer) -> bool:
    """Whether the chat template marks assistant turns ({% generation %}), so every answer of a multi-turn
    conversation can carry the loss (TRL's assistant_only_loss); without markers only the last answer can."""
    return bool(GENERATION_MARKER.search(tokenizer.chat_template or ""))


def to_trl_rows(rows: list[dict], answers_only: bool, every_answer: bool = False) -> list[dict]:
    """Rows in the TRL format that matches the loss choice.

    With answers_only, a conversation becomes conversational prompt/completion
    (every turn before the last answer is the prompt), so TRL's completion-only
    loss trains the final answer and its end-of-turn token, for any chat
    template, with or without generation markers. With every_answer (a template
    with generation markers), conversations stay whole and TRL's
    assistant_only_loss trains every assistant turn.
    """
    if not rows or "messages" not in rows[0]:
        return rows
    if not answers_only or every_answer:
        return [{"messages": row["messages"]} for row in rows]
    return [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in rows]


def prompt_messages(row: dict) -> list[dict]:
    """The conversation up to (not including) the final answer: what a model is asked."""
    if "messages" in row:
        return row["messages"][:-1]
    if "prompt" in row:
        prompt = row["prompt"]
        return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    raise ValueError("This row has no prompt to ask a model.")


def reference_answer(row: dict) -> str:
    if "messages" in row:
        return row["messages"][-1]["content"]
    completion = row.get("completion", "")
    return completion[-1]["content"] if isinstance(completion, list) else str(completion)


def preview_table(rows: list[dict], count: int = 5) -> list[list[str]]:
    """[system, user, assistant, turns] for the first rows, for a small table."""
    table = []
    for row in rows[:count]:
        messages = row.get("messages") or [
            {"role": "user", "content": str(row.get("prompt", row.get("text", "")))},
            {"role": "assistant", "content": str(row.get("completion", ""))},
        ]
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        table.append([system, user, messages[-1]["content"], str(sum(m["role"] == "user" for m in messages))])
    return table


PREVIEW_HEADERS = ["system", "first user message", "final answer", "user turns"]


# ------------------------------------------------- what the model sees
def token_labels(tokenizer, row: dict, answers_only: bool) -> tuple[list[int], list[bool]]:
    """The token ids of one row after the chat template, and which of them carry loss (as TRL computes it)."""
    if "text" in row:
        ids = tokenizer(row["text"])["input_ids"]
        return ids, [True] * len(ids)
    if answers_only and trains_every_answer(tokenizer):
        encoded = tokenizer.apply_chat_template(
            row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return encoded["input_ids"], [bool(m) for m in encoded["assistant_masks"]]
    full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
    if not answers_only:
        return full, [True] * len(full)
    prompt = tokenizer.apply_chat_template(
        prompt_messages(row), tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    start = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full)))
    return full, [i >= start for i in range(len(full))]


def loss_view(tokenizer, row: dict, answers_only: bool, max_length: int) -> list[tuple[str, str | None]]:
    """(text, label) pieces for a highlighted view: 'trained', 'cut off' (past max_length) or None (context)."""
    ids, trained = token_labels(tokenizer, row, answers_only)
    pieces: list[tuple[str, str | None]] = []
    for index, (token, loss) in enumerate(zip(ids, trained)):
        label = "cut off" if index >= max_length else ("trained" if loss else None)
        text = tokenizer.decode([token])
        if pieces and pieces[-1][1] == label:
            pieces[-1] = (pieces[-1][0] + text, label)
        else:
            pieces.append((text, label))
    return pieces


def length_stats(
    tokenizer, rows: list[dict], answers_only: bool, max_length: int, batch_size: int, limit: int = 5000
) -> dict:
    """Token lengths of the rows (a seeded sample of `limit` when there are more), what max_length cuts,
    and how much padding or packing wastes."""
    lengths, cut, lost = [], 0, 0
    sample = random.Random(0).sample(rows, limit) if len(rows) > limit else rows  # seeded: the same view every time
    for row in sample:
        ids, trained = token_labels(tokenizer, row, answers_only)
        lengths.append(len(ids))
        if len(ids) > max_length:
            cut += 1
            if not any(trained[:max_length]):
                lost += 1  # the answer starts after the cut: this row teaches nothing
    kept = [min(n, max_length) for n in lengths]
    n = max(len(lengths), 1)
    padded = sum(max(kept[i : i + batch_size]) * len(kept[i : i + batch_size]) for i in range(0, len(kept), batch_size))
    blocks = -(-sum(kept) // max_length)
    return {
        "rows": len(lengths),
        "total_rows": len(rows),
        "lengths": lengths,
        "max_length": max_length,
        "truncated_share": cut / n,
        "answer_lost_share": lost / n,
        "padding_efficiency": sum(kept) / max(padded, 1),  # real tokens / tokens computed, without packing
        "packing_efficiency": sum(kept) / max(blocks * max_length, 1),  # with packing into max_length blocks
        "longest": max(lengths, default=0),
        "median": sorted(lengths)[len(lengths) // 2] if lengths else 0,
    }
