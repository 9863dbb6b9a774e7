"""The CPU loss head (sft_space.training.lm_head): the same loss, metrics and gradients as TRL's fused head, from the
labelled positions only."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import ROOT, build_tiny_model


def _peft_model(folder, dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer adds it
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    for name, param in model.named_parameters():  # LoRA B starts at zero: give it values so every grad is non-zero
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return model


def _batch(folder):
    """Two chat rows of different lengths, right-padded; labels only on the answers (prompt and padding -100)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = [json.loads(line)["messages"] for line in open(folder / "rows.jsonl")]
    ids, labels = [], []
    for messages in rows:
        text = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False)
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        full = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
        ids.append(full)
        labels.append([-100] * len(prompt) + full[len(prompt) :])
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id
    return dict(
        input_ids=torch.tensor([row + [pad] * (width - len(row)) for row in ids]),
        attention_mask=torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids]),
        labels=torch.tensor([row + [-100] * (width - len(row)) for row in labels]),
    )


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_folder(request, tmp_path_factory):
    """llama: an untied head; qwen2: the head tied to the embeddings."""
    folder = build_tiny_model(tmp_path_factory.mktemp(request.param), architecture=request.param)
    rows = (ROOT / "sft_space" / "demo_data" / "json-extract.train.jsonl").read_text().splitlines()
    (folder / "rows.jsonl").write_text("\n".join([rows[0], rows[2]]))  # a short and a longer conversation
    return folder


def _forward_backward(model, batch):
    out = model(**batch, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_same_loss_metrics_and_gradients_as_trls_head(model_folder, dtype):
    from sft_space.training.lm_head import compact_lm_head

    batch = _batch(model_folder)
    assert (batch["labels"] == -100).float().mean() > 0.4  # prompts and padding: most positions carry no label
    theirs, their_grads = _forward_backward(_peft_model(model_folder, dtype), batch)
    ours_model = _peft_model(model_folder, dtype)
    assert compact_lm_head(ours_model)
    ours, our_grads = _forward_backward(ours_model, batch)

    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.05, rtol=0.05)
    assert torch.isfinite(ours.loss) and ours.loss > 0
    torch.testing.assert_close(ours.loss.float(), theirs.loss.float(), **tol)
    torch.testing.assert_close(ours.log_probs.float(), theirs.log_probs.float(), **tol)
    torch.testing.assert_close(ours.entropy.float(), theirs.entropy.float(), **tol)
    assert torch.equal(ours.label_mask, theirs.label_mask)
    if dtype == torch.float32:
        assert torch.equal(ours.is_top1, theirs.is_top1)
    assert (ours.log_probs[~ours.label_mask] == 0).all() and (ours.entropy[~ours.label_mask] == 0).all()
    assert set(our_grads) == set(their_grads) and our_grads
    for name, grad in our_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad.float(), their_grads[name].float(), **tol, msg=name)


def test_a_batch_without_labels_gives_a_differentiable_zero(model_folder):
    from sft_space.training.lm_head import compact_lm_head

    model = _peft_model(model_folder, torch.float32)
    compact_lm_head(model)
    batch = _batch(model_folder)
    batch["labels"][:] = -100
    out = model(**batch, fused_lm_head=True)
    out.loss.backward()
    assert out.loss.item() == 0.0 and not out.label_mask.any()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad and p.grad is not None)


def test_generation_is_untouched(model_folder):
    """Without fused_lm_head the model's own forward answers: generate() gives the same tokens as before."""
    from sft_space.training.lm_head import compact_lm_head

    batch = _batch(model_folder)
    model = _peft_model(model_folder, torch.float32)
    before = model.generate(input_ids=batch["input_ids"][:1, :8], max_new_tokens=6, do_sample=False)
    compact_lm_head(model)
    after = model.generate(input_ids=batch["input_ids"][:1, :8], max_new_tokens=6, do_sample=False)
    assert torch.equal(before, after)


def test_scaled_logits_stay_with_trls_head(tmp_path):
    """A model whose logits are soft-capped (Gemma 2 style) is left to TRL's head, which reproduces the cap."""
    from sft_space.training.lm_head import compact_lm_head

    model = _peft_model(build_tiny_model(tmp_path / "m"), torch.float32)
    trl_forward = model.get_base_model().forward
    model.get_base_model().config.final_logit_softcapping = 30.0
    assert not compact_lm_head(model)
    assert model.get_base_model().forward == trl_forward


def test_short_rows_train_with_plain_attention_on_a_cpu_with_the_same_loss(model_folder, trained_run):
    """On a CPU plain attention is faster for short rows: chosen up to 256 tokens, the loss of a padded batch equal
    to SDPA's; the CLI run (max_length 128) trained with it and says so in its status."""
    from sft_space.models import training_attention

    assert training_attention("cpu", 256) == "eager"
    assert training_attention("cpu", 512) is None and training_attention("cuda", 128) is None
    batch = _batch(model_folder)
    losses = {}
    for attention in ("sdpa", "eager"):
        model = _peft_model(model_folder, torch.float32)
        model.get_base_model().set_attn_implementation(attention)
        losses[attention] = model(**batch, fused_lm_head=True).loss
    torch.testing.assert_close(losses["eager"], losses["sdpa"], atol=1e-5, rtol=1e-5)
    assert json.loads((trained_run / "status.json").read_text())["attention"] == "eager"
    assert json.loads((trained_run / "status.json").read_text())["lm_head"] == "labelled positions only"
