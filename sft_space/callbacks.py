"""The Trainer callbacks of a training process: progress, metrics and stop requests into the run directory
(RunDirCallback), and the probe prompts answered during training (ProbeCallback).

Imported by train.build_trainer only, when transformers is loaded anyway.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from . import estimates, rundir
from .chat import generate_batch
from .run_writer import (
    END_CHECK_MAX_NEW_TOKENS,
    INJECT_NAN_AFTER_STEP,
    INJECT_OOM_AT_STEP,
    IS_MAIN_PROCESS,
    PROBE_MAX_NEW_TOKENS,
    StopRequested,
    append_metric,
    log,
    write_status,
)
from .rundir import cancel_requested


class RunDirCallback(TrainerCallback):
    """Writes progress to status.json each step and every log to metrics.jsonl; honours stop requests."""

    def __init__(self, run_dir: Path, status: dict, stop: StopRequested, backup=None) -> None:
        self.run_dir, self.status, self.stop, self.backup = run_dir, status, stop, backup
        self.train_started = time.time()
        self.eval_seconds = 0.0
        self.first_step = self.first_tokens = 0  # where this process began (above 0 when resuming)
        self.cpu_threads: int | None = None  # the threads training has on a CPU (None: not on a CPU)

    def _tokens(self, state) -> int:
        return int(getattr(state, "num_input_tokens_seen", 0) or 0)

    def _tokens_per_second(self, state) -> float:
        """Tokens this process trained on per second of training (a resumed run counts from its resume)."""
        return (self._tokens(state) - self.first_tokens) / self._training_seconds()

    def _training_seconds(self) -> float:
        paused = self.eval_seconds + self.status.get("probe_seconds", 0.0)  # evaluation and probe replies
        return max(1e-6, time.time() - self.train_started - paused)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import torch

        from . import slots

        on_cpu = model is not None and next(model.parameters()).device.type == "cpu" and torch.get_num_threads() > 1
        on_cpu = on_cpu and not slots.IN_SLOT  # a forked slot keeps the threads it has (see slots.IN_SLOT)
        self.cpu_threads = torch.get_num_threads() if on_cpu else None
        self.train_started = time.time()
        self.first_step = state.global_step  # above 0 when resuming: only this process's steps measure its pace
        self.first_tokens = self._tokens(state)
        self.status.update(
            max_steps=state.max_steps,
            step=state.global_step,
            startup_seconds=round(self.train_started - self.status["started_at"], 2),
        )
        write_status(self.run_dir, **self.status)

    def _share_the_cpu(self) -> None:
        """One thread less while the app generates beside this run on the CPU (its GENERATING_MARK) or serves a
        crowd of requests (SERVING_MARK), all of them otherwise: the two never share a core (sharing, each ran at a
        third to a half of its speed)."""
        import torch

        from . import GENERATING_MARK, GENERATING_MARK_FRESH_SECONDS, SERVING_MARK, SERVING_MARK_FRESH_SECONDS, home

        if self.cpu_threads is None:
            return

        def fresh(mark: str, seconds: float) -> bool:
            try:
                return time.time() - (home() / mark).stat().st_mtime < seconds
            except OSError:
                return False

        busy = fresh(GENERATING_MARK, GENERATING_MARK_FRESH_SECONDS) or fresh(SERVING_MARK, SERVING_MARK_FRESH_SECONDS)
        wanted = max(1, self.cpu_threads - 1) if busy else self.cpu_threads
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    def on_step_begin(self, args, state, control, **kwargs):
        self._share_the_cpu()
        if INJECT_OOM_AT_STEP and state.global_step + 1 >= INJECT_OOM_AT_STEP:
            import torch  # a test hook: real memory exhaustion cannot be produced on demand

            raise torch.OutOfMemoryError("CUDA out of memory (injected by SFT_SPACE_INJECT_OOM_AT_STEP)")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if INJECT_NAN_AFTER_STEP and state.global_step == INJECT_NAN_AFTER_STEP and model is not None:
            import torch  # a test hook: a divergence cannot be produced on demand on every machine

            with torch.no_grad():
                next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))
        elapsed = time.time() - self.train_started
        tokens = self._tokens(state)
        step = state.global_step
        trained = step - self.first_step
        # wall seconds per step, evaluations and probe replies included: what the next run of this model waits
        pace = elapsed / trained if trained else None
        last = self.status.get("timed_last_step") or state.max_steps  # a timed run: its predicted last step
        self.status.update(
            step=step,
            max_steps=last,
            epoch=state.epoch,
            tokens_seen=tokens,
            tokens_per_second=self._tokens_per_second(state),
            elapsed_seconds=elapsed,
            steps_measured=trained,
            seconds_per_step=pace,
            eta_seconds=(last - step) * pace if pace and trained >= estimates.MEASURED_AFTER_STEPS else None,
            last_step_at=time.time(),
        )
        write_status(self.run_dir, **self.status)
        budget = self.status.get("time_budget_seconds")
        if budget and not self.stop.requested and time.time() - self.status["started_at"] >= budget:
            self.stop.budget_spent = f"time budget of {budget / 60:g} min reached at step {step} of {state.max_steps}"
            log.info("Stopping: the %s; saving the adapter.", self.stop.budget_spent)
            self.stop.requested = True
        if self.stop.requested:
            self.status["state"] = "stopping"
            write_status(self.run_dir, **self.status)
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            if IS_MAIN_PROCESS:
                rundir.mark_checkpoint_complete(folder, state.global_step)
            self.status["last_checkpoint"] = state.global_step
            write_status(self.run_dir, **self.status)
            if self.backup is not None:  # staged now (a copy), pushed in the background
                self.status["backup_stage_seconds"] = round(self.backup.save(folder, state.global_step), 3)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        bad = [
            k
            for k in ("loss", "grad_norm", "eval_loss")
            if isinstance(logs.get(k), float) and not math.isfinite(logs[k])
        ]
        if bad and not self.stop.diverged:
            lr = args.learning_rate
            self.stop.diverged = (
                f"The {bad[0].replace('_', ' ')} became {logs[bad[0]]} at step {state.global_step} with "
                f"learning_rate {lr:g}: lower the learning rate (try {lr / 10:g}) and start again"
                + (
                    f"; the last good checkpoint is step {self.status['last_checkpoint']}."
                    if self.status.get("last_checkpoint")
                    else "."
                )
            )
            log.error(self.stop.diverged)
            control.should_training_stop = True
            control.should_save = False
        if "train_loss" in logs:  # the end-of-training summary, not a point on the curve
            self.status["train_summary"] = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
            return
        if "eval_runtime" in logs:
            self.eval_seconds += float(logs["eval_runtime"])
        record = {
            "step": state.global_step,
            "epoch": round(float(state.epoch or 0), 4),
            "tokens_seen": self._tokens(state),
            "tokens_per_second": round(self._tokens_per_second(state), 1),
            "elapsed_seconds": round(time.time() - self.train_started, 2),
        }
        for key in (
            "loss",
            "eval_loss",
            "learning_rate",
            "grad_norm",
            "mean_token_accuracy",
            "eval_mean_token_accuracy",
        ):
            if key in logs and isinstance(logs[key], (int, float)):
                value = float(logs[key])
                record[key] = value if math.isfinite(value) else str(value)
        record.update(gpu_metrics())
        append_metric(self.run_dir, record)
        log.info(
            "step %d: %s",
            state.global_step,
            {k: v for k, v in record.items() if k in ("loss", "eval_loss", "learning_rate")},
        )


def gpu_metrics() -> dict:
    """On a CUDA card: memory in use and its peak so far against the card's, in GiB, and the card's utilisation
    in % (when the NVIDIA management library answers); nothing elsewhere. One point per log line, for the run
    panel's GPU chart."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    gib = 2**30
    found = {
        "gpu_memory_gib": round(torch.cuda.memory_allocated() / gib, 3),
        "gpu_peak_gib": round(torch.cuda.max_memory_allocated() / gib, 3),
        "gpu_card_gib": round(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / gib, 2),
    }
    with contextlib.suppress(Exception):  # torch.cuda.utilization needs pynvml; a card without it has no %
        found["gpu_utilization"] = float(torch.cuda.utilization())
    return found


class SlotCallback(TrainerCallback):
    """A run trained in GPU slots (slots.py): saves a checkpoint every `save_every` seconds (a slot ended at its
    duration loses no more), and before the slot's deadline saves and ends this slot's share of the run (the next
    slot resumes from that checkpoint); Stop and Cancel reach it through files in the run directory."""

    def __init__(self, run_dir: Path, status: dict, stop: StopRequested, deadline: float, save_every: float) -> None:
        self.run_dir, self.status, self.stop = run_dir, status, stop
        self.deadline, self.save_every = deadline, save_every
        self.began = self.last_save = time.time()
        self.steps = 0
        self.save_started: float | None = None
        self.save_seconds = float(rundir.read_status(run_dir).get("save_seconds") or 0.5)  # the last slot's save
        # kept free at the end for a step that runs long: 5% of the slot, 1 to 3 s
        self.margin = min(3.0, max(1.0, 0.05 * (deadline - time.time())))

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = self.last_save = time.time()  # the pace counts training steps, not the model's loading

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.stop.requested and (rundir.stop_requested(self.run_dir) or cancel_requested(self.run_dir)):
            log.info("Stop requested from the page: finishing this step, then saving.")
            self.stop.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        self.steps += 1
        if self.stop.requested or state.global_step >= state.max_steps:
            return control
        pace = (now - self.began) / self.steps
        end_fits = True
        if state.max_steps - state.global_step == 1:  # the run's last step next: its end work must fit after it
            from .slots import finish_seconds

            end_fits = now + pace + finish_seconds(self.run_dir, self.status) + self.margin < self.deadline
        if not end_fits or now + 2 * pace + 2 * self.save_seconds + self.margin >= self.deadline:
            self.stop.slot_over = True
            control.should_save = control.should_training_stop = True
            control.should_evaluate = False  # an evaluation due now would run before the save, past the margin
            log.info("GPU slot nearly over at step %d: saving; the next slot continues from here", state.global_step)
        elif now - self.last_save >= self.save_every:
            control.should_save = True
        if control.should_save:
            self.save_started = now
        return control

    def on_save(self, args, state, control, **kwargs):
        now = time.time()
        if self.save_started is not None:
            self.save_seconds = self.status["save_seconds"] = round(now - self.save_started, 2)
            self.save_started = None
        self.last_save = now


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
    from . import home

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
        faster), and taken out again bit for bit (chat.merge_exactly), so training goes on from the same weights."""
        import torch

        from .chat import merge_exactly, unmerge_exactly

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


class TimedSchedule(TrainerCallback):
    """train_minutes: the learning rate follows the clock, not the step count. The schedule (warm-up, then linear
    or cosine decay) runs over the time left for training — the run's limit, from the process's start, less a
    reserve for the last evaluation and saving — or over the planned steps when those run out first. So the rate
    reaches zero when the time is up on any machine, on the first run of a model as on later ones, without
    knowing the pace beforehand; training then stops with a last evaluation and the run completes.

    As the pace becomes known, status["timed_last_step"] is the predicted last step (the page's 'step 20/55' and
    its ETA); state.max_steps stays the most the run may take, so the Trainer never stops on a prediction."""

    def __init__(self, status: dict, warmup_ratio: float, kind: str) -> None:
        self.status, self.warmup, self.kind = status, warmup_ratio, kind
        from .process import seconds_running

        budget = status["time_budget_seconds"]
        self.reserve = min(max(TIMED_RESERVE_SHARE * budget, TIMED_RESERVE_MIN_SECONDS), TIMED_RESERVE_MAX_SECONDS)
        running = seconds_running(os.getpid())  # from the process's start: its imports count too
        origin = min(status["started_at"], time.time() - running) if running is not None else status["started_at"]
        self.deadline = origin + budget - self.reserve
        self.began = time.time()
        self.steps = 0  # the most steps the run may take (epochs or max_steps): the schedule's other end
        self.first_step = 0

    def fraction(self, step: int) -> float:
        """How far through the schedule: the larger of the time used and the steps done."""
        by_time = (time.time() - self.began) / max(self.deadline - self.began, 1e-6)
        by_steps = step / self.steps if self.steps else 0.0
        return min(max(by_time, by_steps), 1.0)

    def multiplier(self, step: int) -> float:
        """The learning rate's share at `step` (LambdaLR's function; it passes the optimizer steps taken)."""
        done = self.fraction(step)
        if self.warmup and done < self.warmup:
            return done / self.warmup
        if self.kind == "constant_with_warmup":
            return 1.0
        rest = (done - self.warmup) / max(1.0 - self.warmup, 1e-6)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * rest))
        return max(0.0, 1.0 - rest)

    def scheduler(self, optimizer, steps: int):
        import torch

        self.steps = steps
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.multiplier)

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.time()
        self.first_step = state.global_step
        self.status["timed_schedule"] = {
            "train_until": round(self.deadline - self.status["started_at"], 1),
            "reserve_seconds": round(self.reserve, 1),
            "most_steps": state.max_steps,
        }

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if self.fraction(step) >= 1.0:
            if step < state.max_steps:
                log.info("train for %g min: time is up at step %d; last evaluation and save", self.minutes, step)
                self.status["timed_schedule"]["ended_at_step"] = step
            state.max_steps = self.status["timed_last_step"] = step
            control.should_training_stop = True
            control.should_evaluate = bool(args.eval_strategy != "no")  # the last point of the validation curve
            return control
        done = step - self.first_step
        if done >= estimates.MEASURED_AFTER_STEPS:  # the predicted last step, for the page's step count and ETA
            per_step = (time.time() - self.began) / done
            predicted = step + max(1, int((self.deadline - time.time()) / per_step))
            self.status["timed_last_step"] = min(self.steps or predicted, predicted)
        return control

    @property
    def minutes(self) -> float:
        return self.status["time_budget_seconds"] / 60


# The share of a timed run kept for its last step, evaluation, probe replies and saving: a 3-minute Quick demo on
# a 2-core CPU needed 8.5 s after its deadline (evaluation 1 s, probes 3.8 s, adapter and end-of-turn check reused
# from the probes 0.2 s); 9% of 180 s is 16.2 s, room for a slower moment.
TIMED_RESERVE_SHARE = 0.09
TIMED_RESERVE_MIN_SECONDS = 10.0
TIMED_RESERVE_MAX_SECONDS = 120.0


def use_timed_schedule(trainer, config, status: dict) -> TimedSchedule | None:
    """Give `trainer` the clock-driven schedule when the run trains for a number of minutes (not when resuming:
    a resumed run finishes the steps its first part planned)."""
    import types

    if not config.train_minutes or not status.get("time_budget_seconds") or status.get("resumed_from"):
        return None
    timed = TimedSchedule(status, config.warmup_ratio, config.lr_scheduler_type)

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = timed.scheduler(optimizer or self.optimizer, num_training_steps)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    trainer.create_scheduler = types.MethodType(create_scheduler, trainer)
    # before RunDirCallback, so the step count and ETA it writes already use the predicted last step
    handler = trainer.callback_handler
    at = next((i for i, cb in enumerate(handler.callbacks) if isinstance(cb, RunDirCallback)), len(handler.callbacks))
    handler.callbacks.insert(at, timed)
    return timed
