"""Taking a run elsewhere: every export of a trained run, one module each, all reading the run directory and
writing under it (never the Hub: publishing/publish.py pushes what they write).

- recipe.py: the run as TRL would repeat it: `trl sft` command, YAML, the standalone `train_sft.py` with its
  settings and the run's exact data, zipped (`export_run`; Jobs reuses it);
- train_sft.py: that standalone script, a real file copied into the export (it imports nothing of sft_space);
- merged.py: base + adapter merged into safetensors, checked on the probe prompts (`save_merged`);
- gguf.py: the merged model as GGUF for llama.cpp and Ollama (`plan_export`, `export_gguf`; its CLI
  `python -m sft_space.export.gguf RUN_DIR`), built from gguf_tensors.py (tensor names, types, sizes, writing),
  gguf_tokenizer.py (the tokenizer in the metadata), ollama.py (the Modelfile and its template) and
  gguf_check.py (the file loaded back and compared); its report, with the summary the card shows, in gguf/gguf.json.

A new format: a module here that reads the run (rundir, run_model.load_base_and_adapter for the weights), writes
into a folder of the run named in rundir.py, and records a summary there for the card and the Publish tab.
Imports run_model, data, models and the declarations; never judging, publishing, training, runs or ui.
"""

from .recipe import (
    DATA_DIR,
    SCRIPT_NAME,
    SETTINGS_NAME,
    YAML_NAME,
    dependencies,
    export_run,
    model_reference,
    trl_command,
    trl_settings,
    trl_yaml,
)

__all__ = [
    "DATA_DIR",
    "SCRIPT_NAME",
    "SETTINGS_NAME",
    "YAML_NAME",
    "dependencies",
    "export_run",
    "model_reference",
    "trl_command",
    "trl_settings",
    "trl_yaml",
]
