"""Chaos tests: daemons and nats-servers killed with SIGKILL at random moments and at named
crash points, then checked from outside (the journal, the ledger, the process table)."""
