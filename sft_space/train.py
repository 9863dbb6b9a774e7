"""`python -m sft_space.train`: the training process's command line, kept at this address because users type it
(README, docs/GUIDE.md, the exported recipe, Hugging Face Jobs). The process itself lives in
sft_space/training/run.py."""

import sys

from .training.run import main, reexec_with_malloc_tuning

if __name__ == "__main__":
    reexec_with_malloc_tuning()
    sys.exit(main())
