"""Training: one D step and one G step (step.py), the loop (loop.py), checkpoints."""
