"""rlaif: RL fine-tuning of LLMs with LLM-as-judge rewards."""

__version__ = "0.1.0"
