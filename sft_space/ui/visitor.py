"""Who is looking: a visitor key that keeps strangers' runs apart.

Signed in with Hugging Face, the key is the Hub username; otherwise a random id
the browser keeps (gr.BrowserState), so a page refresh still sees its own runs.
Script clients (gradio_client) get an id for their session on their first run.
"""

from __future__ import annotations

import uuid

import gradio as gr


def new_visitor_id() -> str:
    return f"browser:{uuid.uuid4().hex}"


def identify(browser_id: str | None, profile: gr.OAuthProfile | None = None):
    """(visitor key for this session, id to keep in the browser)."""
    browser_id = browser_id or new_visitor_id()
    if profile is not None and getattr(profile, "username", None):
        return f"hf:{profile.username}", browser_id
    return browser_id, browser_id
