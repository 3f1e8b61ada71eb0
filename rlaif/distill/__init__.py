"""Distillation: collect teacher trajectories that pass the graders, then fine-tune the student on them."""
