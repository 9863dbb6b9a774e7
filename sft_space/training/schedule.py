"""train_minutes: a learning-rate schedule that follows the clock (TimedSchedule) and ends the run when the time
is up. Imported by the training process only, when transformers is loaded anyway.
"""

from __future__ import annotations

import math
import os
import time

from transformers import TrainerCallback

from . import estimates
from .callbacks import RunDirCallback
from .run_writer import log


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
        from ..host.process import seconds_running

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
