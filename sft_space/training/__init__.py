"""What runs in the training process or a GPU slot: the process from start to adapter (run; its command line is
`python -m sft_space.train`), the SFTTrainer in named steps (trainer), its callbacks, probes, the clock-driven
schedule, the CPU loss head (lm_head), what the process writes (run_writer), what went wrong (failures), the
planned steps and durations (estimates), and ZeroGPU slots (slots: the driver; slot_worker: inside one slot).

Imports publishing (backups), run_model, data, models, host and the declarations; never runs or ui."""
