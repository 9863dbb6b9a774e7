"""The probe prompts answered during training (ProbeCallback): the base model's replies at step 0 (after the first
loss, or reused from an earlier run of the same weights), the tuned model's at every evaluation (probes.jsonl),
and the end-of-turn check at the end.

Imported by the trainer only, when transformers is loaded anyway.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from transformers import TrainerCallback

from .. import rundir
from ..run_model import generate_batch
from ..rundir import cancel_requested
from .run_writer import END_CHECK_MAX_NEW_TOKENS, PROBE_MAX_NEW_TOKENS, StopRequested, log


def _base_replies_key(model, tokenizer, probes: list[list[dict]], max_new_tokens: int) -> str | None:
    """What the base model's greedy probe replies depend on: its weight files (path, size, time), the chat
    template, the prompts, the reply length, the weights' dtype and the library versions. None when the weights
    are not files we can name (then nothing is cached)."""
    import hashlib
    import json

    import torch
    import transformers

    base = getattr(model, "get_base_model", lambda: model)()
    folder = Path(str(getattr(base.config, "_name_or_path", "") or ""))
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    identity = {
        "weights": [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files],
        "template": getattr(tokenizer, "chat_template", None),
        "vocabulary": len(tokenizer),
        "probes": probes,
        "max_new_tokens": max_new_tokens,
        "dtype": str(next(base.parameters()).dtype),
        "versions": [torch.__version__, transformers.__version__],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _base_replies_file(key: str) -> Path:
    from .. import home

    return home() / "probe_replies" / f"{key}.json"


class ProbeCallback(TrainerCallback):
    """Answers the probe prompts with the base model (step 0) and after every evaluation (probes.jsonl), and
    checks at the end whether the tuned model ends its turn by itself.

    The base model's replies do not hold up the first loss: they come from a cache when an earlier run of the same
    model asked the same prompts (greedy replies of the same weights are the same), else they are generated right
    after the first logged step with the adapter switched off (the base model, as at step 0)."""

    def __init__(self, run_dir: Path, probes: list[list[dict]], status: dict, stop: StopRequested) -> None:
        self.run_dir, self.probes, self.status, self.stop = run_dir, probes, status, stop
        self.last: dict = {}
        self.base_pending = False

    def _generate(
        self, model, tokenizer, max_new_tokens: int, merge: bool = True
    ) -> tuple[list[str], list[bool], float]:
        """Greedy probe replies; the adapter is merged into the weights meanwhile (no LoRA matmuls per token: 15%
        faster), and taken out again bit for bit (run_model.merge_exactly), so training goes on from the same
        weights."""
        import torch

        from ..run_model import merge_exactly, unmerge_exactly

        started = time.time()
        was_training = model.training
        model.eval()
        merged = False
        try:
            if merge and hasattr(model, "peft_config"):
                with torch.no_grad():
                    merge_exactly(model)
                merged = True
            replies, ended = generate_batch(model, tokenizer, self.probes, max_new_tokens, with_ends=True)
        finally:
            if merged:
                with torch.no_grad():
                    unmerge_exactly(model)
            model.train(was_training)
        seconds = time.time() - started
        self.status["probe_seconds"] = self.status.get("probe_seconds", 0.0) + seconds  # not training time (tokens/s)
        return replies, ended, seconds

    def _write(self, step: int, replies: list[str], ended: list[bool], seconds: float, **extra) -> dict:
        record = {
            "step": step,
            "prompts": [p[-1]["content"] for p in self.probes],
            "replies": replies,
            "ended": ended,
            "seconds": round(seconds, 2),
            **extra,
        }
        rundir.append_probe(self.run_dir, record)
        return record

    def record(self, state, model, tokenizer, max_new_tokens: int = PROBE_MAX_NEW_TOKENS) -> dict:
        replies, ended, seconds = self._generate(model, tokenizer, max_new_tokens)
        self.last = self._write(state.global_step, replies, ended, seconds)
        return self.last

    def record_base(self, model, tokenizer) -> None:
        """Step 0: the base model's replies, from the cache or generated with the adapter switched off."""
        import json

        key = _base_replies_key(model, tokenizer, self.probes, PROBE_MAX_NEW_TOKENS)
        if key:
            try:
                cached = json.loads(_base_replies_file(key).read_text())
                self._write(0, cached["replies"], cached["ended"], 0.0, cached=True)
                log.info("base model's probe replies: the same as an earlier run of this model (reused)")
                return
            except (OSError, ValueError, KeyError, TypeError):
                pass
        adapter_off = getattr(model, "disable_adapter", None)
        with adapter_off() if adapter_off else contextlib.nullcontext():
            replies, ended, seconds = self._generate(model, tokenizer, PROBE_MAX_NEW_TOKENS, merge=False)
        self._write(0, replies, ended, seconds)
        log.info("base model's probe replies: answered in %.1f s (adapter off)", seconds)
        if key:
            try:
                target = _base_replies_file(key)
                target.parent.mkdir(parents=True, exist_ok=True)
                rundir.write_json_atomic(target, {"replies": replies, "ended": ended})
            except OSError:
                pass  # a cache only

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        """The end-of-turn check: does the tuned model self.stop by itself on the probe prompts?"""
        if self.stop.diverged or cancel_requested(self.run_dir) or self.stop.slot_over:  # (a slot's end: not yet)
            return
        if self.base_pending:  # no loss was logged (fewer steps than logging_steps)
            self.base_pending = False
            self.record_base(model, processing_class)
        record = self.last
        if record.get("step") != state.global_step or not all(record.get("ended", [])):
            record = self.record(state, model, processing_class, END_CHECK_MAX_NEW_TOKENS)
        ended, checked = sum(record["ended"]), len(record["ended"])
        self.status["end_of_turn"] = {"ended": ended, "checked": checked}
        if ended < checked:
            self.status["note"] = (
                f"The tuned model did not end its turn on {checked - ended} of {checked} probe prompts "
                f"within {END_CHECK_MAX_NEW_TOKENS} tokens: it may ramble. Train longer or with more "
                "data, and keep 'Train on answers only' on so the end-of-turn token is learned."
            )
            log.warning(self.status["note"])
        else:
            log.info("end-of-turn check: the tuned model ended its turn on all %d probe prompts", checked)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step == 0:
            self.base_pending = True

    def on_log(self, args, state, control, logs=None, model=None, processing_class=None, **kwargs):
        if self.base_pending and logs and "loss" in logs:  # after the first loss is on the chart
            self.base_pending = False
            self.record_base(model, processing_class)

    def on_evaluate(self, args, state, control, model=None, processing_class=None, **kwargs):
        self.record(state, model, processing_class)
