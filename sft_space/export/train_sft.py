# /// script
# dependencies = ["trl", "peft", "transformers", "datasets", "torch"]
# ///
"""Re-run an exported SFT Space run with TRL, PEFT, transformers and datasets only.

    python train_sft.py [--output_dir DIR] [--push_to_hub OWNER/NAME]

Settings: sft_settings.json next to this file (the model, TRL's SFTConfig and PEFT's LoraConfig arguments, and the
ChatML template for a base model without a chat template). Data: data/train.jsonl and data/validation.jsonl next to
this file (the run's exact rows). With --data_repo, the settings and the data come from that Hub repo instead (how a
Hugging Face Job gets them). The adapter and tokenizer go to --output_dir.
"""

import argparse
import json
import os

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

SETTINGS_FILE = "sft_settings.json"
JOB_FOLDER = "sft_space_job"  # the folder of a Hub repo that holds a Job's copy of the export (--data_repo)


def export_file(relative, data_repo=None):
    """A file of the export: beside this script, or downloaded from the Hub repo's job folder."""
    if data_repo:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(data_repo, f"{JOB_FOLDER}/{relative}")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), relative)


def read_settings(data_repo=None):
    path = export_file(SETTINGS_FILE, data_repo)
    if not os.path.isfile(path):
        raise SystemExit(f"{path} not found: this script trains with the settings exported beside it.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def chatml_setup(tokenizer, chatml_template):
    """A base model without a chat template gets ChatML; returns the token ids whose embeddings must be trained."""
    if tokenizer.chat_template:
        new_tokens = []
    else:
        original_eos = tokenizer.eos_token
        missing = [t for t in ("<|im_start|>", "<|im_end|>") if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        tokenizer.chat_template = chatml_template
        tokenizer.eos_token = "<|im_end|>"
        new_tokens = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
        if tokenizer.pad_token is None and original_eos and original_eos != "<|im_end|>":
            tokenizer.pad_token = original_eos
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        for candidate in (tokenizer.unk_token, "<|endoftext|>", "<pad>"):
            if candidate and candidate != tokenizer.eos_token and candidate in tokenizer.get_vocab():
                tokenizer.pad_token = candidate
                break
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return new_tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="sft-output")
    parser.add_argument("--data_repo", help=f"read the settings and data from this Hub repo's {JOB_FOLDER}/ folder")
    parser.add_argument("--push_to_hub", help="push the adapter and tokenizer to this repo at the end")
    args = parser.parse_args()
    settings = read_settings(args.data_repo)
    data_dir = settings.get("data_dir", "data")
    files = {split: export_file(f"{data_dir}/{split}.jsonl", args.data_repo) for split in ("train", "validation")}
    data = load_dataset("json", data_files=files)
    model_name, model_on_the_hub = settings["model"], settings.get("model_on_the_hub")
    # the model's folder on the machine it was exported from; elsewhere its Hub id
    model_path = model_name if os.path.isdir(model_name) or not model_on_the_hub else model_on_the_hub
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    new_tokens = chatml_setup(tokenizer, settings["chatml_template"])
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=torch.bfloat16 if bf16 else torch.float32, use_safetensors=True
    )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    lora = dict(settings["lora_settings"])
    if new_tokens:  # train the new tokens' rows; the head too when it is not tied to the embeddings
        lora["trainable_token_indices"] = {"embed_tokens": new_tokens}
        if not model.config.get_text_config().tie_word_embeddings:
            lora["trainable_token_indices"]["lm_head"] = new_tokens
        from peft.utils.other import TrainableTokensWrapper  # TRL's fused LM head also reads .bias

        has, get = TrainableTokensWrapper._hasattr_wrapped, TrainableTokensWrapper._getattr_wrapped
        TrainableTokensWrapper._hasattr_wrapped = lambda self, name, modules: name == "bias" or has(self, name, modules)
        TrainableTokensWrapper._getattr_wrapped = lambda self, name, modules: (
            getattr(self.original_module, "bias", None) if name == "bias" else get(self, name, modules)
        )
    config = SFTConfig(output_dir=args.output_dir, bf16=bf16, **settings["sft_settings"])
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        peft_config=LoraConfig(**lora),
    )
    trainer.train()
    trainer.save_model(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    print(f"trained {trainer.state.global_step} steps; adapter saved to {args.output_dir}")
    if args.push_to_hub:
        trainer.model.push_to_hub(args.push_to_hub, commit_message="Adapter trained by a Hugging Face Job")
        tokenizer.push_to_hub(args.push_to_hub)
        print(f"pushed to {args.push_to_hub}")


if __name__ == "__main__":
    main()
