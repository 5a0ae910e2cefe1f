"""Data-parallel training on Ascend 910, on paper: a ring all-reduce cost model fed with this job's
measured bytes and published link figures. Nothing here runs on an NPU; it is arithmetic.

    python -m bench.cost_model [--compute-ms 2.0]

Per step every rank all-reduces the VAE's gradients (counted from the model, below). A ring
all-reduce of S bytes over n ranks moves 2 (n - 1) / n x S bytes through each rank's slowest link
in 2 (n - 1) steps, each paying a latency alpha (fp16: gradients sent as float16, as Horovod's
compression does; HCCL on the NPU would all-reduce the dtype it is given):
t = 2 (n - 1) / n x S / bandwidth + 2 (n - 1) x alpha, once per collective (per tensor without
fusion, once per step with Horovod's tensor fusion).
Step time = compute + t (no overlap assumed: the project's step all-reduces after the backward pass).

Figures used (each an input, with its source; none measured here):
- compute per step of 100 examples on one Ascend 910: 2 ms, from the ModelZoo entry's training log
  (about 52,000 examples/s; docs/benchmarks.md, CONTEXT of the project);
- HCCS between the Ascend 910s of one server: 30 GB/s per direction (240 Gbit/s), as Huawei's
  Ascend 910 specification lists it ("HCCS 240 Gbps", quoted in besthub.dev's summary of the
  Ascend 910 product sheet); Atlas 800 (model 9000) servers group 4 NPUs per HCCS mesh
  (hccl_tools' groups 0-3 / 4-7);
- RoCE between servers: one 100 Gbit/s Ethernet port per NPU (Huawei support, "Atlas 300T
  training card (model 9000)": the card's 100G ETH ports carry inter-server traffic; Atlas 900
  announcement: 100 Gbit/s per switch port), i.e. 12.5 GB/s;
- alpha: 10 us per ring step, an assumption (no published per-step figure was found), varied below.
"""

from __future__ import annotations

import argparse
from typing import List

from bench.common import save, table

# The VAE's trainable weights (784-500-500-(20, 20) encoder, 20-500-500-784 decoder, with biases):
# the gradient every rank all-reduces per step, in 14 tensors.
LAYERS = [(784, 500), (500, 500), (500, 20), (500, 20), (20, 500), (500, 500), (500, 784)]
WEIGHTS = sum(i * o + o for i, o in LAYERS)
TENSORS = 2 * len(LAYERS)
GBPS = 1e9  # bytes per second in one GB/s
HCCS, ROCE = 30 * GBPS, 12.5 * GBPS
PER_SERVER = 8


def ring_seconds(n: int, size: float, bandwidth: float, alpha: float, collectives: int) -> float:
    if n == 1:
        return 0.0
    return 2 * (n - 1) / n * size / bandwidth + collectives * 2 * (n - 1) * alpha


def allreduce_seconds(n: int, size: float, alpha: float, collectives: int) -> float:
    """Within one server the ring runs over HCCS; across servers its slowest hop is RoCE."""
    return ring_seconds(n, size, HCCS if n <= PER_SERVER else ROCE, alpha, collectives)


def rows(compute_s: float, alpha: float) -> List[List[str]]:
    out = [["NPUs", "gradient", "fusion", "bytes per rank", "all-reduce", "step", "examples/s", "scaling",
            "efficiency"]]
    for n in (1, 8, 16):
        for precision, width in (("fp32", 4), ("fp16", 2)):
            for fused in (True, False):
                if n == 1 and (width, fused) != (4, True):
                    continue  # one NPU all-reduces nothing
                size = WEIGHTS * width
                t = allreduce_seconds(n, size, alpha, 1 if fused else TENSORS)
                step = compute_s + t
                speed = n * 100 / step
                fusion = "fused" if fused else f"{TENSORS} tensors"
                out.append([str(n), precision if n > 1 else "-", fusion if n > 1 else "-",
                            f"{2 * (n - 1) / n * size / 1e6:.2f} MB" if n > 1 else "0",
                            f"{t * 1e3:.3f} ms", f"{step * 1e3:.3f} ms", f"{speed:,.0f}",
                            f"{speed / (100 / compute_s):.2f}x", f"{compute_s / step:.0%}"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compute-ms", type=float, default=2.0, help="one NPU's step (ModelZoo log: 2 ms)")
    parser.add_argument("--alpha-us", type=float, default=10.0, help="latency per ring step (assumed)")
    args = parser.parse_args()
    print(f"gradient: {WEIGHTS:,} weights in {TENSORS} tensors = {WEIGHTS * 4 / 1e6:.2f} MB fp32")
    result = rows(args.compute_ms / 1e3, args.alpha_us / 1e6)
    print(table(result))
    print(f"saved {save('cost_model', {'args': vars(args), 'rows': result})}")


if __name__ == "__main__":
    main()
