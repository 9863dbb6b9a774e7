"""Training on ZeroGPU in GPU slots: the cases in tests/zerogpu/slots_real.py (the real `spaces` package), run in a
fresh interpreter.

Each slot is a process forked from the one that drives it, as on ZeroGPU, and a fork inherits torch's state: once a
process has set torch's thread count (this test session's chat tests do; the app on ZeroGPU never does, its model
work all runs in slots), a new thread of a forked child fails on its first parallel op ("Invalid thread pool!").
So the cases run in an interpreter of their own, like the app's.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.slow
def test_slot_cases_in_a_fresh_interpreter(tmp_path):
    """tests/zerogpu/slots_real.py: the slot runner under the real `spaces` package and a local device API."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "zerogpu" / "slots_real.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0 and "passed" in summary and "failed" not in summary, (
        result.stdout[-6000:] + result.stderr[-2000:]
    )
