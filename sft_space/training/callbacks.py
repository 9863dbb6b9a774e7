"""The Trainer callbacks of a training process: progress, metrics and stop requests into the run directory
(RunDirCallback), a run in GPU slots (SlotCallback). The probe replies are probes.py's, the clock-driven
learning rate schedule.py's.

Imported by train.build_trainer only, when transformers is loaded anyway.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

from transformers import TrainerCallback

from .. import rundir
from ..charts import CHART_METRICS
from ..rundir import cancel_requested
from . import estimates
from .run_writer import (
    INJECT_NAN_AFTER_STEP,
    INJECT_OOM_AT_STEP,
    IS_MAIN_PROCESS,
    StopRequested,
    append_metric,
    log,
    write_status,
)

# TRL's logged values written into metrics.jsonl whatever the charts draw (charts.CHART_METRICS): the losses and the
# gradient norm are what health, the card, the Runs tab and the pace read; token accuracy for scripts and the card
LOGGED_METRICS = ("loss", "eval_loss", "grad_norm", "mean_token_accuracy", "eval_mean_token_accuracy")


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

        from .. import GENERATING_MARK, GENERATING_MARK_FRESH_SECONDS, SERVING_MARK, SERVING_MARK_FRESH_SECONDS, home

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
        for key in dict.fromkeys((*CHART_METRICS, *LOGGED_METRICS)):
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
