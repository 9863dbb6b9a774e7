"""Read a run's curves the way the SFT guide does and name the warning signs.

Owns the diagnosis of metrics.jsonl records: overfitting, a widening gap
between training and validation loss, not learning, possible memorisation,
and instability (loss spikes, exploding gradients, non-finite loss). Each
finding says what it saw (the evidence, with numbers) and what to try. Pure
Python on lists of dicts: no torch, no Gradio, usable during and after a run.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# --- thresholds (each a judgement call, named so it can be tuned in one place)
OVERFIT_EVALS = 3  # validation loss must have risen over this many consecutive evaluations...
OVERFIT_MIN_RISE = 0.02  # ...by at least this share of its best value, while training loss kept falling
GAP_MIN_EVALS = 3  # evaluations needed before comparing how fast the two losses fall
GAP_RATIO = 3.0  # training loss falling this many times faster than validation loss = a widening gap
GAP_MIN_TRAIN_DROP = 0.1  # ...and only once training loss has fallen by at least this share
PLATEAU_MIN_STEPS = 30  # "a fair number of steps" before calling a run stuck
PLATEAU_MIN_DROP = 0.05  # less than 5% below the starting loss after that = not learning
MEMORISATION_LOSS = 0.02  # a training loss this low usually means answers are being recited, not learned
SPIKE_FACTOR = 2.0  # a training loss above this multiple of the recent median is a spike...
# ...and this much above it: near zero, one harder batch doubles the loss (0.04 -> 0.13 on a healthy Quick demo)
SPIKE_MIN_RISE = 0.25
# memorisation with a validation curve: the validation loss this many times the training loss, and this far above
MEMORISATION_GAP_FACTOR = 3.0
MEMORISATION_MIN_GAP = 0.1
SPIKE_WINDOW = 5  # logged points that make up "recent"
GRAD_EXPLODE_FACTOR = 10.0  # a gradient norm this many times its early median is exploding


@dataclass
class Finding:
    sign: str  # overfitting | widening-gap | not-learning | memorisation | instability | healthy | waiting
    severity: str  # ok | warn | bad
    message: str  # the verdict in plain words, with the evidence
    advice: str  # what to try
    step: int | None = None  # where on the chart it shows

    def as_text(self) -> str:
        return f"{self.message} {self.advice}".strip()


def _series(records: list[dict], key: str) -> list[tuple[int, float]]:
    return [(r["step"], float(r[key])) for r in records if isinstance(r.get(key), (int, float))]


def _nonfinite(records: list[dict]) -> tuple[int, str] | None:
    for r in records:
        for key in ("loss", "eval_loss", "grad_norm"):
            value = r.get(key)
            if isinstance(value, str) or (isinstance(value, float) and not math.isfinite(value)):
                return r["step"], key
    return None


def diagnose(records: list[dict], learning_rate: float | None = None) -> list[Finding]:
    """Every warning sign found in the records, worst first; a single 'healthy' finding when there are none."""
    findings: list[Finding] = []
    train = _series(records, "loss")
    evals = _series(records, "eval_loss")
    grads = _series(records, "grad_norm")
    lr_text = f" (now {learning_rate:g})" if learning_rate else ""

    bad = _nonfinite(records)
    if bad:
        findings.append(
            Finding(
                "instability",
                "bad",
                f"The {bad[1].replace('_', ' ')} became NaN or infinite at step {bad[0]}.",
                f"Lower the learning rate{lr_text}, e.g. to a third, and keep max_grad_norm at 1.0.",
                bad[0],
            )
        )

    if len(train) > SPIKE_WINDOW:
        for i in range(SPIKE_WINDOW, len(train)):
            recent = statistics.median(v for _, v in train[i - SPIKE_WINDOW : i])
            step, value = train[i]
            if recent > 0 and value > SPIKE_FACTOR * recent and value - recent >= SPIKE_MIN_RISE:
                findings.append(
                    Finding(
                        "instability",
                        "warn",
                        f"Training loss spiked to {value:.3f} at step {step}, {value / recent:.1f}x its recent "
                        f"median {recent:.3f}.",
                        f"Lower the learning rate{lr_text} or raise warmup; a larger effective batch also "
                        f"smooths the loss.",
                        step,
                    )
                )
                break

    if len(grads) > SPIKE_WINDOW:
        early = statistics.median(v for _, v in grads[:SPIKE_WINDOW])
        step, peak = max(grads[SPIKE_WINDOW:], key=lambda p: p[1])
        if early > 0 and peak > GRAD_EXPLODE_FACTOR * early:
            findings.append(
                Finding(
                    "instability",
                    "warn",
                    f"Gradient norm reached {peak:.2f} at step {step}, {peak / early:.0f}x its early median "
                    f"{early:.2f}.",
                    f"Lower the learning rate{lr_text}; max_grad_norm clips the update but not the cause.",
                    step,
                )
            )

    if len(evals) >= OVERFIT_EVALS + 1:
        tail = evals[-(OVERFIT_EVALS + 1) :]
        rising = all(b[1] > a[1] for a, b in zip(tail, tail[1:]))
        best = min(v for _, v in evals)
        train_then = [v for s, v in train if s <= tail[0][0]]
        train_now = [v for s, v in train if s >= tail[-1][0] - 1]
        train_falling = bool(train_then and train_now) and train_now[-1] < train_then[-1]
        if rising and tail[-1][1] >= best * (1 + OVERFIT_MIN_RISE) and train_falling:
            findings.append(
                Finding(
                    "overfitting",
                    "bad",
                    f"Overfitting: validation loss rose over the last {OVERFIT_EVALS} evaluations "
                    f"({tail[0][1]:.3f} -> {tail[-1][1]:.3f}) while training loss kept falling "
                    f"({train_then[-1]:.3f} -> {train_now[-1]:.3f}).",
                    f"Stop earlier (the best validation loss {best:.3f} was at step "
                    f"{min(evals, key=lambda p: p[1])[0]}), "
                    "train fewer epochs, add data, or raise LoRA dropout.",
                    tail[-1][0],
                )
            )

    if len(evals) >= GAP_MIN_EVALS and len(train) >= 2 and not any(f.sign == "overfitting" for f in findings):
        first_eval, last_eval = evals[0], evals[-1]
        train_at_first = [v for s, v in train if s <= first_eval[0]] or [train[0][1]]
        train_at_last = [v for s, v in train if s <= last_eval[0]]
        train_drop = (train_at_first[-1] - train_at_last[-1]) / max(train_at_first[-1], 1e-9)
        eval_drop = (first_eval[1] - last_eval[1]) / max(first_eval[1], 1e-9)
        if train_drop >= GAP_MIN_TRAIN_DROP and train_drop > GAP_RATIO * max(eval_drop, 1e-9):
            findings.append(
                Finding(
                    "widening-gap",
                    "warn",
                    f"Validation loss is falling much more slowly than training loss since step {first_eval[0]}: "
                    f"training -{train_drop:.0%}, validation -{max(eval_drop, 0):.0%}.",
                    "The model is starting to fit the training set rather than the task: watch for overfitting, "
                    "add data or regularise (LoRA dropout, weight decay).",
                    last_eval[0],
                )
            )

    if train and train[-1][0] >= PLATEAU_MIN_STEPS:
        start = statistics.mean(v for _, v in train[:3])
        now = statistics.mean(v for _, v in train[-3:])
        if now > start * (1 - PLATEAU_MIN_DROP):
            findings.append(
                Finding(
                    "not-learning",
                    "warn",
                    f"Not learning: after {train[-1][0]} steps the training loss is {now:.3f}, "
                    f"less than {PLATEAU_MIN_DROP:.0%} below where it started ({start:.3f}).",
                    f"Try a higher learning rate{lr_text}, more LoRA rank or target modules, and check that the "
                    "data's answers are what you want the model to learn.",
                    train[-1][0],
                )
            )

    # Recited, not learned: the training loss near zero while the validation loss (when there is one) stays well
    # above it; both near zero is a task learned (a healthy Quick demo: 0.010 and 0.026).
    last_eval = evals[-1][1] if evals else None
    low = train[-1][1] if train else None
    reciting = low is not None and (
        last_eval is None or (last_eval > MEMORISATION_GAP_FACTOR * low and last_eval - low >= MEMORISATION_MIN_GAP)
    )
    if reciting and low < MEMORISATION_LOSS:
        findings.append(
            Finding(
                "memorisation",
                "warn",
                f"Possible memorisation: training loss is {train[-1][1]:.4f} at step {train[-1][0]}.",
                "Check the validation loss and held-out replies; with a small dataset, train fewer steps or add data.",
                train[-1][0],
            )
        )

    if findings:
        order = {"bad": 0, "warn": 1}
        return sorted(findings, key=lambda f: order.get(f.severity, 2))
    return [healthy(train, evals)]


def healthy(train: list[tuple[int, float]], evals: list[tuple[int, float]]) -> Finding:
    if len(train) < 2:
        return Finding("waiting", "ok", "Waiting for the first logged losses.", "")
    text = f"Healthy: training loss {train[0][1]:.3f} -> {train[-1][1]:.3f}"
    if len(evals) >= 2:
        direction = "falling" if evals[-1][1] < evals[0][1] else "flat"
        text += f", validation loss {evals[0][1]:.3f} -> {evals[-1][1]:.3f} ({direction})"
    elif evals:
        text += f", validation loss {evals[-1][1]:.3f}"
    return Finding("healthy", "ok", text + ".", "")


# Plain words, not emoji: they read the same on every machine, with or without an emoji font.
LABELS = {"ok": "", "warn": "Warning: ", "bad": "Problem: "}


def describe(findings: list[Finding]) -> str:
    """Findings as one short line each, for the run panel."""
    return "\n".join(f"{LABELS[f.severity]}{f.as_text()}" for f in findings)


def summary(records: list[dict], learning_rate: float | None = None) -> str:
    """The verdict as one or more short lines for the run panel."""
    return describe(diagnose(records, learning_rate))
