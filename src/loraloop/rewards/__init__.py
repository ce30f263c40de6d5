"""Rewards: the append-only points ledger (and, later, epochs paid on chain)."""
