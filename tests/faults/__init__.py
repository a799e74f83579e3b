"""The fault suite: one module per class of fault or bad input an unattended run must
survive (see README, "Faults survived"). Each test reproduces its fault with real
processes, real signals and real Postgres."""
