"""Where a run's rows come from, and how they are split: a demo set, a local file or a Hub dataset.

Owns DatasetSplits (the rows to train and validate on, their format, notes, and the Hub commit they were read
at), the demo choices, and load_dataset_source / load_for_run: read the source (`demo:NAME` from `bundled`, a
local .jsonl/.json/.csv/.parquet file, or a Hub dataset through `hub`), detect or apply the format and normalise
every row (`formats`), and split off validation rows (the data's own validation/test split, else a seeded
share; a demo set's validation is carved from its training rows and its test split kept apart for the final
score). It knows nothing about tokenizers, TRL's row shapes (`rows`) or what the model sees (`view`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..host.limits import current as current_limits
from ..models.bundled import DEMO_DATASETS, demo_split_path
from .formats import (
    FORMAT_KEYS,
    FORMATS,
    UPLOAD_SUFFIXES,
    check_custom,
    check_messages,
    detect_format,
    normalise,
    read_rows,
)
from .hub import is_hub_id, load_hub_rows, preview_hub_rows

DEFAULT_VALIDATION_SHARE = 0.1  # the usual hold-out when a dataset has no validation split of its own


# What rows unlike the training rows are called (in full, in a table column's header): a demo set's hand-written
# check requests, or a Hub dataset's check/challenge split.
HAND_WRITTEN = ("hand-written check requests (each written on its own, not by the set's generator)", "hand-written")
CHECK_SPLIT = ("check split rows (written unlike its training rows)", "check split")


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
    revision: str | None = None  # the commit sha a Hub dataset's rows were read at; None for demo sets and files
    # A demo set's own test split: never trained on, never used to choose settings (validation is carved from the
    # training rows instead), so a final score on it is honest. Empty for other data.
    test: list[dict] = field(default_factory=list)
    # Rows written unlike the training rows (json-extract's hand-written check requests, not made by the generator
    # that made its training and test rows): how the tuned model does on what a user will type, which a held-out
    # split from the same source overstates. Scored beside the held-out rows by Evaluate; empty for most data.
    unlike: list[dict] = field(default_factory=list)
    unlike_name: str = HAND_WRITTEN[0]
    unlike_label: str = HAND_WRITTEN[1]  # a table column's word for them

    def held_out(self) -> tuple[list[dict], str]:
        """The rows a finished run is scored on, and what to call them: the test split when there is one."""
        if self.test:
            return self.test, "test rows (never trained on nor used to choose settings)"
        return self.validation, "validation rows"

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
    max_rows: int | None = None,
) -> DatasetSplits:
    """Load `demo:NAME`, a Hub dataset `owner/name` or a local file, in any known format.

    The set's own validation (or test) split is used when it has one; otherwise a seeded share is held out.
    preview=True reads only the first rows of a Hub dataset (by range requests), for a quick look.
    A Hub dataset is read at the commit `revision` (a branch, tag or commit; empty = main) points at now, and
    that commit's sha is the result's `revision`: pass it back to read the same rows later.
    """
    source = source.strip()
    notes = []
    own_split = True
    commit = None
    test: list[dict] = []
    unlike: list[dict] = []
    unlike_kind = HAND_WRITTEN
    if source.startswith("demo:"):
        # Validation comes from the training rows (below), so choosing settings on it never sees the test split.
        name = source.split(":", 1)[1]
        train, validation = read_rows(demo_split_path(name, "train")), []
        test = read_rows(demo_split_path(name, "test"))
        unlike_path = demo_split_path(name, "check")
        unlike = read_rows(unlike_path) if unlike_path.exists() else []
        own_split = False
    elif is_hub_id(source) and preview:
        train, name, total, commit = preview_hub_rows(source, hub_config, revision, hub_split)
        validation = []
        notes.append(
            f"preview: the first {len(train)} rows of {name}"
            + (f" ({total} rows in it)" if total else "")
            + ", read without downloading the dataset"
        )
    elif is_hub_id(source):
        train, validation, notes, commit, unlike = load_hub_rows(source, hub_config, revision, hub_split, max_rows)
        unlike_kind = CHECK_SPLIT
        own_split = validation is not None
        validation = validation or []
    else:
        own_split = False
        path = Path(source).expanduser()
        if path.suffix.lower() not in UPLOAD_SUFFIXES:
            raise ValueError(
                f"{source!r} is not a demo set or a {'/'.join(UPLOAD_SUFFIXES)} file: use demo:json-extract, "
                "demo:pirate-chat or the path of your own file."
            )
        train, validation = read_rows(path, max_rows), []
    if max_rows and len(train) > max_rows:  # read_rows stopped one row past the limit: the file holds more
        notes.append(f"the first {max_rows:,} rows read (this Space's limit per dataset)")
        train = train[:max_rows]
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
    test = normalise(test, kind, mapping, template)[0] if test else []
    unlike = normalise(unlike, kind, mapping, template)[0] if unlike else []
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
        if test:
            notes.append(test_rows_note(len(test)))
        if unlike:
            notes.append(unlike_rows_note(len(unlike), unlike_kind[0]))
    if dropped + dropped_v:
        notes.append(f"{dropped + dropped_v} empty rows dropped")
    if duplicates:
        notes.append(f"{duplicates} duplicate rows")
    trained_as = "text" if kind in ("text", "template") else "messages"
    if trained_as == "messages":
        check_messages(train)
        check_messages(validation)
        check_messages(test)
        check_messages(unlike)
    return DatasetSplits(
        name=source,
        train=train,
        validation=validation,
        format=trained_as,
        notes=notes,
        source_format=kind,
        columns=columns,
        preview=preview and is_hub_id(source),
        revision=commit,
        test=test,
        unlike=unlike,
        unlike_name=unlike_kind[0],
        unlike_label=unlike_kind[1],
    )


def test_rows_note(count: int) -> str:
    """The note a set with its own test rows carries (status, card); the Data tab says the count in its own line."""
    return f"the set's {count} test rows are kept for the final score (Evaluate)"


def unlike_rows_note(count: int, name: str = HAND_WRITTEN[0]) -> str:
    return f"its {count} {name.split(' (')[0]} (unlike the training rows) are scored beside them (Evaluate)"


def load_for_run(config, preview: bool = False, revision: str | None = None) -> DatasetSplits:
    """The dataset a RunConfig names, read the way its run reads it (same seed, same format choice).

    `revision` overrides config.dataset_revision: readers of a finished run pass the commit it trained on
    (status.json's `data_revision`), so they read its rows even after the dataset's branch moved on."""
    splits = load_dataset_source(
        config.dataset,
        validation_share=config.validation_share,
        seed=config.seed,
        data_format=config.data_format,
        hub_config=config.dataset_config,
        revision=revision or config.dataset_revision,
        hub_split=config.dataset_split,
        template=config.text_template,
        mapping={"prompt": config.prompt_column, "response": config.response_column, "system": config.system_column},
        preview=preview,
        max_rows=current_limits().dataset_rows and current_limits().dataset_rows * 2,  # room for validation rows
    )
    cap = current_limits().dataset_rows
    if cap and len(splits.train) > cap and not splits.preview:
        splits.notes.append(f"the first {cap:,} of {len(splits.train):,} training rows (this Space's limit per run)")
        splits.train = splits.train[:cap]
    return splits
