"""engine: contracts, Merkle trees, SIWE and the chain client. Knows nothing of users."""
