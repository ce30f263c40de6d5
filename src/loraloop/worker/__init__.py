"""interfaces: the remote compute-provider agent. Talks to the server over HTTP only."""
