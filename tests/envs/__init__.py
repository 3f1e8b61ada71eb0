"""Environments the tests train on (imported by module path, so Ray workers started from the repo root find them)."""
