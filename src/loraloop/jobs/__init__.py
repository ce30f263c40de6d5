"""jobs: a durable queue in the database, with leases, fencing tokens and progress events."""
