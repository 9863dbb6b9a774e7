"""What a training process writes into its run directory, and when it stops.

Under `accelerate launch` (several processes, one per GPU) only the main process
writes the run directory; SIGTERM/SIGINT ask for a stop after the current step.
Shared by the training entry point (train) and its Trainer callbacks (callbacks);
imports neither torch nor transformers.
"""

from __future__ import annotations

import logging
import os

from .. import rundir

log = logging.getLogger("sft_space.train")  # one log for the whole training process
INJECT_OOM_AT_STEP = int(os.environ.get("SFT_SPACE_INJECT_OOM_AT_STEP", "0"))  # tests only: fail like an OOM
# tests only: a LoRA weight becomes NaN after this step, as when a learning rate far too high overflows
INJECT_NAN_AFTER_STEP = int(os.environ.get("SFT_SPACE_INJECT_NAN_AFTER_STEP", "0"))
DEFAULT_PROBES = 3  # validation prompts watched during training when the user pins none
# Short, but room for the longest json-extract answer (57 tokens with a long name): a reply cut short would be
# generated again, longer, by the end-of-turn check. A probe shows behaviour, it is no evaluation.
PROBE_MAX_NEW_TOKENS = 64
END_CHECK_MAX_NEW_TOKENS = 128  # the end-of-turn check after training gives replies room to finish
# Under `accelerate launch` (several processes, one per GPU) only the main process writes the run directory.
IS_MAIN_PROCESS = int(os.environ.get("RANK", "0")) == 0


def write_status(run_dir, **status) -> None:
    if IS_MAIN_PROCESS:
        rundir.write_status(run_dir, **status)


def append_metric(run_dir, record: dict) -> None:
    if IS_MAIN_PROCESS:
        rundir.append_metric(run_dir, record)


class StopBeforeTraining(BaseException):
    """Raised by the stop signal while the run is still loading, tokenising or rendering templates: there is no
    step to finish and nothing to save, so whatever Python code runs is interrupted at once (a BaseException, so
    no library's `except Exception` swallows it). Work stuck in native code is ended by the app (runs/liveness.py)."""


class StopRequested:
    """Set by SIGTERM/SIGINT; during training the trainer stops after the current step and saves the adapter,
    before it (`training` still False) the process stops at once (StopBeforeTraining)."""

    def __init__(self) -> None:
        self.requested = False
        self.training = False  # set just before the first step: from then on a stop finishes the step and saves
        self.diverged: str | None = None  # set when the loss became NaN/inf: the message for the user
        self.budget_spent: str | None = None  # set when the run's time budget ran out: why it stopped
        self.slot_over = False  # set when a GPU slot's time is nearly up (slots.py): saved, the next slot goes on

    def __call__(self, signum, frame) -> None:
        if not self.training and not self.requested:  # once: a second signal must not interrupt the way out
            self.requested = True
            log.info("Stop requested (signal %s) before training began: stopping now.", signum)
            raise StopBeforeTraining()
        if not self.requested:
            log.info("Stop requested (signal %s): finishing the current step, then saving the adapter.", signum)
        self.requested = True
