"""The tokenizer set up for chat SFT, and the token patches the model and PEFT need.

Owns the ChatML template and markers given to base models without a chat
template, choosing a pad token that is not the end-of-turn token, the ids that
end a reply, resizing a model's embeddings to its tokenizer, the new token rows
PEFT trains, and the patch that lets TRL read the LM head's bias through PEFT's
wrapper. transformers and peft are imported inside functions. It knows nothing
about where the model folder came from, the device, or how weights are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|pad|>"
# ChatML, as TRL's setup_chat_format writes it, with generation markers so assistant-only masks work too.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class TokenSetup:
    """What load-time setup did to a tokenizer, for the log, the UI and the model."""

    chatml_added: bool = False  # the model had no chat template and got ChatML
    new_token_ids: list[int] = field(default_factory=list)  # rows to train (ChatML markers)
    pad_token: str = ""
    notes: list[str] = field(default_factory=list)


def _in_vocab(tokenizer, token: str | None) -> bool:
    return bool(token) and token in tokenizer.get_vocab()


def prepare_tokenizer(folder: Path):
    """The tokenizer set up for chat SFT: (tokenizer, TokenSetup).

    No chat template (a base model): ChatML is set, with <|im_start|>/<|im_end|> added as special tokens when
    missing, <|im_end|> as the end-of-turn (eos) token, and both markers listed for training. Pad: never the
    end-of-turn token when another token can pad; added as <|pad|> only when the vocabulary has none.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    setup = TokenSetup()
    original_eos = tokenizer.eos_token
    if not tokenizer.chat_template:
        missing = [t for t in (IM_START, IM_END) if not _in_vocab(tokenizer, t)]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        tokenizer.chat_template = CHATML_TEMPLATE
        tokenizer.eos_token = IM_END
        setup.chatml_added = True
        setup.new_token_ids = tokenizer.convert_tokens_to_ids([IM_START, IM_END])
        setup.notes.append(
            "No chat template: ChatML was set up (<|im_start|>/<|im_end|>"
            + (f", {len(missing)} new token{'s' if len(missing) > 1 else ''}" if missing else "")
            + "); their embedding rows are trained so the tuned model learns to end its turn."
        )
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        candidates = [
            tokenizer.pad_token if tokenizer.pad_token != tokenizer.eos_token else None,
            original_eos,
            tokenizer.unk_token,
            "<|endoftext|>",
            "<pad>",
            PAD,
        ]
        choice = next((t for t in candidates if t and t != tokenizer.eos_token and _in_vocab(tokenizer, t)), None)
        if choice is None:
            tokenizer.add_special_tokens({"pad_token": PAD})
            setup.notes.append(f"The tokenizer had no padding token apart from the end-of-turn token: added {PAD}.")
        else:
            tokenizer.pad_token = choice
    setup.pad_token = tokenizer.pad_token
    return tokenizer, setup


def load_tokenizer(folder: Path):
    """The tokenizer of a model or adapter folder, for the app's own work (chat, Evaluate, the Data tab, exports):
    its tokenizer and chat template were first tried in a bounded process (sandbox), so a template that loops or
    a split pattern that panics is refused with the reason instead of stalling the app for everyone."""
    from ..host.sandbox import bounded_tokenizer

    bounded_tokenizer(folder)
    return prepare_tokenizer(folder)[0]


def end_of_turn_ids(model, tokenizer) -> list[int]:
    """Every id that ends a reply: the tokenizer's eos and the model's generation eos ids."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in configured if isinstance(configured, list) else [configured]:
        if value is not None and value not in ids:
            ids.append(value)
    return ids


def fit_model_to_tokenizer(model, tokenizer) -> None:
    """Resize embeddings when the tokenizer gained tokens; point the model's eos/pad ids at the tokenizer's."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    generation = model.generation_config
    generation.pad_token_id = tokenizer.pad_token_id
    eos = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    generation.eos_token_id = [
        tokenizer.eos_token_id,
        *[e for e in eos if e is not None and e != tokenizer.eos_token_id],
    ]


def trainable_tokens(model, token_ids: list[int]) -> dict[str, list[int]] | None:
    """PEFT trainable_token_indices for new tokens: the input embedding, and the output head when it is not tied."""
    if not token_ids:
        return None
    names = {module: name for name, module in model.named_modules()}
    targets = {names[model.get_input_embeddings()].split(".")[-1]: list(token_ids)}
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is model.get_input_embeddings().weight
    if output is not None and not tied:
        targets[names[output].split(".")[-1]] = list(token_ids)
    return targets


def expose_bias_on_token_wrappers() -> None:
    """Let TRL's fused LM head read `lm_head.bias` through PEFT's TrainableTokensWrapper.

    The wrapper forwards only `.weight` (the merged rows, so new tokens train through the fused head too); TRL's
    SFTTrainer also reads `.bias`, which fails on a wrapped head (tied or targeted). The wrapped layer's own bias
    (None for LM heads) is the right answer.
    """
    from peft.utils.other import TrainableTokensWrapper

    if getattr(TrainableTokensWrapper, "_bias_exposed", False):
        return
    has, get = TrainableTokensWrapper._hasattr_wrapped, TrainableTokensWrapper._getattr_wrapped
    TrainableTokensWrapper._hasattr_wrapped = lambda self, name, modules: name == "bias" or has(self, name, modules)
    TrainableTokensWrapper._getattr_wrapped = lambda self, name, modules: (
        getattr(self.original_module, "bias", None) if name == "bias" else get(self, name, modules)
    )
    TrainableTokensWrapper._bias_exposed = True
