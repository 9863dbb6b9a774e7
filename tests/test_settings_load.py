"""Load settings: a run's settings, the Reproduce export (zip, sft_config.yaml) or a config.json back into the
forms. The round trip (export, load, the same settings), refusals by name, and the whole thing in Chromium: a
file fills the Train fields, a bad one changes nothing, a run trained from the page comes back with "Use these
settings" on the Runs tab."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from sft_space.config import RunConfig
from sft_space.export import export_run, settings_in
from sft_space.rundir import read_config

from helpers import app_page, launched_app, open_loader, page_run_id, short_run_file, wait_until


def test_export_then_load_gives_the_same_settings(trained_run, tmp_path):
    archive = export_run(trained_run)
    config, notes, given = settings_in.from_file(archive)
    assert config.to_dict() == read_config(trained_run).to_dict()
    assert notes == [] and given == set(RunConfig().to_dict())
    with zipfile.ZipFile(archive) as zipped:  # the YAML alone (TRL's names): the recipe's settings, the rest named
        yaml_text = zipped.read("sft_config.yaml").decode()
    (tmp_path / "sft_config.yaml").write_text(yaml_text)
    from_yaml, notes, given = settings_in.from_file(tmp_path / "sft_config.yaml")
    original = read_config(trained_run)
    for name in ("learning_rate", "lora_r", "lora_alpha", "lora_dropout", "max_length", "max_steps", "logging_steps",
                 "per_device_train_batch_size", "lora_target_modules", "answers_only"):  # fmt: skip
        assert getattr(from_yaml, name) == getattr(original, name), name
    assert "model" in given and "dataset" not in given  # the export's own data folder is not a dataset here
    assert any(note.startswith("dataset_name: not taken") for note in notes)
    assert any(note.startswith("output_dir: not taken") for note in notes)


def test_bad_files_are_refused_by_name(tmp_path):
    cases = {
        "typo.yaml": ("learning_rat: 0.001\nlora_r: 8\n", "learning_rat"),
        "range.yaml": ("lora_r: -3\n", "lora_r"),
        "type.yaml": ("learning_rate: fast\n", "learning_rate"),
        "code.yaml": ("!!python/object/apply:os.system ['touch /tmp/owned']\n", "does not parse"),
        "list.yaml": ("- 1\n- 2\n", "one mapping"),
        "config.json": (json.dumps({"lora_r": 8, "secret_field": 1}), "secret_field"),
        "broken.json": ("{nope", "does not parse"),
        "notes.txt": ("lora_r: 8", "load a sft_config.yaml"),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=expected):
            settings_in.from_file(tmp_path / name)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * settings_in.MAX_BYTES)
    with pytest.raises(ValueError, match="at most"):
        settings_in.from_file(big)
    bomb = tmp_path / "bomb.zip"  # a member that declares more than a settings file ever is: not read
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr(settings_in.CONFIG_NAME, "{" + " " * (settings_in.MAX_BYTES + 10) + "}")
    with pytest.raises(ValueError, match="at most"):
        settings_in.from_file(bomb)
    (tmp_path / "plain.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a zip"):
        settings_in.from_file(tmp_path / "plain.zip")


def test_on_a_public_space_a_folder_model_is_refused_by_name(monkeypatch, tmp_path):
    import gradio as gr

    from sft_space.ui import common, settings_load

    monkeypatch.setattr(common, "public", lambda: True)
    (tmp_path / "config.json").write_text(json.dumps({"model": "/srv/some/folder", "lora_r": 8}))
    with pytest.raises(gr.Error, match="base model is the bundled one or a Hub model id"):
        settings_load.use_file(str(tmp_path / "config.json"), "visitor-a")
    with pytest.raises(gr.Error):  # another visitor's run (or none): not read
        settings_load.use_run("run-20990101-000000-abcdef", "visitor-a")


pytestmark_browser = pytest.mark.skipif(
    not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)"
)


@pytestmark_browser
def test_load_settings_in_the_page(tiny_model, tmp_path):
    shots = tmp_path
    good = tmp_path / "sft_config.yaml"
    good.write_text("learning_rate: 0.000321\nlora_r: 8\nper_device_train_batch_size: 3\noutput_dir: elsewhere\n")
    bad = tmp_path / "bad_config.yaml"
    bad.write_text("learning_rat: 0.5\n")
    # a run's config.json: every field, here a 2-step run of the tiny model
    short_run = short_run_file(tmp_path / "config.json", str(tiny_model), learning_rate=0.000777, lora_r=4)
    with launched_app() as url, app_page(url) as page:
        page.get_by_role("tab", name="3 Train").click()
        open_loader(page)
        page.get_by_role("button", name="Learning rate").first.click()
        page.get_by_role("button", name="LoRA").first.click()
        lr, rank = page.locator("#cfg-learning_rate input"), page.locator("#cfg-lora_r input")
        before = lr.input_value()

        page.locator("#settings-file input[type=file]").set_input_files(str(bad))
        page.wait_for_selector("text=learning_rat", timeout=20_000)  # the error names the key
        page.screenshot(path=str(shots / "refused.png"))
        assert lr.input_value() == before and "Traceback" not in page.content()

        page.reload()
        page.wait_for_selector("text=SFT Space", timeout=30_000)
        page.get_by_role("tab", name="3 Train").click()
        open_loader(page)
        page.get_by_role("button", name="Learning rate").first.click()
        page.get_by_role("button", name="LoRA").first.click()
        page.locator("#settings-file input[type=file]").set_input_files(str(good))
        page.wait_for_selector("#settings-note >> text=Loaded from sft_config.yaml", timeout=20_000)
        wait_until(lambda: float(lr.input_value()) == 0.000321, timeout=10, what="learning rate filled")
        assert rank.input_value() == "8"
        note = page.locator("#settings-note").inner_text()
        assert "output_dir: not taken" in note and "Nothing started" in note
        page.screenshot(path=str(shots / "loaded-yaml.png"))

        # a run trained from the page, then its settings back from the Runs tab after a change here
        page.locator("#settings-file input[type=file]").set_input_files(str(short_run))
        wait_until(lambda: float(lr.input_value()) == 0.000777, timeout=15, what="config.json loaded")
        page.get_by_role("tab", name="2 Model").click()
        assert page.locator("#model input").input_value() == str(tiny_model)  # the Model tab's form too
        page.get_by_role("tab", name="3 Train").click()
        page.locator("#start").click()
        page.wait_for_selector("#run-bar >> text=completed", timeout=240_000)
        lr.fill("0.05")
        lr.press("Tab")
        page.get_by_role("tab", name="Runs").click()
        run_id = page_run_id(page)
        choice = page.locator("#open-run input")
        choice.fill(run_id)
        choice.press("Enter")
        page.locator("#runs-use-settings").click()
        page.get_by_role("tab", name="3 Train").click()
        wait_until(lambda: float(lr.input_value()) == 0.000777, timeout=20, what="the run's settings back")
        assert rank.input_value() == "4"
        page.screenshot(path=str(shots / "from-run.png"))


def test_hostile_files_cost_nothing_and_say_why(tmp_path):
    bomb = (
        "output_dir: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"o{i}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8)
        )
        + "warmup_steps: *i\n"
    )
    cases = {
        "aliases.yaml": (bomb, "anchors and aliases"),
        "nested.yaml": ("learning_rate: {a: 1}\n", "plain value"),
        "deep.json": ("[" * 100_000 + "]" * 100_000, "could not be read|one object"),
        "huge.json": (json.dumps({"lora_r": 10**400}), "lora_r|could not be read"),
        "settings.json": (json.dumps({"sft_settings": [1], "lora_settings": "x"}), "Unknown setting"),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=expected):
            settings_in.from_file(tmp_path / name)
    crowded = tmp_path / "crowded.zip"
    with zipfile.ZipFile(crowded, "w") as zipped:
        for i in range(settings_in.MAX_ZIP_ENTRIES + 1):
            zipped.writestr(f"f{i}.txt", "")
    with pytest.raises(ValueError, match="more than"):
        settings_in.from_file(crowded)
    big = tmp_path / "big.zip"
    big.write_bytes(b"PK" + b"\0" * (settings_in.MAX_ZIP_BYTES + 1))
    with pytest.raises(ValueError, match="at most"):
        settings_in.from_file(big)
