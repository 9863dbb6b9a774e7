"""A run's model as loaded for chat and evaluation: base + adapter, its tokenizer, settings and dtype."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import RunConfig


@dataclass
class LoadedChatModel:
    key: str
    model: Any  # a PeftModel (base + adapter) or a plain base model
    tokenizer: Any
    config: RunConfig
    has_adapter: bool
    dtype: str = "float32"
    merge: bool = True  # False: tuned replies run through the unmerged LoRA layers (slower; for comparison)

    @property
    def merged(self) -> bool:
        """Whether the adapter is in the weights now (PEFT takes it out by itself when the adapter is disabled)."""
        return any(getattr(m, "merged", False) for m in self.model.modules() if hasattr(m, "merged_adapters"))
