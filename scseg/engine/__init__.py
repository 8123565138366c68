"""The engine: one run end to end (training loop, run folders, checkpoints, inference, summaries, sweeps)."""
