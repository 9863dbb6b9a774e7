"""Pushes to the Hub and what travels with them: the adapter or merged model (publish), its model card (card),
a run's backups pushed while it trains (backup; runs/restore.py brings them back), the same run on Hugging Face
Jobs (jobs). A token is used per call and never stored.

Imports export, judging, run_model, data, models, host and the declarations; never training, runs or ui."""
