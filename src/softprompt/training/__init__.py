"""Training: the one trainer loop, what it trains on (``workloads``: classification, preference, RL),
rollouts, checkpoints, several processes, and the assembly of a run from a config (``assemble``)."""
