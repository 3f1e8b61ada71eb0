"""The shared base: the typed config tree and crash-safe JSONL files."""
