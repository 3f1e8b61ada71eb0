"""The `rlaif` command line."""
