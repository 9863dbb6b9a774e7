"""Health verdicts on synthetic curves: one per warning sign of the SFT guide, and a healthy run."""

from sft_space.judging.health import diagnose, summary


def curve(train, evals=(), eval_every=10, grads=None, log_every=2):
    """metrics.jsonl-like records: training loss every `log_every` steps, validation loss every `eval_every`."""
    records = []
    for i, loss in enumerate(train):
        record = {"step": (i + 1) * log_every, "loss": loss}
        if grads:
            record["grad_norm"] = grads[i]
        records.append(record)
    for i, loss in enumerate(evals):
        records.append({"step": (i + 1) * eval_every, "eval_loss": loss})
    return sorted(records, key=lambda r: r["step"])


def signs(records, **kw):
    return [f.sign for f in diagnose(records, **kw)]


def test_healthy_run():
    records = curve([2.0 - 0.04 * i for i in range(40)], evals=[1.9, 1.6, 1.4, 1.2, 1.1, 1.0, 0.9, 0.85])
    findings = diagnose(records)
    assert [f.sign for f in findings] == ["healthy"]
    assert findings[0].message.startswith(
        "Healthy: training loss 2.000 -> 0.440, validation loss 1.900 -> 0.850 (falling)"
    )


def test_overfitting_validation_rising_while_training_falls():
    records = curve([2.0 - 0.045 * i for i in range(40)], evals=[1.5, 1.2, 1.0, 0.95, 1.0, 1.08, 1.2, 1.35])
    finding = diagnose(records)[0]
    assert finding.sign == "overfitting" and finding.severity == "bad"
    assert "rose over the last 3 evaluations (1.000 -> 1.350)" in finding.message
    assert "best validation loss 0.950 was at step 40" in finding.advice


def test_widening_gap():
    records = curve([2.0 - 0.045 * i for i in range(40)], evals=[1.50, 1.49, 1.48, 1.47, 1.46])
    assert "widening-gap" in signs(records)
    assert "overfitting" not in signs(records)


def test_not_learning_after_a_fair_number_of_steps():
    records = curve([2.0, 2.01, 1.99, 2.0, 1.98, 2.02, 1.99, 2.0, 1.97, 2.0, 1.99, 1.98, 2.0, 1.99, 1.98, 1.99])
    findings = diagnose(records, learning_rate=1e-6)
    assert findings[0].sign == "not-learning"
    assert "higher learning rate (now 1e-06)" in findings[0].advice
    assert signs(curve([2.0, 2.0, 2.0])) == ["healthy"]  # too early to tell


def test_memorisation_extremely_low_training_loss():
    records = curve([1.0, 0.5, 0.2, 0.05, 0.01, 0.005])
    assert "memorisation" in signs(records)
    # with validation: only while the validation loss stays well above it (recited, not learned)
    assert "memorisation" in signs(curve([1.0, 0.5, 0.2, 0.05, 0.01, 0.005], evals=[0.9, 0.6], eval_every=6))
    learned = curve([1.0, 0.5, 0.2, 0.05, 0.01, 0.005], evals=[0.3, 0.026], eval_every=6)  # a healthy Quick demo
    assert signs(learned) == ["healthy"]


def test_a_small_wobble_near_zero_is_no_spike():
    """A Quick demo at loss 0.04 meets one harder batch at 0.13: three times the median, but no instability."""
    assert signs(curve([2.0, 1.0, 0.3, 0.05, 0.04, 0.04, 0.03, 0.04, 0.134, 0.04])) == ["healthy"]


def test_instability_spike_exploding_gradient_and_nan():
    spike = curve([1.0, 0.95, 0.9, 0.88, 0.86, 0.84, 2.5, 0.8])
    assert diagnose(spike)[0].sign == "instability" and "spiked to 2.500 at step 14" in diagnose(spike)[0].message
    grads = curve([1.0, 0.9, 0.85, 0.8, 0.78, 0.75, 0.7, 0.7], grads=[1.0, 1.1, 0.9, 1.0, 1.2, 1.0, 30.0, 1.0])
    assert any("Gradient norm reached 30.00" in f.message for f in diagnose(grads))
    nan = [{"step": 2, "loss": 1.0}, {"step": 4, "loss": "nan"}]
    finding = diagnose(nan, learning_rate=0.5)[0]
    assert finding.severity == "bad" and "NaN or infinite at step 4" in finding.message
    assert "Lower the learning rate (now 0.5)" in finding.advice


def test_summary_is_readable_text():
    assert summary([]).startswith("Waiting for the first logged losses")


def test_a_warning_gets_a_marker_on_the_loss_chart():
    from sft_space.ui.train_tab import loss_frame

    records = curve([2.0 - 0.045 * i for i in range(40)], evals=[1.5, 1.2, 1.0, 0.95, 1.0, 1.08, 1.2, 1.35])
    frame = loss_frame(records, diagnose(records))
    marker = frame[(frame["series"] == "warning") & frame["step"].notna()]
    assert list(marker["step"]) == [80, 80] and marker["loss"].min() == 0.0 and marker["loss"].max() == 2.0
    healthy = curve([2.0 - 0.04 * i for i in range(40)], evals=[1.9, 1.6, 1.4])
    drawn = loss_frame(healthy, diagnose(healthy)).dropna()  # without the empty row each series keeps
    assert set(drawn["series"]) == {"train", "validation"}
