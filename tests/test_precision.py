"""csgm.precision.DynamicLossScale follows Huawei's NpuLossScaleOptimizer rule: double after
``growth_steps`` finite steps, halve (never below 1) and skip on overflow; csgm.ascend maps each
stage's precision to CANN's process-wide mode and refuses stages that disagree."""

from __future__ import annotations

from typing import List

import pytest
import tensorflow as tf

from common.schema import SpecError
from csgm.ascend import graph_precision, npu_precision_mode
from csgm.precision import DynamicLossScale, finite_status


def _run(scale: DynamicLossScale, overflows: List[bool]) -> List[tuple]:
    out = []
    for overflow in overflows:
        applied = bool(scale.update(tf.constant(1.0 if overflow else 0.0)))
        out.append((applied, float(scale.scale.numpy())))
    return out


def test_loss_scale_rule() -> None:
    scale = DynamicLossScale(initial=4.0, growth_steps=3)
    assert _run(scale, [False, False, False, True, True, True, True, False]) == [
        (True, 4.0), (True, 4.0), (True, 8.0),      # grows after 3 finite steps in a row
        (False, 4.0), (False, 2.0), (False, 1.0), (False, 1.0),  # halves, never below 1
        (True, 1.0)]
    assert int(scale.overflows.numpy()) == 4
    capped = DynamicLossScale(initial=2.0 ** 127, growth_steps=1)
    assert _run(capped, [False]) == [(True, 2.0 ** 127)]  # would pass 3.4e38: kept


def test_finite_status() -> None:
    assert float(finite_status([tf.constant([1.0, 2.0])])) == 0.0
    assert float(finite_status([tf.constant([1.0]), tf.constant([float("inf")])])) == 1.0


def test_precision_modes() -> None:
    assert npu_precision_mode(["train", "recover"], "mixed", "mixed") == "allow_mix_precision"
    assert npu_precision_mode(["recover"], "mixed", "fp32") == "must_keep_origin_dtype"
    assert npu_precision_mode(["train"], "fp32", "mixed") == "must_keep_origin_dtype"
    with pytest.raises(SpecError, match=r"recovery\.precision: is fp32 but train\.precision is mixed"):
        npu_precision_mode(["train", "recover"], "mixed", "fp32")
    assert graph_precision("mixed", "npu") == "fp32" and graph_precision("mixed", "cpu") == "mixed"
