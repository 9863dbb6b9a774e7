"""Datasets: where rows come from, what shape they have, and what TRL is given.

A package of single-purpose modules, each importing only those listed before it:

- `formats`  the formats a user brings (FORMATS), detecting them, reading a local file, one row -> messages,
             normalising (empty rows dropped, duplicates counted), checking conversations
- `hub`      Hub datasets: telling an id from a path, the layout from the file list, subset/split/revision
             checks, the commit a revision points at, downloading rows at it, the range-reading preview
- `sources`  DatasetSplits, the demo choices, load_dataset_source / load_for_run: a demo set, a file or a Hub
             dataset, normalised and split into train and validation (a Hub one pinned to its commit)
- `rows`     what TRL is given: to_trl_rows, trains_every_answer, trainer_rows; a row's prompt and answer
- `view`     what the model sees, for people: the preview table, token loss labels, length statistics

Reading is plain Python, so the UI can preview without importing `datasets` or torch; `huggingface_hub` and
pyarrow are imported inside the functions that use them. Nothing here knows about training loops or Gradio.
This module re-exports the names the rest of the project imports from `sft_space.data`.
Imports models (the bundled demo sets' folder), host (the row cap) and the declarations; never anything above.
"""

from .formats import (
    CUSTOM_FORMATS,
    FORMAT_KEYS,
    FORMATS,
    ROLES,
    SHAREGPT_ROLES,
    UPLOAD_SUFFIXES,
    check_custom,
    check_messages,
    detect_format,
    is_empty,
    normalise,
    read_rows,
    template_fields,
    to_messages,
)
from .hub import (
    PREVIEW_BYTES,
    PREVIEW_ROWS,
    SPLIT_WORDS,
    HubChoice,
    HubFile,
    hub_choice,
    hub_layout,
    hub_splits,
    is_hub_id,
    load_hub_rows,
    preview_hub_rows,
    split_of,
)
from .rows import GENERATION_MARKER, prompt_messages, reference_answer, to_trl_rows, trainer_rows, trains_every_answer
from .sources import DEFAULT_VALIDATION_SHARE, DatasetSplits, demo_choices, load_dataset_source, load_for_run
from .view import PREVIEW_HEADERS, length_stats, loss_view, preview_table, token_labels

__all__ = [
    "CUSTOM_FORMATS",
    "DEFAULT_VALIDATION_SHARE",
    "FORMATS",
    "FORMAT_KEYS",
    "GENERATION_MARKER",
    "PREVIEW_BYTES",
    "PREVIEW_HEADERS",
    "PREVIEW_ROWS",
    "ROLES",
    "SHAREGPT_ROLES",
    "SPLIT_WORDS",
    "UPLOAD_SUFFIXES",
    "DatasetSplits",
    "HubChoice",
    "HubFile",
    "check_custom",
    "check_messages",
    "demo_choices",
    "detect_format",
    "hub_choice",
    "hub_layout",
    "hub_splits",
    "is_empty",
    "is_hub_id",
    "length_stats",
    "load_dataset_source",
    "load_for_run",
    "load_hub_rows",
    "loss_view",
    "normalise",
    "preview_hub_rows",
    "preview_table",
    "prompt_messages",
    "read_rows",
    "reference_answer",
    "split_of",
    "template_fields",
    "to_messages",
    "to_trl_rows",
    "token_labels",
    "trainer_rows",
    "trains_every_answer",
]
