"""PyTorch (CPU) timings of the benchmark workloads given as JSON on stdin; prints JSON rows.
Run with Debian's /usr/bin/python3 (python3-torch); uses 2 threads like the machine."""
import json
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
spec = json.load(sys.stdin)
runs = spec["runs"]
g = torch.Generator().manual_seed(1)


def bench(fn):
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    ts.sort()
    return ts[0], ts[len(ts) // 2]


rows = []
with torch.no_grad():
    for w in spec["workloads"]:
        k, d = w["kind"], w["dims"]
        if k == "matmul":
            a, b = torch.randn(d[0], d[1], generator=g), torch.randn(d[1], d[2], generator=g)
            fn = lambda: a @ b
        elif k == "conv2d":
            x = torch.randn(d[0], d[1], d[2], d[3], generator=g)
            wt = torch.randn(d[4], d[1], d[5], d[6], generator=g)
            fn = lambda: F.conv2d(x, wt, padding=d[7])
        elif k in ("conv2d_dx", "conv2d_dw"):
            x = torch.randn(d[0], d[1], d[2], d[3], generator=g)
            wt = torch.randn(d[4], d[1], d[5], d[6], generator=g)
            gy = torch.randn(d[0], d[4], d[2] + 2 * d[7] - d[5] + 1, d[3] + 2 * d[7] - d[6] + 1, generator=g)
            if k == "conv2d_dx":
                fn = lambda: torch.nn.grad.conv2d_input(x.shape, wt, gy, padding=d[7])
            else:
                fn = lambda: torch.nn.grad.conv2d_weight(x, wt.shape, gy, padding=d[7])
        elif k == "attention":
            # Explicit softmax(q k^T / sqrt(d)) v: 1.13 has no F.scaled_dot_product_attention (added in 2.0).
            q, kk, v = (torch.randn(*d, generator=g) for _ in range(3))
            sc = d[-1] ** -0.5
            fn = lambda: torch.softmax(q @ kk.transpose(-1, -2) * sc, -1) @ v
        elif k == "softmax":
            x = torch.randn(*d, generator=g)
            fn = lambda: torch.softmax(x, -1)
        elif k == "groupnorm":
            x = torch.randn(*d[:-1], generator=g)
            wt, bs = torch.ones(d[1]), torch.zeros(d[1])
            fn = lambda: F.group_norm(x, d[-1], wt, bs)
        elif k == "groupnorm_silu":
            x = torch.randn(*d[:-1], generator=g)
            wt, bs = torch.ones(d[1]), torch.zeros(d[1])
            fn = lambda: F.silu(F.group_norm(x, d[-1], wt, bs))
        elif k == "fft2":
            c = torch.complex(torch.randn(*d, generator=g), torch.randn(*d, generator=g))
            fn = lambda: torch.fft.fft2(c)
        else:
            continue
        mn, md = bench(fn)
        rows.append({"name": w["name"], "ms_min": mn, "ms_median": md})
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}))
