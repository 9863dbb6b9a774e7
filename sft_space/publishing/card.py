"""The model card of a pushed run (README.md with its Hub metadata) and the loss-curve image it shows.

Owns what the card says, section by section: the metadata block, what was trained on what data, the training
settings and losses, the evaluation and prompting comparison, the probe replies, intended use, a usage snippet (with
the GGUF files and their Modelfile when a push carries them) and how to reproduce the run. Everything comes from the
run directory alone. It does not know how or where a card is pushed (`publish`), and knows nothing about tokens or
Gradio.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from ..charts import LOSS_CHART
from ..config import RunConfig
from ..rundir import (
    has_adapter,
    read_config,
    read_eval,
    read_gguf_report,
    read_metrics,
    read_probes,
    read_status,
    run_path,
)


# ------------------------------------------------------------------ what the run points at
def base_model_id(config: RunConfig) -> str | None:
    from ..models import hub_model_id

    return hub_model_id(config.model)


def dataset_id(config: RunConfig) -> str | None:
    from ..data import is_hub_id

    return config.dataset if is_hub_id(config.dataset) else None


def _dataset_text(config: RunConfig, data: str | None) -> str:
    """The dataset as the card names it: a Hub link, the demo set and what it is, or the path as given."""
    if config.dataset.startswith("demo:"):
        from ..models.bundled import DEMO_DATASETS

        name = config.dataset[len("demo:") :]
        return f"the SFT Space demo set `{name}` ({DEMO_DATASETS.get(name, 'bundled with the app').rstrip('.')})"
    return f"[{data}](https://huggingface.co/datasets/{data})" if data else f"`{config.dataset}`"


# ------------------------------------------------------------------ the loss curve
def loss_curve_png(metrics: list[dict], width: int = 720, height: int = 360) -> bytes | None:
    """Train and validation loss against step as a PNG (matplotlib, Agg: no display, no pyplot state);
    None when the run logged no loss yet."""
    series = {
        key: [(m["step"], float(m[key])) for m in metrics if isinstance(m.get(key), (int, float))]
        for key in LOSS_CHART.metrics
    }
    losses = [v for values in series.values() for _, v in values]
    if not losses:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for key, values in series.items():
        if values:
            axes.plot(
                [s for s, _ in values],
                [v for _, v in values],
                marker="o",
                markersize=3,
                linewidth=2,
                color=LOSS_CHART.colours[LOSS_CHART.metrics[key]],
                label=f"{LOSS_CHART.metrics[key]} loss",
            )
    axes.set_ylim(bottom=min(0.0, min(losses)), top=max(losses) * 1.05 or 1.0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(loc="best", frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# ------------------------------------------------------------------ small helpers
def _yaml_list(key: str, values: list[str]) -> list[str]:
    return [f"{key}:"] + [f"- {json.dumps(v)}" for v in values] if values else []


def _last(metrics: list[dict], key: str) -> float | None:
    values = [m[key] for m in metrics if isinstance(m.get(key), (int, float))]
    return values[-1] if values else None


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|") or "(empty)"


def _table_rows(rows) -> list[str]:
    return [f"| {' | '.join(row)} |" for row in rows]


# ------------------------------------------------------------------ the card's sections
def _metadata(
    config: RunConfig, status: dict, base: str | None, data: str | None, merged: bool, gguf: bool = False
) -> list[str]:
    """The YAML block the Hub reads: base model, library, license, datasets, tags (gguf when the files are there)."""
    lines = ["---"]
    lines += [f"base_model: {base}"] if base else []
    lines += [f"library_name: {'transformers' if merged else 'peft'}", "pipeline_tag: text-generation"]
    lines += [f"license: {status['base_license']}"] if status.get("base_license") else []
    lines += _yaml_list("datasets", [data] if data else [])
    tags = (
        ["sft", "trl", "lora", "sft-space"]
        + (["merged"] if merged else ([f"base_model:adapter:{base}"] if base else []))
        + (["gguf", "ollama"] if gguf else [])
    )
    lines += _yaml_list("tags", tags)
    return lines + ["---"]


def _summary(repo_id: str, config: RunConfig, base: str | None, data_text: str, merged: bool) -> list[str]:
    what = "a merged model (base weights with the LoRA update folded in)" if merged else "a LoRA adapter"
    base_link = f"[{base}](https://huggingface.co/{base})" if base else f"a local model (`{config.model}`)"
    return [
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        f"This is {what} for {base_link}, fine-tuned with supervised fine-tuning (TRL `SFTTrainer`) on {data_text}.",
        "",
    ]


def _data_section(config: RunConfig, status: dict, data_text: str) -> list[str]:
    lines = ["## Data", ""]
    lines += [
        f"- Dataset: {data_text}"
        + (f", subset `{config.dataset_config}`" if config.dataset_config else "")
        + (f", revision `{config.dataset_revision}`" if config.dataset_revision else "")
        + (f", commit `{status['data_revision'][:12]}`" if status.get("data_revision") else "")
        + (f", split `{config.dataset_split}`" if config.dataset_split else "")
    ]
    loss_on = status.get("loss_on") or ("the answers" if config.answers_only else "every token")
    lines += [
        f"- Format: {status.get('data_format', 'unknown')}; loss on {loss_on}"
        + (" (prompt tokens masked)" if config.answers_only else "")
    ]
    lines += [f"- Rows: {status.get('train_rows', '?')} training, {status.get('validation_rows', '?')} validation"]
    lengths = status.get("token_lengths") or {}
    if lengths:
        lines += [
            f"- Tokens per training row: min {lengths['min']}, median {lengths['median']}, 95th percentile "
            f"{lengths['p95']}, max {lengths['max']}; {lengths['at_max_length']:.1%} reach max_length "
            f"{config.max_length}"
        ]
    lines += [f"- {note}" for note in status.get("data_notes") or []]
    return lines + [""]


def _settings_table(config: RunConfig) -> list[str]:
    """Every training and LoRA setting with its TRL / PEFT name (data and model settings are said elsewhere)."""
    from ..config import fields_by_name

    lines = ["| parameter | value | TRL / PEFT name |", "|---|---|---|"]
    skip = {"temperature", "top_p", "max_new_tokens", "repetition_penalty", "run_name", "probe_prompts"}
    for name, field in fields_by_name().items():
        if name in skip or field.metadata["group"] in ("Data", "Model"):
            continue
        hint = re.search(r"\(([a-z_]+)\)\.?$", field.metadata["hint"])
        lines += [f"| {name} | `{getattr(config, name)}` | {hint.group(1) if hint else ''} |"]
    return lines + [""]


def _training_section(run_dir: Path, config: RunConfig, status: dict, metrics: list[dict]) -> list[str]:
    lines = ["## Training", ""]
    lines += [
        f"Trained for {status.get('step')} steps ({status.get('state', '?')}) in "
        f"{status.get('elapsed_seconds', 0):.0f} s on {status.get('device', 'unknown hardware')}, precision "
        f"{status.get('precision', '?')}, gradient checkpointing "
        f"{'on' if status.get('gradient_checkpointing') else 'off'}. "
        f"{status.get('trainable_parameters', 0):,} trainable parameters of {status.get('total_parameters', 0):,}.",
        "",
    ]
    if status.get("chatml_added"):
        lines += [
            "The base model had no chat template: ChatML (`<|im_start|>`, `<|im_end|>`) was set up and those "
            "tokens' embedding rows were trained with the adapter.",
            "",
        ]
    if has_adapter(run_dir) and metrics:
        lines += ["![Training and validation loss](loss.png)", ""]
    final_train, final_eval = _last(metrics, "loss"), _last(metrics, "eval_loss")
    if final_train is not None:
        lines += [
            f"Final training loss **{final_train:.4f}**"
            + (f", validation loss **{final_eval:.4f}**." if final_eval is not None else "."),
            "",
        ]
    return lines + _settings_table(config)


def _evaluation_section(evaluation: dict) -> list[str]:
    """Base vs tuned on held-out rows, then the prompting baselines, when the run was evaluated."""
    lines = []
    if evaluation.get("base") and evaluation.get("tuned"):
        from ..judging.evaluate import summary_headers, summary_rows, unlike_note

        rows = evaluation["tuned"].get("heldout", {}).get("rows")
        checked = evaluation["tuned"].get("format", {}).get("count")
        scope = f"Loss on {rows} held-out rows" + (
            f"; format checks ({evaluation.get('scorer', {}).get('kind', '?')}) "
            f"on {checked} held-out prompts, greedy decoding"
            if checked
            else ""
        )
        beside = unlike_note(evaluation)
        scope += f"; {beside}" if beside else ""
        headers = summary_headers(evaluation)
        lines += [
            "## Evaluation",
            "",
            f"{scope}; base model vs tuned.",
            "",
            "| " + " | ".join(headers) + " |",
            "|" + "---|" * len(headers),
        ]
        lines += _table_rows(summary_rows(evaluation)) + [""]
    if evaluation.get("baselines"):
        from ..judging.baselines import table_rows

        headers, rows = table_rows(evaluation["baselines"])
        lines += [
            "Compared with prompting the base model:",
            "",
            f"| {' | '.join(headers)} |",
            "|" + "---|" * len(headers),
        ]
        lines += _table_rows(rows)
        lines += ["", evaluation["baselines"].get("verdict", ""), ""]
    return lines


def _votes_section(run_dir: Path) -> list[str]:
    """The Chat tab's votes, tuned against base (only the run's owner can chat with it, so they are theirs)."""
    from ..judging.votes import read_jsonl, votes_path, win_rate

    rows = [row for row in read_jsonl(votes_path(run_dir)) if isinstance(row, dict)]
    if not rows:
        return []
    rate = win_rate(rows)
    blind = sum(1 for row in rows if row.get("blind"))
    return [
        "## Side-by-side votes",
        "",
        f"In the Chat tab, replies of the tuned and the base model to the same message were judged by the run's "
        f"owner: the tuned model was preferred in **{rate.rate:.0%}** of **{rate.votes}** votes ({rate.tuned} "
        f"tuned, {rate.base} base, {rate.ties} ties, a tie counting half; {blind} of them blind, the sides "
        "shuffled and revealed after the vote). A small, personal sample: read it as a first impression.",
        "",
    ]


def _probes_section(probes: list[dict]) -> list[str]:
    """The probe prompts' greedy replies before training and at the last evaluation."""
    if len(probes) < 2:
        return []
    first, last = probes[0], probes[-1]
    lines = [
        "## Probe prompts",
        "",
        f"Greedy replies before training and after step {last['step']}.",
        "",
        "| prompt | base | tuned |",
        "|---|---|---|",
    ]
    for prompt, before, after in zip(last["prompts"], first["replies"], last["replies"]):
        lines += [f"| {_cell(prompt, 160)} | {_cell(before)} | {_cell(after)} |"]
    return lines + [""]


def _limitations_section(status: dict, data_text: str) -> list[str]:
    lines = [
        "## Intended use and limitations",
        "",
        f"A small fine-tune for trying out supervised fine-tuning: it learned the format and style of "
        f"{data_text} from {status.get('train_rows', '?')} rows in {status.get('step')} steps. Use it for that "
        "task and check its answers; it is not meant for high-stakes decisions. It keeps the base model's "
        "limitations and biases, may state wrong facts confidently, and was evaluated only as shown above.",
    ]
    if status.get("note"):
        lines += ["", f"Note from training: {status['note']}"]
    return lines


def _usage_section(repo_id: str, base: str | None, merged: bool) -> list[str]:
    """A snippet that loads the pushed model and answers one message (run as-is by the tests)."""
    lines = ["", "## Usage", "", "```python"]
    if merged:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        ]
    else:
        lines += [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")  # the chat template used in training',
            f'base = AutoModelForCausalLM.from_pretrained("{base or "PATH/TO/BASE"}")',
            "base.resize_token_embeddings(len(tokenizer))  # a no-op unless training added tokens",
            f'model = PeftModel.from_pretrained(base, "{repo_id}")',
        ]
    lines += [
        'messages = [{"role": "user", "content": "Hello!"}]',
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
        "return_dict=True)",
        "output = model.generate(**inputs, max_new_tokens=128, do_sample=False)",
        'print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
    ]
    return lines


def _gguf_section(repo_id: str, report: dict) -> list[str]:
    """The GGUF files in the repo: what each is, how it was checked, and how to run it with Ollama or llama.cpp."""
    files = [entry["file"] for entry in report.get("files", [])]
    if not files:
        return []
    main = report.get("modelfile_from") or files[0]
    folder = repo_id.split("/")[-1]
    name = re.sub(r"[^a-z0-9._-]+", "-", folder.lower()).strip("-") or "sft-model"
    lines = [
        "### GGUF (llama.cpp, Ollama)",
        "",
        "The merged model (base + adapter) as GGUF, with the tokenizer and the chat template in each file's "
        "metadata, and an Ollama `Modelfile` (template, stop token"
        + (", system prompt" if report.get("system_prompt") else "")
        + f") for `{main}`. Checked when exported, by loading each file back with transformers:",
        "",
        *(report.get("summary") or [f"- `{file}`" for file in files]),  # written by the export (gguf.json)
        "",
        "```shell",
        f"hf download {repo_id} {main} Modelfile --local-dir {folder}",
        f"cd {folder} && ollama create {name} -f Modelfile && ollama run {name}",
        f"llama-cli -m {main} -cnv --jinja  # llama.cpp",
        "```",
        "",
    ]
    return lines


def _reproduce_section() -> list[str]:
    return [
        "## Reproduce",
        "",
        "`train_sft.py` and `sft_config.yaml` in this repo (when exported with it) "
        "re-run the same training with TRL; see the run's settings above.",
        "",
    ]


def model_card(run: str | Path, repo_id: str, merged: bool = False, gguf: bool = False) -> str:
    """README.md for the pushed model, written from the run directory alone; gguf: the push carries the run's
    exported GGUF files and Modelfile (gguf/gguf.json says which)."""
    run_dir = run_path(run)
    config, status, metrics = read_config(run_dir), read_status(run_dir), read_metrics(run_dir)
    probes, evaluation = read_probes(run_dir), read_eval(run_dir) or {}
    base, data = base_model_id(config), dataset_id(config)
    data_text = _dataset_text(config, data)
    report = read_gguf_report(run_dir) if gguf else {}
    lines = (
        _metadata(config, status, base, data, merged, bool(report.get("files")))
        + _summary(repo_id, config, base, data_text, merged)
        + _data_section(config, status, data_text)
        + _training_section(run_dir, config, status, metrics)
        + _evaluation_section(evaluation)
        + _votes_section(run_dir)
        + _probes_section(probes)
        + _limitations_section(status, data_text)
        + _usage_section(repo_id, base, merged)
        + _gguf_section(repo_id, report)
        + _reproduce_section()
    )
    return "\n".join(lines)
