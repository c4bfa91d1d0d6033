"""PyTorch (CPU, 2 threads) timings of the kernel benchmark's cases: matmul 256..2048 and the two SD-shaped
conv2d. Run with Debian's /usr/bin/python3 (python3-torch). Prints JSON {"torch", "threads", "rows"}, rows
{name, shape, flops, ms_min, ms_median, gflops}, the same fields as tools/bench/kernels.ts.

Cases come as JSON on stdin (KERNEL_CASES from kernels.ts) when stdin is not a terminal, else the defaults
below. Importable: bench_kernels(cases, runs) returns the rows."""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

DEFAULT_CASES = [{"name": f"matmul {n}", "kind": "matmul", "dims": [n, n, n]} for n in (256, 512, 1024, 2048)] + [
    {"name": "conv2d sd 320", "kind": "conv2d", "dims": [2, 320, 32, 32, 320, 3, 3, 1]},
    {"name": "conv2d sd 640", "kind": "conv2d", "dims": [2, 640, 16, 16, 640, 3, 3, 1]},
]


def case_flops(c):
    d = c["dims"]
    if c["kind"] == "matmul":
        return 2 * d[0] * d[1] * d[2]
    n, ch, h, w, o, kh, kw, pad = d
    return 2 * n * o * (h + 2 * pad - kh + 1) * (w + 2 * pad - kw + 1) * ch * kh * kw


def case_shape(c):
    d = c["dims"]
    if c["kind"] == "matmul":
        return f"{d[0]}x{d[1]} @ {d[1]}x{d[2]}"
    return f"x {d[0]}x{d[1]}x{d[2]}x{d[3]}, w {d[4]}x{d[1]}x{d[5]}x{d[6]}, pad {d[7]}"


def bench_kernels(cases=DEFAULT_CASES, runs=5):
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(1)
    rows = []
    with torch.no_grad():
        for c in cases:
            d = c["dims"]
            if c["kind"] == "matmul":
                a = torch.randn(d[0], d[1], generator=g)
                b = torch.randn(d[1], d[2], generator=g)
                fn = lambda: a @ b
            else:
                x = torch.randn(d[0], d[1], d[2], d[3], generator=g)
                wt = torch.randn(d[4], d[1], d[5], d[6], generator=g)
                fn = lambda: F.conv2d(x, wt, padding=d[7])
            fn()
            ts = []
            for _ in range(max(3, runs)):
                t0 = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t0) * 1000)
            ts.sort()
            flops = case_flops(c)
            rows.append({"name": c["name"], "shape": case_shape(c), "flops": flops, "ms_min": ts[0],
                         "ms_median": ts[len(ts) // 2], "gflops": flops / ts[0] / 1e6})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    cases = DEFAULT_CASES
    if not sys.stdin.isatty():
        text = sys.stdin.read().strip()
        if text:
            cases = json.loads(text)
    rows = bench_kernels(cases, args.runs)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
