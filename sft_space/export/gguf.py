"""Taking a tuned model home: the merged model (base + adapter) as one GGUF file for llama.cpp and Ollama.

Owns the GGUF export of a run, start to finish: which architectures it writes (Llama/SmolLM2 and Qwen2, through
the `gguf` package's writer, architecture table and tensor-name map; any other is refused by name before any work),
the weight types (f16, q8_0, q4_0; norms and biases stay f32, a row the block size does not divide stays f16), the
size estimate and disk check, the tokenizer (byte-level BPE: tokens, types, merges, special ids) and chat template
written into the metadata, the Ollama Modelfile beside the file (its TEMPLATE derived from the chat template by
rendering it, and checked by rendering both), a README snippet, and the check that the written file loads back
through transformers' GGUF loader and answers the probe prompts like base + adapter (replies, tokens, held-out
loss), all under the run's gguf/ folder with the results in gguf.json.

It does not know Gradio, the Hub (publish pushes the files) or how a run was trained; it reads the run directory
and writes only into its gguf/ folder.

    python -m sft_space.export.gguf RUN_DIR [--type q8_0] [--type f16] [--no-verify]

The parts: gguf_tensors.py (names, types, sizes, writing), gguf_tokenizer.py (the tokenizer in the metadata),
ollama.py (the Modelfile and its template), gguf_check.py (the file loaded back); this module plans, runs them
in order and reports (gguf/gguf.json, with the summary lines the card and the Publish tab show).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import Progress, no_progress
from ..rundir import (
    GGUF_REPORT,
    MODELFILE,
    adapter_dir,
    gguf_dir,
    gguf_file_name,
    has_adapter,
    read_config,
    read_gguf_report,
    run_path,
    write_gguf_report,
)
from .gguf_check import MAX_NEW_TOKENS, _heldout_rows, mean_loss, verify_file
from .gguf_tensors import ARCHITECTURES, estimate_bytes, read_metadata, write_gguf
from .gguf_tokenizer import gguf_chat_template
from .ollama import check_template, common_system_prompt, modelfile_text, ollama_template, readme_text

TYPES = {
    "f16": "F16 (half precision: the tuned weights as they are, about 2 bytes a weight)",
    "q8_0": "Q8_0 (8-bit blocks: about half of f16, nearly the same answers)",
    "q4_0": "Q4_0 (4-bit blocks: about a quarter of f16, answers drift more)",
}
DEFAULT_TYPE = "q8_0"
DISK_MARGIN = 1.10  # the estimate plus 10 % (metadata, alignment) must fit on the disk


# ------------------------------------------------------------------ what can be exported
@dataclass
class ExportPlan:
    """What an export will do, known before any weight is loaded."""

    run_dir: Path
    model_folder: Path
    model_type: str
    types: list[str]
    estimated_bytes: dict[str, int]
    free_bytes: int
    parameters: int
    notes: list[str] = field(default_factory=list)


def parse_types(types) -> list[str]:
    """The weight types asked for (a name, or several), checked; the default is q8_0."""
    if isinstance(types, str):
        types = [types]
    chosen = [str(t).strip().lower() for t in (types or [DEFAULT_TYPE]) if str(t).strip()] or [DEFAULT_TYPE]
    unknown = [t for t in chosen if t not in TYPES]
    if unknown:
        raise ValueError(f"Unknown GGUF type {unknown[0]!r}: choose one of {', '.join(TYPES)}.")
    return list(dict.fromkeys(chosen))


def model_type_of(folder: Path) -> str:
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    return str(config.get("model_type", "unknown"))


def check_architecture(model_type: str, model: str, config: dict | None = None) -> None:
    """Refuse, naming it, an architecture this export does not write, and say what to do instead."""
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"GGUF export does not handle the architecture {model_type!r} of {model}: it writes "
            f"{' and '.join(ARCHITECTURES)} models (SmolLM2, Llama, Qwen2/2.5). Push the merged model as "
            "safetensors instead (Publish, What to push: Merged model); llama.cpp's convert_hf_to_gguf.py can "
            "turn that into GGUF."
        )
    rope = (config or {}).get("rope_parameters") or (config or {}).get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ValueError(
            f"{model} uses {rope.get('rope_type') or rope.get('type')!r} rope scaling, which this GGUF export does "
            "not write: push the merged model as safetensors instead (Publish, What to push: Merged model)."
        )


def plan_export(run: str | Path, types=None) -> ExportPlan:
    """Every check that needs no weights: an adapter, a known architecture, the types, the size and the disk."""
    from ..models import resolve_model

    run_dir = run_path(run)
    if not run_dir.is_dir() or not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (it has no config.json).")
    if not has_adapter(run_dir):
        raise FileNotFoundError(
            f"Run {run_dir.name} has no adapter to export: wait for it to finish, or Stop & save it."
        )
    kinds = parse_types(types)
    config = read_config(run_dir)
    folder = Path(resolve_model(config.model))
    model_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model_type = str(model_config.get("model_type", "unknown"))
    check_architecture(model_type, config.model, model_config)
    tokenizer_json = adapter_dir(run_dir) / "tokenizer.json"
    vocabulary = tokenizer_json.stat().st_size if tokenizer_json.is_file() else 0
    estimates, parameters = {}, 0
    for kind in kinds:
        estimates[kind], parameters = estimate_bytes(folder, model_type, kind, vocabulary)
    target = gguf_dir(run_dir)
    target.mkdir(exist_ok=True)
    existing = sum(p.stat().st_size for p in target.glob("*.gguf"))
    free = shutil.disk_usage(target).free + existing  # an export replaces the files of the one before
    needed = int(sum(estimates.values()) * DISK_MARGIN)
    if needed > free:
        raise OSError(
            f"The GGUF export needs about {human_bytes(needed)} and the disk has {human_bytes(free)} free: "
            "free some space (delete old runs on the Runs tab) or choose a smaller type (q8_0, q4_0)."
        )
    return ExportPlan(run_dir, folder, model_type, kinds, estimates, free, parameters)


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def estimate_text(plan: ExportPlan) -> str:
    sizes = ", ".join(f"{kind} about {human_bytes(size)}" for kind, size in plan.estimated_bytes.items())
    return (
        f"{plan.parameters / 1e6:.0f}M weights ({plan.model_type}): {sizes}; "
        f"{human_bytes(plan.free_bytes)} free on the disk."
    )


# ------------------------------------------------------------------ the export
def export_gguf(run: str | Path, types=None, verify: bool = True, progress: Progress = no_progress) -> dict:
    """Write the run's merged model as GGUF in each type, the Modelfile and README beside them, and (verify) check
    each file by loading it back; the report is returned and written to gguf/gguf.json."""
    import torch

    from ..models import device_name, end_of_turn_ids
    from ..run_model import greedy_each, load_base_and_adapter, probe_conversations

    plan = plan_export(run, types)  # every refusal before any weight is loaded
    run_dir, target = plan.run_dir, gguf_dir(plan.run_dir)
    # the folder holds this export's files only, as its gguf.json lists them (none while it is being written)
    (target / GGUF_REPORT).unlink(missing_ok=True)
    for stale in target.glob("*.gguf*"):
        stale.unlink()
    config = read_config(run_dir)
    progress(0.01, "Size estimate: " + estimate_text(plan))
    started = time.time()
    progress(0.03, "Loading the base model and the adapter")
    model, tokenizer, _ = load_base_and_adapter(run_dir, plan.model_folder)
    conversations = probe_conversations(run_dir, config)
    rows, train_rows, loss_note = _heldout_rows(run_dir, config) if verify else ([], [], None)
    reference = {}
    if verify:
        progress(0.08, f"Answering {len(conversations)} probe prompts with base + adapter")
        prompts, replies, texts = greedy_each(model, tokenizer, conversations, MAX_NEW_TOKENS)
        progress(0.14, f"Held-out loss of base + adapter on {len(rows)} rows")
        reference = {
            "prompts": prompts,
            "replies": replies,
            "texts": texts,
            "loss": mean_loss(model, tokenizer, rows, config.answers_only),
        }
    with torch.no_grad():
        merged = model.merge_and_unload()
    merged.eval()
    prepare_seconds = time.time() - started  # loading, the reference replies and loss, the merge
    name = f"{run_dir.name} ({config.model})"
    entries = []
    span = 0.5 / len(plan.types)
    for index, kind in enumerate(plan.types):
        path = target / gguf_file_name(run_dir, kind)
        offset = 0.2 + span * index
        written = write_gguf(merged, tokenizer, path, kind, name, lambda f, m, o=offset: progress(o + span * f, m))
        entries.append(
            {
                "type": kind,
                "file": path.name,
                "bytes": written["bytes"],
                "estimated_bytes": plan.estimated_bytes[kind],
                "convert_seconds": written["seconds"],
                "tensors": written["tensors"],
                "metadata": read_metadata(path),
            }
        )
    stops = list(dict.fromkeys(tokenizer.convert_ids_to_tokens(end_of_turn_ids(merged, tokenizer))))
    del merged, model
    gc.collect()  # one model in memory at a time: the files are loaded back next
    template = ollama_template(tokenizer)
    system = common_system_prompt(train_rows) if train_rows else None
    main_file = next((e for e in entries if e["type"] == DEFAULT_TYPE), entries[0])["file"]  # the Modelfile's FROM
    modelfile = modelfile_text(main_file, template, stops, system)
    (target / MODELFILE).write_text(modelfile, encoding="utf-8")
    report = {
        "run": run_dir.name,
        "model": config.model,
        "architecture": plan.model_type,
        "device": device_name(),
        "created_at": time.time(),
        "prepare_seconds": round(prepare_seconds, 2),
        "files": entries,
        "modelfile": MODELFILE,
        "modelfile_from": main_file,
        "stop": stops,
        "system_prompt": system,
        "template": check_template(template, tokenizer, conversations),
        "chat_template_in_metadata": all(
            e["metadata"]["chat_template"] == gguf_chat_template(tokenizer.chat_template) for e in entries
        ),
        "eos_token": tokenizer.eos_token,
        "notes": [n for n in (loss_note,) if n],
    }
    if verify:
        report["reference"] = {"texts": reference["texts"], "heldout_loss": reference["loss"]}
        span = 0.28 / len(entries)
        for index, entry in enumerate(entries):
            progress(0.7 + span * index, f"Loading {entry['file']} back and answering the probe prompts")
            entry["verification"] = verify_file(
                target / entry["file"], reference, conversations, rows, config.answers_only
            )
            gc.collect()
    report["seconds"] = round(time.time() - started, 1)
    files = [main_file] + [e["file"] for e in entries if e["file"] != main_file]
    report["summary"] = summary_lines(report)  # what the card and the page show, read from gguf.json
    checked = report["summary"] if any(e.get("verification") for e in entries) else []
    (target / "README.md").write_text(readme_text(run_dir.name, files, checked), encoding="utf-8")
    write_gguf_report(run_dir, report)
    progress(1.0, f"GGUF export done in {report['seconds']:.0f} s")
    return report


def read_report(run: str | Path) -> dict:
    """The run's last GGUF report (gguf/gguf.json). One written before reports carried their summary lines gets
    them now, written back, so the card and the page read them from the run directory alike."""
    report = read_gguf_report(run)
    if report.get("files") and "summary" not in report:
        report["summary"] = summary_lines(report)
        write_gguf_report(run, report)
    return report


def summary_lines(report: dict) -> list[str]:
    """The export in a few lines: per file its size, conversion time and how it answered when loaded back."""
    lines = []
    for entry in report.get("files", []):
        text = (
            f"- `{entry['file']}`: {human_bytes(entry['bytes'])} (estimated {human_bytes(entry['estimated_bytes'])}), "
            f"written in {entry['convert_seconds']:.1f} s"
        )
        check = entry.get("verification")
        if check:
            text += (
                f"; loaded back with transformers in {check['load_seconds']:.1f} s: "
                f"{check['replies_identical']}/{check['prompts']} probe replies identical to base + adapter "
                f"(greedy, {MAX_NEW_TOKENS} tokens at most)"
            )
            if check.get("loss_difference") is not None:
                text += (
                    f", held-out loss {check['heldout_loss']:.4f} ({check['loss_difference']:+.4f} vs base + "
                    f"adapter on {check['loss_rows']} rows)"
                )
            if check["prompt_tokens_identical"] != check["prompts"]:
                text += (
                    f"; its tokenizer encodes {check['prompt_tokens_identical']}/{check['prompts']} prompts as "
                    "the original does"
                )
        lines.append(text)
    template = report.get("template") or {}
    lines.append(
        f"- Modelfile (FROM `{report.get('modelfile_from')}`): TEMPLATE "
        + (
            f"renders {template.get('checked')} conversations exactly as the chat template does"
            if template.get("matches")
            else f"not derived or not matching ({template.get('note') or str(template.get('differing')) + ' differ'}); "
            "Ollama then uses the template in the file"
        )
        + f"; stop {', '.join(f'`{s}`' for s in report.get('stop', []))}"
        + ("; SYSTEM from the training data" if report.get("system_prompt") else "")
    )
    lines += [f"- {note}" for note in report.get("notes", [])]
    return lines


# ------------------------------------------------------------------ command line
class _Bar:
    """A text progress bar with the time left, on stderr."""

    def __init__(self):
        self.started = time.time()

    def __call__(self, fraction: float, message: str) -> None:
        width = 30
        filled = int(width * min(max(fraction, 0.0), 1.0))
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} {message[:90]:<90}", end="", file=sys.stderr)
        if fraction >= 1.0:
            print(file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sft_space.export.gguf",
        description="Export a run's tuned model (base + adapter merged) as GGUF with an Ollama Modelfile, and check "
        "that the file loads back and answers like the tuned model.",
    )
    parser.add_argument("run_dir", help="the run directory (or a run id)")
    parser.add_argument(
        "--type",
        action="append",
        dest="types",
        metavar="TYPE",
        help=f"weight type, repeatable: {', '.join(TYPES)} (default {DEFAULT_TYPE})",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip loading the files back")
    args = parser.parse_args(argv)
    try:
        plan = plan_export(args.run_dir, args.types)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"GGUF export of {plan.run_dir.name}: {estimate_text(plan)}", file=sys.stderr)
    try:
        report = export_gguf(plan.run_dir, plan.types, verify=not args.no_verify, progress=_Bar())
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"\nerror: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    print(f"Files in {gguf_dir(plan.run_dir)}: {', '.join(e['file'] for e in report['files'])}, Modelfile, README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
