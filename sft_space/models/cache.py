"""The local Hub cache: where downloaded models live, and which of their files are kept.

Owns the cache folder under $SFT_SPACE_HOME, the file patterns a model download
keeps (safetensors weights, configs, tokenizer files and templates; never
pickles), and finding a model downloaded earlier without the network. It knows
nothing about checking a model, downloading it or loading it.
"""

from __future__ import annotations

from pathlib import Path

from .. import home

# Only what loading needs: weights as safetensors, configs, tokenizer files, templates. Never pickles.
DOWNLOAD_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.jinja",
    "tokenizer*",
    "*.model",
    "*.tiktoken",
    "merges.txt",
    "vocab.txt",
    "README.md",
]


def model_cache_dir() -> Path:
    return home() / "hub"


def cached_snapshot(repo_id: str) -> Path | None:
    """A model downloaded earlier (or baked into the image), usable offline; None if there is none."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id, cache_dir=str(model_cache_dir()), allow_patterns=DOWNLOAD_PATTERNS, local_files_only=True
            )
        )
    except Exception:  # not cached: LocalEntryNotFoundError and friends
        return None
