"""The cluster side: Ray placement, rollout workers and their fleet, jobs, what an actor failure means."""
