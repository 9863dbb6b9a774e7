"""SFT Space: supervised fine-tuning with LoRA, from data to a tuned model you can chat with.

The engine modules (config, data, models, bundled, train, runs, chat, evaluate)
never import Gradio; `sft_space.ui` is the only user interface layer.
"""

from __future__ import annotations

import os
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
