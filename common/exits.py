"""One exit-code convention for every entry point (launcher, rank_table, k8s, the worker)."""

EXIT_OK = 0
EXIT_FAILED = 1      # the run or the check failed (a rank died, a manifest is invalid, a disk is full)
EXIT_BAD_INPUT = 2   # the user's input is wrong (spec, rank table, data, flags); the message names the fix
