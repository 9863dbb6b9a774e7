"""A run's life in the app, as a visitor drives it: Start, Resume, Stop, Cancel, Delete, the list (lifecycle), the
queue and the training process's launch (queue), whether a run's process lives (liveness), who may see and act
on it (ownership), what a visitor may choose on a public host (choices), the hourly clean-up (cleanup) and runs
restored from their Hub backups (restore). No torch, no Gradio.

Imports training, publishing and everything below; only ui (and app.py) import it."""
