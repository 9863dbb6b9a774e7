"""Hub datasets through the real huggingface_hub client, against the local Hub-compatible test server."""

import io
import json
import time

import httpx
import pytest

from sft_space.config import RunConfig
from sft_space.data import hub_layout, load_dataset_source, load_for_run

from helpers import TINY_FAST, free_port, launched_app, run_cli, use_test_hub
from hub_server import HubServer


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def parquet(rows, row_group_size: int = 1000) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer, row_group_size=row_group_size)  # as Hub parquet exports do
    return buffer.getvalue()


ALPACA = [{"instruction": f"Double {i}", "input": "", "output": str(2 * i)} for i in range(20)]
CHATS = [
    {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}]}
    for i in range(20)
]


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        server.add_repo(
            "acme/recipes",
            {"README.md": "# recipes", "train.jsonl": jsonl(ALPACA[:16]), "test.jsonl": jsonl(ALPACA[16:])},
        )
        server.add_repo("acme/chats", {"data/train-00000-of-00001.parquet": parquet(CHATS)})
        server.add_repo(
            "acme/checked",
            {"train.jsonl": jsonl(CHATS[:14]), "test.jsonl": jsonl(CHATS[14:17]), "challenge.jsonl": jsonl(CHATS[17:])},
        )
        server.add_repo("acme/multi", {"en/train.jsonl": jsonl(CHATS[:10]), "fr/train.jsonl": jsonl(CHATS[10:])})
        server.add_repo("acme/gated", {"train.jsonl": jsonl(CHATS)}, gated=True)
        server.add_repo("acme/private", {"train.jsonl": jsonl(CHATS)}, private=True)
        server.add_repo("acme/scripted", {"scripted.py": "import os", "README.md": "# old style"})
        yield server


@pytest.fixture
def online(hub, monkeypatch, tmp_path):
    use_test_hub(monkeypatch, hub.url, tmp_path / "hf-home")
    return hub


def test_own_test_split_is_the_validation_set(online):
    splits = load_dataset_source("acme/recipes")
    assert (len(splits.train), len(splits.validation)) == (16, 4)
    assert splits.source_format == "alpaca" and "validation = the dataset's own test split" in splits.notes
    assert splits.train[0]["messages"][0]["content"].startswith("Double")
    assert not any(p.endswith("README.md") for p in online.requests if "resolve" in p)  # only data files fetched


def test_a_check_split_is_kept_to_score_beside_the_held_out_rows(online):
    """A split written unlike the training rows (check or challenge) is neither trained on nor the validation set."""
    splits = load_dataset_source("acme/checked")
    assert (len(splits.train), len(splits.validation), len(splits.unlike)) == (14, 3, 3)
    assert splits.unlike[0]["messages"][0]["content"] == "hi 17"
    assert any("check split" in note for note in splits.notes) and splits.unlike_label == "check split"
    assert load_dataset_source("acme/recipes").unlike == []


def test_parquet_without_validation_split_gets_a_seeded_holdout(online):
    splits = load_dataset_source("acme/chats")
    assert (len(splits.train), len(splits.validation)) == (18, 2)
    assert load_dataset_source("acme/chats").validation == splits.validation


def test_a_split_can_be_chosen(online):
    splits = load_dataset_source("acme/recipes", hub_split="test")
    assert len(splits.train) + len(splits.validation) == 4  # trained on test; no other split left to validate on
    with pytest.raises(ValueError, match="has no 'dev' split; it has test, train"):
        load_dataset_source("acme/recipes", hub_split="dev")


def test_subsets_are_listed_and_chosen(online):
    assert hub_layout("acme/multi") == {"en": {"train": ["en/train.jsonl"]}, "fr": {"train": ["fr/train.jsonl"]}}
    french = load_dataset_source("acme/multi", hub_config="fr")
    assert {r["messages"][0]["content"] for r in french.train + french.validation} == {f"hi {i}" for i in range(10, 20)}
    with pytest.raises(ValueError, match="has no subset 'de'; it has en, fr"):
        load_dataset_source("acme/multi", hub_config="de")


def test_a_run_reads_the_commit_it_trained_on_after_main_moves_on(online):
    repo = online.add_repo("acme/moving", {"train.jsonl": jsonl(CHATS[:10])})
    config = RunConfig(dataset="acme/moving", dataset_revision="main")
    trained = load_for_run(config)
    assert trained.revision == repo.sha  # the commit "main" pointed at when the rows were read
    assert load_dataset_source("demo:json-extract").revision is None  # demo sets and files have no commit
    repo.commit({"train.jsonl": jsonl(CHATS[10:])})  # main moves on
    latest = load_for_run(config)
    assert latest.revision == repo.sha != trained.revision and latest.train != trained.train
    again = load_for_run(config, revision=trained.revision)  # as every reader of the finished run asks for it
    assert again.revision == trained.revision
    assert (again.train, again.validation) == (trained.train, trained.validation)
    assert load_for_run(RunConfig(dataset="acme/moving", dataset_revision=trained.revision)).train == trained.train
    preview = load_for_run(config, preview=True, revision=trained.revision)
    assert preview.revision == trained.revision and preview.train[0]["messages"][0]["content"] == "hi 0"


@pytest.mark.parametrize(
    "repo, words",
    [
        ("acme/nothing", "was not found, or it is private or gated and you are not signed in"),
        ("acme/private", "was not found, or it is private or gated and you are not signed in"),
        ("acme/gated", "is gated: accept its conditions at http://127.0.0.1"),
        ("acme/scripted", "built by a loading script, which could run any code and is refused"),
    ],
)
def test_refusals_say_what_is_wrong(online, repo, words):
    with pytest.raises(ValueError, match=words):
        load_dataset_source(repo)


def test_malformed_ids_and_no_network_fail_fast(online, monkeypatch):
    with pytest.raises(ValueError, match="is not a Hub dataset id"):
        hub_layout("not an id")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="switched off here"):
        load_dataset_source("acme/recipes")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    dead = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    monkeypatch.setenv("HF_ENDPOINT", dead)
    started = time.time()
    with pytest.raises(ValueError, match="cannot be reached"):
        load_dataset_source("acme/recipes")
    assert time.time() - started < 15


def test_training_on_a_hub_dataset_from_the_command_line(online, tiny_model, tmp_path):
    flags = list(TINY_FAST)
    flags[flags.index("--dataset") + 1] = "acme/recipes"
    result = run_cli("--model", str(tiny_model), "--max_steps", "2", "--output_dir", str(tmp_path / "run"), *flags)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "16 train rows, 4 validation rows (alpaca -> messages)" in log


def test_preview_reads_a_few_kilobytes_not_the_dataset(online):
    big = [{"instruction": f"Note {i}: " + "x" * 200, "input": "", "output": f"ok {i}"} for i in range(60000)]
    online.add_repo("acme/big-jsonl", {"train.jsonl": jsonl(big)})
    online.add_repo("acme/big-parquet", {"data/train-00000-of-00001.parquet": parquet(big)})
    for repo, size in (("acme/big-jsonl", len(jsonl(big).encode())), ("acme/big-parquet", len(parquet(big)))):
        online.ranges.clear()
        splits = load_dataset_source(repo, preview=True)
        assert splits.preview and len(splits.train) == 50 and splits.source_format == "alpaca"
        assert splits.train[0]["messages"][0]["content"].startswith("Note 0")
        fetched = sum(last - first + 1 for _, first, last in online.ranges)
        assert 0 < fetched < size / 4, (repo, fetched, size)  # a small part of the file
    assert "60000 rows in it" in " ".join(load_dataset_source("acme/big-parquet", preview=True).notes)


def test_the_app_previews_a_hub_dataset(online):
    from gradio_client import Client

    with launched_app() as url:
        client = Client(url, verbose=False)
        counts, table, *_ = client.predict(dataset="acme/multi", dataset_config="en", api_name="/preview_dataset")
        assert "**Preview**" in counts and "the first 10 rows of en/train.jsonl" in counts
        assert [row[1] for row in table["data"]][:2] == ["hi 0", "hi 1"]
        with pytest.raises(Exception, match="was not found, or it is private or gated"):
            client.predict(dataset="acme/private", api_name="/preview_dataset")


def test_a_space_never_reads_the_hub_with_its_owners_token(online, monkeypatch):
    """On a Space, HF_TOKEN is the owner's secret: a visitor's preview, training data and training process read
    the Hub without it, so nobody reaches the owner's gated or private data through the app."""
    from sft_space.runs.queue import training_env

    owner = "hf_spaceOWNERsecretToken000000000"
    online.repos[("dataset", "acme/gated")].allowed_tokens.add(owner)
    monkeypatch.setenv("HF_TOKEN", owner)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert len(load_dataset_source("acme/gated").train) > 0  # a laptop: the user's own token opens what it may
    assert owner in online.tokens and training_env()["HF_TOKEN"] == owner
    monkeypatch.setenv("SPACE_ID", "someone/sft-space")
    seen = len(online.tokens)
    with pytest.raises(ValueError, match="acme/gated is gated: accept its conditions"):
        load_dataset_source("acme/gated")
    assert online.tokens[seen:] and owner not in online.tokens[seen:]
    assert "HF_TOKEN" not in training_env() and "HUGGING_FACE_HUB_TOKEN" not in training_env()


OWNER = "hf_spaceOWNERsecretToken000000000"
OAUTH = {
    "OAUTH_CLIENT_ID": "client-id",
    "OAUTH_CLIENT_SECRET": "client-secret",
    "OPENID_PROVIDER_URL": "http://127.0.0.1:9/openid",  # nothing listens: the sign-in itself is never walked here
    "OAUTH_SCOPES": "openid profile",
}


@pytest.mark.parametrize("configuration", ["SPACE_ID without SYSTEM=spaces", "a Space with OAuth"])
def test_no_visitor_becomes_the_owner_and_the_owners_token_never_leaves(online, monkeypatch, configuration):
    """A copy of the Space run elsewhere (SPACE_ID set, the owner's HF_TOKEN on the machine, no Space OAuth): Gradio
    would mock Sign-in with the machine's token, so a stranger pressing it became the owner's hf: identity and
    Gradio asked the Hub who the owner is at start-up. Sign-in exists only with the Space's real OAuth; in both
    configurations the test Hub never sees the owner's token, whatever a visitor does."""
    from gradio_client import Client

    online.users[OWNER] = "owner"
    monkeypatch.setenv("HF_TOKEN", OWNER)
    monkeypatch.setenv("SPACE_ID", "owner/sft-space")
    if configuration == "a Space with OAuth":
        monkeypatch.setenv("SYSTEM", "spaces")
        import gradio.oauth

        for name, value in OAUTH.items():
            monkeypatch.setenv(name, value)
            if hasattr(gradio.oauth, name):  # read once when gradio is imported (before the Space's are set here)
                monkeypatch.setattr(gradio.oauth, name, value)
    else:
        monkeypatch.delenv("SYSTEM", raising=False)
    seen = len(online.tokens)
    with launched_app() as url:
        page = httpx.get(url).text
        login = httpx.get(f"{url}login/huggingface", follow_redirects=False)
        callback = httpx.get(f"{url}login/callback", follow_redirects=False)
        client = Client(url, verbose=False)
        client.predict(dataset="acme/multi", dataset_config="en", api_name="/preview_dataset")
        with pytest.raises(Exception, match="is gated"):
            client.predict(dataset="acme/gated", api_name="/preview_dataset")
        key = client.predict(api_name="/run_status")
    if configuration == "a Space with OAuth":
        assert '"login"' in page  # the button, with real OAuth routes: the login goes to the provider
        assert login.status_code in (302, 307, 500) and "mock" not in login.headers.get("location", "")
    else:
        assert '"login"' not in page
        assert login.status_code == 404 and callback.status_code == 404  # no mocked sign-in to take
    assert "hf:owner" not in str(key)
    assert online.tokens[seen:] and OWNER not in online.tokens[seen:]
