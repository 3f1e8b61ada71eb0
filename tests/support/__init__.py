"""Test support shared by tests and benchmarks: a fault-injecting judge endpoint behind the real SDK clients."""
