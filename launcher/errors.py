"""The launcher's own error type, importable by every launcher module without a loop."""


class LaunchError(ValueError):
    """Bad input found by the launcher itself (not by a rank); exit code 2 (common.exits)."""
