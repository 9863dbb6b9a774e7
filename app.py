"""SFT Space entry point: build the UI; when run, start the training queue's worker, then queue() and launch().

python app.py            a private machine: local paths allowed, no quotas
python app.py --public   hosted for strangers as on a Space: confined paths, quotas (see the README)
"""

import os
import sys
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if os.path.isdir("/data") and os.access("/data", os.W_OK):  # a Space's persistent storage: Hub caches too
    os.environ.setdefault("HF_HOME", "/data/.huggingface")
if "--public" in sys.argv[1:]:
    os.environ["SFT_SPACE_PUBLIC"] = "1"
# the server trusts no X-Forwarded-For (uvicorn trusts 127.0.0.1's by default, so a local client could choose its
# address): a visitor's address is the socket's peer, or on a Space the hop its proxy appended (ui/visitor.address)
os.environ.setdefault("FORWARDED_ALLOW_IPS", "")

if os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true"):
    import spaces  # noqa: F401  (ZeroGPU: before anything touches CUDA; it patches torch for its GPU slots)

from sft_space.models.bundled import ensure_bundled_model  # noqa: E402
from sft_space.runs import queue as run_queue  # noqa: E402
from sft_space.ui import build_app, launch_kwargs, queue_kwargs  # noqa: E402

demo = build_app()

if __name__ == "__main__":
    run_queue.start_queue_worker()  # starts queued runs as the device frees up
    # the bundled model is converted now, once, not inside a visitor's first Quick demo (its minutes are training)
    threading.Thread(target=ensure_bundled_model, name="sft-space-convert", daemon=True).start()
    demo.queue(**queue_kwargs()).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_kwargs(),
    )
