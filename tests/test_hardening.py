"""A stranger's work in the shared app process stays bounded ([hardening]): uploads per request, regexes, templates,
rows read from an upload, previews; each against the launched app, with the public host's limits in force."""

import os

import httpx
import pytest

from helpers import launched_app


@pytest.fixture(scope="module")
def app_url():
    with launched_app() as url:
        yield url


@pytest.fixture
def public(monkeypatch):
    monkeypatch.setenv("SFT_SPACE_PUBLIC", "1")


def upload(url: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    return httpx.post(
        f"{url}gradio_api/upload", files=[("files", (name, data, "application/json")) for name, data in files]
    )


def test_one_upload_request_carries_one_file_of_the_capped_size(app_url, public, monkeypatch):
    """Gradio caps one file's size; a script posting three at once (each under the cap) is refused with 413 and
    the reason, a declared length over the cap is refused before anything is read, and one file still uploads."""
    monkeypatch.setenv("SFT_SPACE_UPLOAD_MB", "1")
    row = b'{"prompt": "hi", "completion": "there"}\n'
    part = row * (400_000 // len(row))
    three = upload(app_url, [(f"f{i}.jsonl", part) for i in range(3)])
    assert three.status_code == 413 and "at most 1 file(s)" in three.text
    big = upload(app_url, [("big.jsonl", part * 4)])
    assert big.status_code == 413 and "at most 1 file(s) and 1 MB" in big.text
    one = upload(app_url, [("one.jsonl", part)])
    assert one.status_code == 200, one.text
    (path,) = one.json()
    assert os.path.getsize(path) == len(part)
