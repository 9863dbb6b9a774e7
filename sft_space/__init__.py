"""SFT Space: supervised fine-tuning with LoRA, from data to a tuned model you can chat with.

The engine modules (config, data, models, bundled, train, runs, chat, evaluate,
baselines, publish, card, export, jobs) never import Gradio; `sft_space.ui` is the only user interface layer.
This module holds what they all share: where files live and how the Hub is reached.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

__version__ = "0.1.0"


def home() -> Path:
    """Where runs and converted models live: $SFT_SPACE_HOME, else /data on a Space with storage, else ~/.cache."""
    configured = os.environ.get("SFT_SPACE_HOME")
    if configured:
        path = Path(configured)
    elif os.path.isdir("/data") and os.access("/data", os.W_OK):
        path = Path("/data/sft_space")  # a Space's persistent storage survives restarts
    else:
        path = Path.home() / ".cache" / "sft_space"
    path.mkdir(parents=True, exist_ok=True)
    return path


# Long work reports (fraction done 0..1, what it is doing) through a callable of this type; the UI passes one
# that moves a progress bar, scripts the default that does nothing.
Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """The Progress of callers that show none."""


# owner/name, as the Hub spells a model or dataset repository (a local path that exists is never taken for one)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

HUB_TIMEOUT_SECONDS = 10  # a Hub that does not answer in this time is treated as unreachable


def hub_endpoint() -> str:
    """HF_ENDPOINT, read when used (tests and mirrors point it elsewhere), else the public Hub."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def network_error(error: BaseException) -> bool:
    """A failure to reach the server (DNS, refused, timeout), from whichever HTTP library the Hub client uses."""
    library = type(error).__module__.split(".")[0].rstrip("0123456789")  # httpx, httpx2, httpcore2, requests...
    return isinstance(error, (OSError, TimeoutError)) or library in ("httpx", "httpcore", "requests", "urllib3")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE: the Hub is switched off, so Hub ids must fail fast with a message."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
