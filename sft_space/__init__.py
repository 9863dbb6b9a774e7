"""SFT Space: supervised fine-tuning with LoRA, from data to a tuned model you can chat with.

The engine modules never import Gradio; `sft_space.ui` is the only user interface layer (docs/ARCHITECTURE.md
has the layout). This module holds what they all share: where files live (home) and how long work reports its
progress (Progress); `hub` holds how the Hub is reached.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__version__ = "0.1.0"

# In the home folder while the app generates (chat, evaluation) beside a run training on the CPU: the training
# process then trains on one thread less (written by chat, read by callbacks).
GENERATING_MARK = "generating"
GENERATING_MARK_FRESH_SECONDS = 600  # an older mark was left by an app that died mid-reply: ignored
# Touched while the page serves many requests at once beside a run training on the CPU (ui.busy.BusyMark): the
# training process trains on one thread less while it is this fresh, so twenty visitors are answered promptly.
SERVING_MARK = "serving"
SERVING_MARK_FRESH_SECONDS = 3


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
