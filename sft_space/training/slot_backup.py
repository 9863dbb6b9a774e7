"""A run in GPU slots backed up from its driver (slots.drive, in the app process, between slots): the checkpoints a
signed-in visitor's slots save, pushed to their private repo while the next slot trains, and the final files at the
end. And the platform's messages scrubbed of the visitor's token before they go into a run's note."""

from __future__ import annotations

import threading
from pathlib import Path

from .. import rundir


def scrubbed(text: str, env: dict | None, backup_to: dict | None) -> str:
    """A platform's message for the run's note (status.json, pushed to the Hub too): the visitor's token never."""
    from ..publishing.publish import scrub

    for token in {((env or {}).get("set") or {}).get("HF_TOKEN"), (backup_to or {}).get("token")} - {None}:
        text = scrub(text, token)
    return text


class SlotBackup:
    """A run in slots backed up from its driver: the training process's pusher (publishing/backup.py: a staged
    copy, a push process at the lowest priority, retries, the outcome in status.json's `backup`) given each new
    checkpoint between slots, and the final files and adapter at the end, in the background (the page's request
    does not wait for the Hub). The token stays in this object's memory."""

    def __init__(self, run_dir: Path, backup_to: dict) -> None:
        from ..publishing.backup import Backup

        self.run_dir = run_dir
        earlier = rundir.read_status(run_dir).get("backup")
        step = earlier.get("step") if isinstance(earlier, dict) and earlier.get("repo") == backup_to["repo"] else 0
        self.pushed = step if isinstance(step, int) and step > 0 else 0
        # an earlier driver's outcome (final, failures) is not this one's: the record starts again
        fields = {"repo": backup_to["repo"], **({"step": self.pushed} if self.pushed else {})}
        status = rundir.write_status(run_dir, backup=fields)
        self.backup = Backup(run_dir, backup_to["repo"], backup_to["token"], status)

    def checkpoint(self) -> None:
        """Queue the newest checkpoint if it is newer than the last one queued, unless a push is still waiting
        (then the next boundary sends a newer one: staged copies never pile up while the Hub is slow)."""
        checkpoint = rundir.last_complete_checkpoint(self.run_dir)
        step = rundir.checkpoint_step(checkpoint) if checkpoint is not None else 0
        if checkpoint is None or step <= self.pushed or not self.backup.pending.empty():
            return
        try:
            self.backup.save(checkpoint, step)
            self.pushed = step
        except OSError as error:  # the disk: the run goes on without this backup, as a training process does
            self.backup._record(error=f"staging checkpoint {step} failed: {error.strerror or error}")

    def finish(self) -> None:
        self.checkpoint()
        adapter = rundir.adapter_dir(self.run_dir) if rundir.has_adapter(self.run_dir) else None
        threading.Thread(target=self.backup.finish, args=(adapter,), name="sft-space-slot-backup", daemon=True).start()
