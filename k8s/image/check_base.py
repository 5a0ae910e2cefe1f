"""Run by k8s/image/Dockerfile inside the image being built: does BASE_IMAGE fit the chosen stack?

``python3 check_base.py STACK`` exits 0, or 1 with one line saying what is wrong. It runs on the base's
Python (3.7.5 in Huawei's CANN TensorFlow images) with the project on PYTHONPATH, and reads package
metadata only: importing TensorFlow would need CANN's environment.
"""

import sys

from csgm.ascend import STACK_TENSORFLOW, installed_tensorflow


def problem(stack, python, tensorflow):
    """What makes a base with this ``python`` and ``tensorflow`` version unfit for ``stack`` (None: fits)."""
    if stack not in STACK_TENSORFLOW:
        return f"STACK must be one of {', '.join(sorted(STACK_TENSORFLOW))}, got {stack!r}"
    if python < (3, 7):
        return f"csgm needs Python >= 3.7 in BASE_IMAGE, found {python[0]}.{python[1]}"
    if tensorflow is None or not tensorflow.startswith(STACK_TENSORFLOW[stack]):
        return (f"STACK={stack} needs TensorFlow {STACK_TENSORFLOW[stack]}x in BASE_IMAGE, found "
                f"{tensorflow or 'none'}: pick the CANN image of that TensorFlow, or the other STACK")
    return None


if __name__ == "__main__":
    stack = sys.argv[1] if len(sys.argv) > 1 else ""
    found = problem(stack, sys.version_info[:2], installed_tensorflow())
    if found:
        sys.exit("check_base: " + found)
    print(f"check_base: STACK={stack} on Python {sys.version_info[0]}.{sys.version_info[1]} "
          f"with TensorFlow {installed_tensorflow()}")
