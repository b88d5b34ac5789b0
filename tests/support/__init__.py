"""Test helpers that are more than fixtures: waiting, databases, processes, clients."""
