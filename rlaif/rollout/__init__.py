"""Rollouts: the agent loop (prompt, model turn, tool calls, observation, ...) and tool-call parsing."""
