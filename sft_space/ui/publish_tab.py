"""Publish tab: sign in, preview the model card, push the adapter or the merged model (with the GGUF export, on
request), take the tuned model home as GGUF with an Ollama Modelfile, export the run, run it on Hugging Face Jobs.
The token comes from the Sign-in button, a password field or HF_TOKEN, is used for that one call and is never kept:
not in a State, a file or a message. Files are handed to the run's owner only, as per-request copies."""

from __future__ import annotations

import base64
import shutil
import tempfile
import threading
from pathlib import Path

import gradio as gr

from .. import rundir
from ..export import export_run, trl_command, trl_yaml
from ..export import gguf as export_gguf
from ..hub import hub_endpoint
from ..publishing import jobs, publish
from ..publishing.card import loss_curve_png, model_card
from ..runs.cleanup import handed_out_dir
from .common import ENGINE_ERRORS, owned

KINDS = [
    ("LoRA adapter (small; loads on top of the base model)", "adapter"),
    ("Merged model (standalone; base + adapter folded together)", "merged"),
]


def _token(typed: str | None, oauth_token: gr.OAuthToken | None) -> str | None:
    return publish.resolve_token(typed or (oauth_token.token if oauth_token is not None else None))


def _fail(error: Exception, token: str | None):
    raise gr.Error(publish.scrub(str(error), token), print_exception=False) from None


def sign_in_state(profile: gr.OAuthProfile | None = None) -> str:
    if profile is not None:
        return f"Signed in as **{profile.username}**: pushes go to your account."
    return (
        "Not signed in. On a Space, use **Sign in with Hugging Face** at the top; locally, paste a write token "
        "below or set `HF_TOKEN`. The token is used for each push only and never stored."
    )


def card_preview(card: str, run_id: str | None = None) -> str:
    """The card as the Hub shows it: the metadata block as YAML, the rest as Markdown, the loss curve inline (on
    the Hub it is the repo's loss.png; here there is no such file to link to)."""
    if run_id and "](loss.png)" in card:
        image = loss_curve_png(rundir.read_metrics(run_id))
        inline = f"](data:image/png;base64,{base64.b64encode(image).decode()})" if image else ")"
        card = card.replace("](loss.png)", inline)
    if card.startswith("---\n"):
        meta, _, body = card[4:].partition("\n---\n")
        return f"```yaml\n{meta}\n```\n{body}"
    return card


def prepare(run_id: str | None, visitor: str | None):
    """The tab opened: a default repo name and the card preview for the current run."""
    if not run_id:
        return gr.Textbox(), "Train a run (or open one on the Runs tab) to publish it."
    owned(run_id, visitor, "publish")
    name = publish.default_repo_name(run_id)
    return gr.Textbox(value=name), card_preview(model_card(run_id, f"you/{name}"), run_id)


def preview(run_id: str | None, visitor: str | None, name: str, kind: str, with_gguf: bool = False) -> str:
    owned(run_id, visitor, "preview")
    repo = name if "/" in (name or "") else f"you/{name or 'model'}"
    if with_gguf:
        export_gguf.read_report(run_id)  # an export from before reports held their summary lines gets them
    return card_preview(model_card(run_id, repo, merged=kind == "merged", gguf=bool(with_gguf)), run_id)


def push(
    run_id: str | None,
    visitor: str | None,
    name: str,
    private: bool,
    kind: str,
    typed_token: str,
    with_gguf: bool = False,
    oauth_token: gr.OAuthToken | None = None,
    progress=gr.Progress(),
):
    owned(run_id, visitor, "push")
    token = _token(typed_token, oauth_token)
    try:
        record = publish.push_run(
            run_id,
            name,
            token,
            private=bool(private),
            merged=kind == "merged",
            gguf=bool(with_gguf),
            progress=lambda fraction, message: progress(fraction, desc=message),
        )
    except (*ENGINE_ERRORS, OSError) as error:  # shown, not raised: the Retry button appears beside it
        message = publish.scrub(str(error), token)
        gr.Warning(message)
        return gr.Button(visible=True), f"**Push failed:** {message} The run is kept here; press **Retry** when ready."
    text = (
        f"Pushed the {'merged model' if record['kind'] == 'merged' else 'LoRA adapter'} to "
        f"[{record['repo_id']}]({record['url']}) ({'private' if record['private'] else 'public'})"
        + (f", with {', '.join(f'`{f}`' for f in record['gguf'])}" if record.get("gguf") else "")
        + ", one commit."
    )
    return gr.Button(visible=False), text


def export(run_id: str | None, visitor: str | None):
    owned(run_id, visitor, "export")
    try:
        archive = export_run(run_id)
        return trl_command(run_id), trl_yaml(run_id), str(handed_out(archive))
    except ENGINE_ERRORS as error:
        _fail(error, None)


def handed_out(archive: Path) -> Path:
    """A copy of the zip in a fresh temporary folder, which is what the page hands to the visitor: the runs folder
    itself is never served (see launch_kwargs)."""
    folder = Path(tempfile.mkdtemp(prefix="export-", dir=handed_out_dir()))  # removed after an hour (cleanup)
    return Path(shutil.copy2(archive, folder / archive.name))


def handed_out_files(paths: list[Path]) -> list[str]:
    """The files, in one fresh temporary folder of their own (names kept: the Modelfile names its GGUF file), as
    hard links where the file system allows (a GGUF file is hundreds of MB), else copies; removed after an hour."""
    folder = Path(tempfile.mkdtemp(prefix="gguf-", dir=handed_out_dir()))
    handed = []
    for path in paths:
        target = folder / path.name
        try:
            target.hardlink_to(path)
        except OSError:
            shutil.copy2(path, target)
        handed.append(str(target))
    return handed


def _gguf_paths(run_id: str, report: dict) -> list[Path]:
    folder = rundir.gguf_dir(run_id)
    names = [entry["file"] for entry in report.get("files", [])] + [rundir.MODELFILE, "README.md"]
    return [folder / name for name in names if (folder / name).is_file()]


def gguf_report_text(report: dict) -> str:
    if not report.get("files"):
        return ""
    return (
        f"**GGUF export** ({report.get('architecture')}, on {report.get('device', 'this machine')}, "
        f"{report.get('seconds', 0):.0f} s in all):\n\n" + "\n".join(report.get("summary") or [])
    )


def gguf_state(run_id: str | None, visitor: str | None, types: list[str] | None) -> str:
    """Before an export: the size estimate and the disk check for the chosen types, and the last export's result."""
    if not run_id:
        return ""
    owned(run_id, visitor, "export")
    try:
        plan = export_gguf.plan_export(run_id, types)
        text = "Before it starts: " + export_gguf.estimate_text(plan)
    except (*ENGINE_ERRORS, OSError) as error:
        text = f"**Cannot export:** {error}"
    previous = gguf_report_text(export_gguf.read_report(run_id))
    return text + (f"\n\nLast export: {previous}" if previous else "")


# One GGUF export at a time on this machine: each takes the CPU for a minute or more, and two on the same run
# would replace each other's files.
_exporting = threading.Lock()


def export_gguf_files(run_id: str | None, visitor: str | None, types: list[str] | None, progress=gr.Progress()):
    """Write the GGUF file(s) and the Modelfile, load each file back and compare; hand the files to the owner."""
    owned(run_id, visitor, "export")
    if not _exporting.acquire(blocking=False):
        raise gr.Error("Another GGUF export is running on this machine: try again when it has finished.")
    try:
        report = export_gguf.export_gguf(
            run_id, types, progress=lambda fraction, message: progress(fraction, desc=message)
        )
    except (*ENGINE_ERRORS, OSError) as error:
        _fail(error, None)
    finally:
        _exporting.release()
    return gguf_report_text(report), handed_out_files(_gguf_paths(run_id, report))


def submit_job(
    run_id: str | None,
    visitor: str | None,
    name: str,
    flavor: str,
    private: bool,
    typed_token: str,
    oauth_token: gr.OAuthToken | None = None,
    progress=gr.Progress(),
) -> str:
    owned(run_id, visitor, "submit")
    token = _token(typed_token, oauth_token)
    try:
        record = jobs.submit_job(
            run_id,
            name,
            token,
            flavor=flavor,
            private=bool(private),
            progress=lambda fraction, message: progress(fraction, desc=message),
        )
    except (*ENGINE_ERRORS, OSError) as error:
        _fail(error, token)
    return (
        f"Job [{record['job_id']}]({record['url']}) submitted on **{flavor}**; it trains the same run and pushes "
        f"the adapter to [{record['repo_id']}]({hub_endpoint()}/{record['repo_id']}). Press **Job status** to "
        f"follow it."
    )


def job_status(
    run_id: str | None, visitor: str | None, typed_token: str, oauth_token: gr.OAuthToken | None = None
) -> tuple[str, str]:
    owned(run_id, visitor, "follow")
    token = _token(typed_token, oauth_token)
    try:
        report = jobs.job_report(run_id, token)
    except (*ENGINE_ERRORS, OSError) as error:
        _fail(error, token)
    stage = f"Job [{report['job_id']}]({report['url']}): **{report['stage']}**" + (
        f" ({report['message']})" if report.get("message") else ""
    )
    return stage, "\n".join(report["logs"])


def build(current_run: gr.State, visitor: gr.State, tab: gr.Tab) -> None:
    signed = gr.Markdown(sign_in_state(), elem_id="sign-in-state")
    with gr.Row():
        with gr.Column(scale=1):
            name = gr.Textbox(
                label="Repository",
                info="name or owner/name; a bare name goes under your account",
                elem_id="publish-repo",
            )
            kind = gr.Radio(KINDS, value="adapter", label="What to push", elem_id="publish-kind")
            with_gguf = gr.Checkbox(
                value=False,
                label="Also push the GGUF file(s) and Modelfile (export them below first)",
                elem_id="publish-with-gguf",
            )
            private = gr.Checkbox(value=False, label="Private repository")
            token = gr.Textbox(
                label="Hub token (if not signed in)",
                type="password",
                elem_id="publish-token",
                info="A write token from huggingface.co/settings/tokens; used for this call only.",
            )
            with gr.Row():
                push_button = gr.Button("Push to the Hub", variant="primary", elem_id="push")
                retry_button = gr.Button("Retry", visible=False, elem_id="push-retry")
            result = gr.Markdown(elem_id="push-result")
        with gr.Column(scale=2):
            gr.Markdown("**Model card** (README.md of the repo), written from the run:")
            card = gr.Markdown(elem_id="model-card", max_height=600)
    with gr.Accordion("Take it home: GGUF for llama.cpp and Ollama", open=False) as take_home:
        gr.Markdown(
            "The tuned model (base + adapter merged) as one GGUF file, with the tokenizer and the chat template in "
            "its metadata, and an Ollama `Modelfile` beside it. Each file is then loaded back with transformers and "
            "answers the probe prompts next to base + adapter; the comparison shows here."
        )
        with gr.Row():
            gguf_types = gr.CheckboxGroup(
                [(label, kind) for kind, label in export_gguf.TYPES.items()],
                value=[export_gguf.DEFAULT_TYPE],
                label="Weight types",
                elem_id="gguf-types",
                scale=3,
            )
            gguf_button = gr.Button("Export GGUF", variant="primary", elem_id="export-gguf", scale=1)
        gguf_result = gr.Markdown(elem_id="gguf-result")
        gguf_download = gr.File(label="GGUF file(s), Modelfile and README", file_count="multiple")
    with gr.Accordion("Reproduce: export as a TRL command, YAML and a script", open=False):
        export_button = gr.Button("Export this run", elem_id="export")
        command = gr.Code(label="trl sft command", language="shell")
        yaml = gr.Code(label="sft_config.yaml (trl sft --config sft_config.yaml)", language="yaml")
        archive = gr.File(label="Script, YAML and the run's exact data (zip)")
    with gr.Accordion("Run it bigger: Hugging Face Jobs", open=False):
        gr.Markdown(
            "The same run on Hub hardware: the script and the data go to the repository above, a Job trains "
            "there and pushes the adapter to it. Needs a token that may run Jobs (billed to your account)."
        )
        with gr.Row():
            flavor = gr.Dropdown(jobs.JOB_FLAVORS, value="t4-small", label="Hardware flavor", scale=2)
            submit = gr.Button("Submit job", scale=1, elem_id="submit-job")
            follow = gr.Button("Job status", scale=1)
        job = gr.Markdown()
        logs = gr.Textbox(label="Job log (last lines)", lines=8)
    tab.select(sign_in_state, None, signed, api_name=False).then(
        prepare, [current_run, visitor], [name, card], api_name=False
    )
    preview_inputs = [current_run, visitor, name, kind, with_gguf]
    kind.change(preview, preview_inputs, card, api_name=False)
    with_gguf.change(preview, preview_inputs, card, api_name=False)
    name.blur(preview, preview_inputs, card, api_name=False)
    push_inputs = [current_run, visitor, name, private, kind, token, with_gguf]
    push_button.click(push, push_inputs, [retry_button, result], api_name="push_to_hub")
    retry_button.click(push, push_inputs, [retry_button, result], api_name=False)
    export_button.click(export, [current_run, visitor], [command, yaml, archive], api_name="export_run")
    take_home.expand(gguf_state, [current_run, visitor, gguf_types], gguf_result, api_name=False)
    gguf_types.change(gguf_state, [current_run, visitor, gguf_types], gguf_result, api_name=False)
    gguf_button.click(
        export_gguf_files, [current_run, visitor, gguf_types], [gguf_result, gguf_download], api_name="export_gguf"
    )
    submit.click(submit_job, [current_run, visitor, name, flavor, private, token], job, api_name="submit_job")
    follow.click(job_status, [current_run, visitor, token], [job, logs], api_name="job_status")
