"""Reaching the Hugging Face Hub: shared by data (datasets), models (model facts and downloads) and publish.

Owns where the Hub is (HF_ENDPOINT, read when used, so tests and mirrors point
it elsewhere), the offline switch (HF_HUB_OFFLINE), how long a call may wait,
what an owner/name id looks like, what counts as "cannot be reached", and the
one translation of a failed read into a message that says what to do. Writes
(pushes, Jobs) translate their own failures in publish: a refused token there
means something else. Imports huggingface_hub only inside functions.
"""

from __future__ import annotations

import os
import re

# owner/name, as the Hub spells a model or dataset repository (a local path that exists is never taken for one)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_TIMEOUT_SECONDS = 10  # a Hub that does not answer in this time is treated as unreachable


def hub_endpoint() -> str:
    """HF_ENDPOINT, read when used (tests and mirrors point it elsewhere), else the public Hub."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE: the Hub is switched off, so Hub ids must fail fast with a message."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def network_error(error: BaseException) -> bool:
    """A failure to reach the server (DNS, refused, timeout), from whichever HTTP library the Hub client uses."""
    library = type(error).__module__.split(".")[0].rstrip("0123456789")  # httpx, httpx2, httpcore2, requests...
    return isinstance(error, (OSError, TimeoutError)) or library in ("httpx", "httpcore", "requests", "urllib3")


def on_a_space() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def public() -> bool:
    """Hosted for strangers: on a Space, or started with `app.py --public` (SFT_SPACE_PUBLIC=1). Then visitors'
    paths are confined, the machine's Hub token is never lent, runs without an owner are nobody's, and the
    quotas apply."""
    return on_a_space() or os.environ.get("SFT_SPACE_PUBLIC", "").lower() in ("1", "true", "yes")


def read_token(token: str | None = None) -> str | bool | None:
    """The token a Hub read sends: the visitor's own when given; on a Space never the Space's own HF_TOKEN (False:
    no token at all), so a stranger cannot read the owner's private or gated models and data through the app;
    elsewhere None (huggingface_hub's usual: the machine's login or HF_TOKEN, which is the user's own)."""
    if token:
        return token
    return False if public() else None


def has_read_token(token: str | None = None) -> bool:
    """Whether a Hub read would send any token (see read_token)."""
    from huggingface_hub import get_token

    chosen = read_token(token)
    return bool(chosen) or (chosen is None and get_token() is not None)


def repo_url(repo_id: str, kind: str = "model") -> str:
    return f"{hub_endpoint()}/{'datasets/' if kind == 'dataset' else ''}{repo_id}"


def read_error(error: Exception, repo_id: str, kind: str = "model", revision: str | None = None) -> ValueError | None:
    """A readable ValueError for a failed read of a Hub repo (kind: model or dataset), or None for unexpected ones.

    Gated, missing (or private), an unknown revision, refused, out of reach: each says what to do next."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, GatedRepoError):
        return ValueError(
            f"{repo_id} is gated: accept its conditions at {repo_url(repo_id, kind)}, then sign in with that account "
            "(or set HF_TOKEN)."
        )
    if isinstance(error, RevisionNotFoundError):
        return ValueError(f"{repo_id} has no revision {revision!r}: use a branch, tag or commit that exists.")
    if isinstance(error, RepositoryNotFoundError):
        return ValueError(
            f"{kind.capitalize()} {repo_id} was not found, or it is private or gated and you are not signed in: "
            "check the id (owner/name), or sign in with an account that can read it."
        )
    if isinstance(error, HfHubHTTPError):
        code = error.response.status_code if error.response is not None else "?"
        return ValueError(f"The Hub refused {repo_id} ({code}): {str(error).splitlines()[0]}")
    if network_error(error):
        instead = "a demo set or an uploaded file" if kind == "dataset" else "the bundled model or a local folder"
        return ValueError(
            f"The Hugging Face Hub at {hub_endpoint()} cannot be reached ({type(error).__name__}): "
            f"check the network, or use {instead}."
        )
    return None
