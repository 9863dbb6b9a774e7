"""A run's model, in one room: everything the app does with a trained run's base model and adapter.

- loading.py: base + adapter with the run's tokenizer; for chat and evaluation once per run in the fastest dtype
  (`load_chat_model`, cached; `unload`), for a merge or an export in the weights' dtype (`load_base_and_adapter`);
- merging.py: the adapter merged exactly for tuned replies and taken out bit for bit for base ones
  (`merge_exactly`, `unmerge_exactly`), the model held for one reply or pass at a time (`answering_as`);
- thread.py: the one generation thread all model work of the app runs on (`on_generation_thread`);
- decoding.py: greedy and batched decoding (`generate_batch`, `generate_many`, `generate_once`, `greedy_each`),
  a conversation as input (`build_inputs`), the run's probe conversations (`probe_conversations`);
- loss.py: the answer loss on held-out conversations (`answer_loss`, `heldout_loss`);
- chat.py: replies streamed with the chat template, as the tuned or the base model.

Chat (streamed replies), Evaluate, the prompting baselines, the probes during training, the merged push and the
GGUF export all use it; none loads a model or decodes on its own. torch, transformers and peft are imported inside
the functions that need them.
Imports data, models, host and the declarations; never judging, export, publishing, training, runs or ui.
"""

from .decoding import (
    BATCH_PROMPT_TOKENS,
    build_inputs,
    generate_batch,
    generate_many,
    generate_once,
    greedy_each,
    probe_conversations,
    prompt_tokens,
    token_batches,
)
from .loaded import LoadedChatModel
from .loading import FP32_ATTENTION, load_base_and_adapter, load_chat_model, unload
from .loss import answer_loss, heldout_loss
from .merging import FairLock, answering_as, merge_exactly, unmerge_exactly
from .thread import GENERATION_THREAD, cap_threads_with, on_generation_thread

__all__ = [
    "BATCH_PROMPT_TOKENS",
    "FP32_ATTENTION",
    "GENERATION_THREAD",
    "FairLock",
    "LoadedChatModel",
    "answer_loss",
    "answering_as",
    "build_inputs",
    "cap_threads_with",
    "generate_batch",
    "generate_many",
    "generate_once",
    "greedy_each",
    "heldout_loss",
    "load_base_and_adapter",
    "load_chat_model",
    "merge_exactly",
    "on_generation_thread",
    "probe_conversations",
    "prompt_tokens",
    "token_batches",
    "unload",
    "unmerge_exactly",
]
