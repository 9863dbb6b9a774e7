"""The loss head on a device without Triton (a CPU): logits only where a label is.

TRL's SFTTrainer scores every next token through a fused LM head (`add_fused_lm_head`). On CUDA it projects only the
positions that carry a label, with Triton kernels; elsewhere it projects every position (prompt and padding too)
and folds the vocabulary in fp32 torch tiles. With the loss on the answers only, most positions carry no label, and
on a 2-core CPU that head took about a third of each SmolLM2-135M training step.

`compact_lm_head(model)` keeps TRL's head for what it handles specially (Triton devices, pre-shifted labels, scaled
or soft-capped logits, a trainable or biased or wrapped head, MoE router losses) and otherwise answers TRL's
`fused_lm_head=True` call the same way: the backbone, then the head on the labelled positions only (in the head's
dtype, the softmax in fp32, by chunks of tokens), with the same outputs (log-probabilities, entropy and top-1 for
the metrics, the label mask) and the same loss.
"""

from __future__ import annotations

import functools
import types

import torch

TOKEN_CHUNK = 1024  # labelled positions projected at once (bounds the fp32 softmax: 1024 x vocab)


class _LabelLogProbs(torch.autograd.Function):
    """log p(target) of each row of `hidden` under `weight`, plus entropy and top-1 (no gradient).

    The projection runs in the head's own dtype (bf16 weights: a bf16 matmul, as the model's own forward does under
    autocast) and everything after it in fp32. The logits are kept in that dtype for the backward (a labelled token
    costs vocab x 2 bytes in bf16), so the backward only re-normalises them."""

    @staticmethod
    def forward(ctx, hidden, weight, targets):
        ctx.hidden_dtype = hidden.dtype
        hidden = hidden.to(weight.dtype)
        log_probs, entropy, top1, kept = [], [], [], []
        for start in range(0, max(hidden.shape[0], 1), TOKEN_CHUNK):  # one empty chunk when nothing is labelled
            logits = hidden[start : start + TOKEN_CHUNK] @ weight.t()
            log_p = torch.log_softmax(logits.float(), dim=-1)  # log_softmax: 25x faster than logsumexp on a CPU
            t = targets[start : start + TOKEN_CHUNK]
            log_probs.append(log_p.gather(1, t[:, None]).squeeze(1))
            entropy.append(-(log_p.exp() * log_p).sum(-1))
            top1.append(logits.argmax(-1) == t)  # argmax takes the first maximum: a tie does not count
            kept.append(logits)
        ctx.save_for_backward(weight, targets, *kept)
        entropy, top1 = torch.cat(entropy), torch.cat(top1)
        ctx.mark_non_differentiable(entropy, top1)
        return torch.cat(log_probs), entropy, top1

    @staticmethod
    def backward(ctx, grad_log_probs, _grad_entropy, _grad_top1):
        weight, targets, *kept = ctx.saved_tensors
        if grad_log_probs is None or not ctx.needs_input_grad[0]:
            return None, None, None
        grads, start = [], 0
        for logits in kept:
            end = start + logits.shape[0]
            grad = torch.softmax(logits.float(), dim=-1).neg_()  # d log p(t) / d logits = onehot(t) - p
            grad.scatter_add_(1, targets[start:end, None], torch.ones_like(grad[:, :1]))
            grad.mul_(grad_log_probs[start:end, None].float())
            grads.append(grad.to(weight.dtype) @ weight)
            start = end
        return torch.cat(grads).to(ctx.hidden_dtype), None, None


def _scales_logits(text_config) -> bool:
    """Whether the model transforms its logits, or adds a router loss, in a way only TRL's head reproduces."""
    names = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
    scaled = any(getattr(text_config, name, None) not in (None, 1, 1.0) for name in names)
    return scaled or bool(getattr(text_config, "output_router_logits", False))


def compact_lm_head(model) -> bool:
    """Answer TRL's `fused_lm_head=True` forward on the labelled positions only, where TRL's own head would project
    every position (no Triton). Call it after SFTTrainer has added its head. Returns whether it was installed."""
    from trl.trainer.utils import FusedCausalLMOutput

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text_config = base.config.get_text_config()
    code = getattr(getattr(base.forward, "__func__", None), "__code__", None)
    if _scales_logits(text_config) or code is None or "fused_lm_head" not in code.co_varnames:
        return False  # no head of TRL's to answer for, or one whose logits only TRL's head transforms
    trl_forward = base.forward

    @functools.wraps(type(base).forward)  # generate() checks its kwargs against the model's own signature
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        head = self.get_output_embeddings()
        if (
            not fused_lm_head
            or shift_labels is not None
            or type(head) is not torch.nn.Linear  # a PEFT-wrapped or trainable-token head: TRL's handles it
            or head.bias is not None
            or head.weight.requires_grad
            or head.weight.device.type in ("cuda", "xpu")  # TRL's Triton kernels score only labelled positions
        ):
            return trl_forward(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:].to(hidden.device)
        mask = labels != -100
        with torch.autocast(hidden.device.type, enabled=False):
            log_probs, entropy, top1 = _LabelLogProbs.apply(hidden[mask], head.weight, labels[mask])
        # masked_scatter keeps an all-ignored batch connected to the graph: a differentiable zero, as in TRL's head
        log_probs = log_probs.new_zeros(mask.shape).masked_scatter(mask, log_probs)
        entropy = entropy.new_zeros(mask.shape).masked_scatter(mask, entropy)
        top1 = top1.new_zeros(mask.shape).masked_scatter(mask, top1)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / count, log_probs=log_probs, entropy=entropy, is_top1=top1, label_mask=mask
        )

    base.forward = types.MethodType(forward, base)
    return True
