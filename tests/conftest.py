"""Shared fixtures: an isolated SFT_SPACE_HOME and a tiny Llama model built locally (no network).

The environment is set here, before any test module imports the app; helpers.py holds the functions tests share.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Every test process and every training process it starts sees this home, never the user's: a fresh, empty folder
# (named by the process id alone, a folder left by an earlier session whose process had the same id was reused,
# and its runs without an owner showed on a newcomer's page)
if "SFT_SPACE_HOME" not in os.environ:
    _parent = Path(os.environ.get("PYTEST_SFT_HOME", "/tmp"))
    _parent.mkdir(parents=True, exist_ok=True)
    os.environ["SFT_SPACE_HOME"] = tempfile.mkdtemp(prefix=f"sft-space-tests-{os.getpid()}-", dir=_parent)
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from helpers import TINY_FAST, build_tiny_model, run_cli  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def sft_home() -> Path:
    path = Path(os.environ["SFT_SPACE_HOME"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def trained_run(tiny_model, tmp_path_factory) -> Path:
    """A 3-step run of the tiny model through the command line, shared by the tests that inspect it."""
    run_dir = tmp_path_factory.mktemp("runs") / "cli-run"
    result = run_cli("--model", str(tiny_model), "--max_steps", "3", "--output_dir", str(run_dir), *TINY_FAST)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session", autouse=True)
def no_training_process_outlives_the_tests():
    """A test that fails midway leaves its run training; at the end every process the app started here goes, so
    the next test session (or benchmark) does not share the CPU with it."""
    yield
    from sft_space.runs import liveness

    for child in list(liveness._children.values()):
        if child.poll() is None:
            child.kill()
            child.wait()
