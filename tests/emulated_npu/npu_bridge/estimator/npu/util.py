"""EMULATED npu/util.py: the rank size as the adapter reads it."""

from emulated_ascend import get_ranksize  # noqa: F401
