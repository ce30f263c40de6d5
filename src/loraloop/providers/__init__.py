"""Compute providers: nodes people lend, the work they do, and its verification."""
