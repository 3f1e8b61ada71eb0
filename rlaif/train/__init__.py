"""Training: the driver loop, the learner, the policy losses, checkpoints and the run directory."""
