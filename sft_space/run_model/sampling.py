"""The next token from one position's logits, as transformers' generate chooses it (repetition penalty, min new
tokens, temperature, top-k, top-p, in its order), without sorting the whole vocabulary for each token.

generate's top-p sorts all of the vocabulary's logits and draws from all of them: about 6 ms a token for a
49,152-token vocabulary on a 2-core CPU, a third of a reply's time at SmolLM2-135M's size. Here the nucleus is
found among the CANDIDATES likeliest tokens (torch.topk) whenever they hold the top-p mass, which they do unless
the distribution is nearly flat (then the whole vocabulary is sorted, as generate does): the same tokens are
kept with the same probabilities; only the random draws differ from generate's, so a seed gives another (equally
likely) reply than generate would. One difference on exact ties: top-k keeps exactly k tokens where generate also
keeps every token whose logit equals the k-th's.
"""

from __future__ import annotations

from typing import Any

CANDIDATES = 256
HANDLED = {
    "RepetitionPenaltyLogitsProcessor",
    "MinNewTokensLengthLogitsProcessor",
    "TemperatureLogitsWarper",
    "TopKLogitsWarper",
    "TopPLogitsWarper",
}


class Sampler:
    """Chooses each next token for one reply. `config`: the generation config generate would use."""

    def __init__(self, config: Any, eos_token_ids: list[int]) -> None:
        import torch

        sample = bool(config.do_sample)
        self.sample = sample
        self.penalty = float(config.repetition_penalty or 1.0)
        self.min_new = int(config.min_new_tokens or 0)
        self.eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long)
        temperature = config.temperature
        self.temperature = float(temperature) if sample and temperature not in (None, 1.0) else 1.0
        self.top_k = int(config.top_k) if sample and config.top_k else 0
        top_p = config.top_p
        self.top_p = float(top_p) if sample and top_p is not None and top_p < 1.0 else 1.0

    def __call__(self, logits, sequence, produced: int) -> int:
        """logits: fp32 [vocabulary] for the next position; sequence: [1, tokens so far] (prompt included);
        produced: tokens of the reply so far."""
        import torch

        index, probs = self.distribution(logits, sequence, produced)
        if probs is None:
            return int(index)
        return int(index[torch.multinomial(probs, num_samples=1)])

    def distribution(self, logits, sequence, produced: int):
        """(token ids, their probabilities) the next token is drawn from; (the token, None) when greedy."""
        import torch

        scores = logits.clone()
        if self.penalty != 1.0:
            seen = sequence[0]
            score = scores.gather(0, seen)
            score = torch.where(score < 0, score * self.penalty, score / self.penalty)
            scores.scatter_(0, seen, score)
        if produced < self.min_new:
            scores[self.eos] = float("-inf")
        if not self.sample:
            return torch.argmax(scores), None
        if self.temperature != 1.0:
            scores = scores / self.temperature
        size = scores.shape[0]
        if not self.top_k and self.top_p >= 1.0:
            return torch.arange(size), torch.softmax(scores, dim=0)
        values, index = torch.topk(scores, min(self.top_k or CANDIDATES, size))
        if self.top_k:
            probs = torch.softmax(values, dim=0)  # everything outside the top k has probability 0
        else:
            probs = torch.exp(values - torch.logsumexp(scores, dim=0))
        if self.top_p < 1.0:
            cumulative = probs.cumsum(0)
            if not self.top_k and cumulative[-1] < self.top_p:  # a nearly flat distribution: sort it all
                values, index = torch.sort(scores, descending=True)
                probs = torch.softmax(values, dim=0)
                cumulative = probs.cumsum(0)
            keep = max(int(((cumulative - probs) < self.top_p).sum()), 1)  # generate's rule: at least one
            probs, index = probs[:keep], index[:keep]
        return index, probs
