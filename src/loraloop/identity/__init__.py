"""identity: accounts, sessions, invites, API keys and sign-in throttling."""
