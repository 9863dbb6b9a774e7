"""The CPU's precision choice is cached only when it was measured on a quiet machine."""

import json

from sft_space.models import device


def test_a_measurement_under_load_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path))
    measured = iter([0.9, 2.3, 1.0])  # under load bf16 looks slower; on a quiet machine it is 2.3x faster
    calls = []

    def measure():
        calls.append(1)
        return next(measured)

    monkeypatch.setattr(device, "measure_cpu_bf16_speedup", measure)
    busy = [True]
    monkeypatch.setattr(device, "cpu_busy", lambda: busy[0])

    assert device.cpu_prefers_bf16() is False  # this run: what it measured
    cache = json.loads((tmp_path / device.CPU_PRECISION_FILE).read_text())
    assert cache["quiet"] is False and cache["speedup"] == 0.9

    busy[0] = False
    assert device.cpu_prefers_bf16() is True  # the next run measures again, on a quiet machine
    assert json.loads((tmp_path / device.CPU_PRECISION_FILE).read_text())["quiet"] is True
    assert device.cpu_prefers_bf16() is True and len(calls) == 2  # now cached: not measured a third time


def test_a_cache_from_before_the_quiet_check_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path))
    (tmp_path / device.CPU_PRECISION_FILE).write_text(json.dumps({"key": "old", "bf16": False, "speedup": 0.92}))
    monkeypatch.setattr(device, "measure_cpu_bf16_speedup", lambda: 2.3)
    monkeypatch.setattr(device, "cpu_busy", lambda: False)
    assert device.cpu_prefers_bf16() is True
