"""Evaluation without training: episodes run and graded (`rlaif eval`), and plugin checks (`rlaif env check`)."""
