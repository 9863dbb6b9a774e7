"""How good a model is: held-out loss and perplexity, base vs tuned, format and per-field scores (evaluate), the
base model prompted instead of tuned (baselines), the checks of a reply (scorers) and the warning signs in a
run's metrics (health). `python -m sft_space.judging.evaluate RUN_DIR` is its command line.

Imports run_model, data, host and the declarations; never training, runs, publishing or ui."""
