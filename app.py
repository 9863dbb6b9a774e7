"""SFT Space entry point: build the UI, queue, launch."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from sft_space.ui import build_app, launch_kwargs  # noqa: E402

demo = build_app()

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=4).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_kwargs(),
    )
