"""Policies: clients for OpenAI/Anthropic endpoints and the in-process vLLM engine, one `Policy` interface."""
