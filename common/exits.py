"""One exit-code convention for every entry point (launcher, rank_table, k8s, the worker)."""

EXIT_OK = 0
EXIT_FAILED = 1      # the run or the check failed (a rank died, a manifest is invalid, a disk is full)
EXIT_BAD_INPUT = 2   # the user's input is wrong (spec, rank table, data, flags); the message names the fix
EXIT_PREEMPTED = 75  # stopped on SIGTERM (eviction, drain) after a checkpoint; rerun the same command to resume
# (75 is sysexits' EX_TEMPFAIL: "a temporary failure; the user is invited to retry")
