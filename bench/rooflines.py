"""The accelerators' specification rooflines (memory bandwidth, dense bf16 matmul FLOP/s), for
shares and MFU against what the card is sold as, beside the figures measured in the same run
(a few-millisecond sum and matmul, which on an H100 read 1.55-2.19 TB/s and 543-655 TFLOP/s).

    spec_roofline(jax.devices()[0].device_kind)   # {"mem_bandwidth_gb_s": 3350.0, ...} or None

Dense figures (no 2:4 sparsity), from the vendors' data sheets: NVIDIA H100 SXM5 / PCIe and
H200 SXM (2023-2024 data sheets), A100 SXM4 (2020); Google Cloud TPU system architecture pages
(v4, v5e, v5p, v6e: HBM bandwidth and bf16 peak per chip).
"""

from __future__ import annotations

# (substring of jax's device_kind, lower-cased; checked in order) -> (HBM GB/s, bf16 dense TFLOP/s, name)
SPECS: tuple[tuple[str, float, float, str], ...] = (
    ("h200", 4800.0, 989.0, "NVIDIA H200 SXM"),
    ("h100 pcie", 2000.0, 756.0, "NVIDIA H100 PCIe"),
    ("h100 nvl", 3900.0, 835.0, "NVIDIA H100 NVL"),
    ("h100", 3350.0, 989.0, "NVIDIA H100 SXM5 (80GB HBM3)"),
    ("a100-sxm4-80gb", 2039.0, 312.0, "NVIDIA A100 SXM4 80GB"),
    ("a100", 1555.0, 312.0, "NVIDIA A100 40GB"),
    ("tpu v4", 1200.0, 275.0, "Google TPU v4"),
    ("tpu v5 lite", 819.0, 197.0, "Google TPU v5e"),
    ("tpu v5e", 819.0, 197.0, "Google TPU v5e"),
    ("tpu v5p", 2765.0, 459.0, "Google TPU v5p"),
    ("tpu v5", 2765.0, 459.0, "Google TPU v5p"),
    ("tpu v6 lite", 1640.0, 918.0, "Google TPU v6e"),
    ("tpu v6e", 1640.0, 918.0, "Google TPU v6e"),
)


def spec_roofline(device_kind: str) -> dict | None:
    """The specification of the card named by `device_kind` (as jax reports it), in the keys of
    the measured roofline (`mem_bandwidth_gb_s`, `matmul_tflop_s`) plus `spec`; None when the
    kind is not in SPECS (a CPU: there is no single data-sheet figure to hold it to)."""
    kind = device_kind.lower()
    for key, bandwidth, tflops, name in SPECS:
        if key in kind:
            return {"mem_bandwidth_gb_s": bandwidth, "matmul_tflop_s": tflops, "spec": name}
    return None
