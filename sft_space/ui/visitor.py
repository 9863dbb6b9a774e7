"""Who is looking: a visitor key that keeps strangers' runs apart.

Signed in with Hugging Face, the key is `hf:<username>`, taken only from the
sign-in (OAuth) profile. Otherwise it is `browser:<random id>`; the browser keeps
that id with the server's signature (gr.BrowserState), so a page refresh still
sees its own runs, and a value the server did not sign (typed in, edited, or
`hf:someone`) is replaced by a fresh id. The signature never reaches a run
directory: runs record the unsigned key. Script clients (gradio_client) get an
id for their session on their first run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import uuid

import gradio as gr

from .. import home

SECRET_FILE = ".visitor_secret"  # in $SFT_SPACE_HOME, readable by the app only; SFT_SPACE_SECRET overrides it
SIGNED_ID = re.compile(r"^browser:([0-9a-f]{32})\.([0-9a-f]{64})$")


def _secret() -> bytes:
    configured = os.environ.get("SFT_SPACE_SECRET")
    if configured:
        return configured.encode()
    path = home() / SECRET_FILE
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # a race loses to the first writer
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex())
    return path.read_text().strip().encode()


def _signature(raw: str) -> str:
    return hmac.new(_secret(), raw.encode(), hashlib.sha256).hexdigest()


def new_visitor() -> tuple[str, str]:
    """(visitor key, signed id for the browser to keep) for a new anonymous visitor."""
    raw = uuid.uuid4().hex
    return f"browser:{raw}", f"browser:{raw}.{_signature(raw)}"


def new_visitor_id() -> str:
    """A visitor key for a script client's session (kept server-side, so it needs no signature)."""
    return new_visitor()[0]


def verified_key(signed_id) -> str | None:
    """The visitor key in a signed id the browser sent back, or None when the server did not sign it."""
    match = SIGNED_ID.match(signed_id) if isinstance(signed_id, str) else None
    if match and hmac.compare_digest(match.group(2), _signature(match.group(1))):
        return f"browser:{match.group(1)}"
    return None


OAUTH_VARIABLES = ("SPACE_ID", "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OPENID_PROVIDER_URL")


def real_oauth() -> bool:
    """Sign in with Hugging Face is real only on a Space with OAuth configured (SYSTEM=spaces and the variables the
    Space gets from `hf_oauth: true`). Elsewhere Gradio's sign-in is a mock that hands every visitor the machine's
    own Hub identity (and asks the Hub who it is, with the machine's token): no Sign-in button, no hf: identity."""
    return os.environ.get("SYSTEM") == "spaces" and all(os.environ.get(name) for name in OAUTH_VARIABLES)


def identify(browser_id: str | None, profile: gr.OAuthProfile | None = None):
    """(visitor key for this session, signed id to keep in the browser)."""
    key = verified_key(browser_id)
    if key is None:
        key, browser_id = new_visitor()
    if profile is not None and getattr(profile, "username", None) and real_oauth():
        return f"hf:{profile.username}", browser_id
    return key, browser_id


def address(request: gr.Request | None) -> str | None:
    """Where a request comes from, as a keyed hash (no address is stored): anonymous visitors share a quota per
    address, so minting new ids does not buy more runs. On a Space the proxy in front appends the address it saw
    to X-Forwarded-For (the last entry; earlier ones are whatever the client claimed); elsewhere the socket's peer."""
    if request is None:
        return None
    forwarded = (request.headers or {}).get("x-forwarded-for") if os.environ.get("SPACE_ID") else None
    host = forwarded.split(",")[-1].strip() if forwarded else getattr(getattr(request, "client", None), "host", None)
    return "address:" + _signature("address:" + host)[:24] if host else None
