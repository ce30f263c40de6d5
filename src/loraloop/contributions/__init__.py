"""Community contributions: examples, eval cases and corrections offered to an adapter,
decided by reputation-weighted commit-reveal review, and the points they earn."""
