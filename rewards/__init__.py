"""rlaif's reward side, installed as `rlaif_rewards`: graders (unit tests; judges arrive with issue #5)."""
