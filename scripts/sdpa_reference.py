#!/usr/bin/env python3
"""Time PyTorch's scaled_dot_product_attention at one shape on a CUDA device, for comparison
with aiopt's flash_attention at the same shape in the same GPU run (scripts/gpu_check.sh).

Prints one JSON object: the shape, PyTorch's version and the backend it used, the median time
over the timed repetitions (CUDA events) and the achieved TFLOP/s (4·B·H·N²·d, half when causal).
Exits 3 without a torch that sees a GPU, so the caller can record that the comparison was not run.
"""
import argparse
import json
import statistics
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--dtype", choices=["f16", "bf16", "f32"], default="f16")
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    try:
        import torch
    except ImportError:
        print(json.dumps({"error": "torch is not installed"}))
        return 3
    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA device", "torch": torch.__version__}))
        return 3

    dtype = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}[args.dtype]
    shape = (args.batch, args.heads, args.seq_len, args.head_dim)
    gen = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(shape, device="cuda", dtype=dtype, generator=gen) for _ in range(3))
    attend = torch.nn.functional.scaled_dot_product_attention

    for _ in range(5):  # warm-up: kernel selection and clocks
        attend(q, k, v, is_causal=args.causal)
    torch.cuda.synchronize()
    times_ms = []
    for _ in range(args.repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        attend(q, k, v, is_causal=args.causal)
        stop.record()
        stop.synchronize()
        times_ms.append(start.elapsed_time(stop))

    flops = 4.0 * args.batch * args.heads * args.seq_len ** 2 * args.head_dim
    if args.causal:
        flops /= 2.0
    median_ms = statistics.median(times_ms)
    print(json.dumps({
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(),
        "batch": args.batch, "heads": args.heads, "seq_len": args.seq_len,
        "head_dim": args.head_dim, "dtype": args.dtype, "causal": args.causal,
        "flash_sdp_enabled": torch.backends.cuda.flash_sdp_enabled(),
        "median_ms": median_ms, "min_ms": min(times_ms), "samples": len(times_ms),
        "tflops": flops / (median_ms * 1e-3) / 1e12,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
