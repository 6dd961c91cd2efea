"""RLIMIT_DATA vs RLIMIT_AS with CUDA: which limit lets torch use a GPU and still bounds host memory.

    python -m ncap.bench.rlimit_cuda            (or `python3 bench/rlimit_cuda.py` on a GPU machine without ncap)

Each row is a fresh process that sets the limit, initialises CUDA, allocates 20 GB on the GPU, runs one
training step of a small conv net there, then tries a host allocation of 1.5x the limit and a 1 GB pinned
buffer. Prints one JSON line per limit; bench/results/rlimit_cuda.md holds the H200 figures.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LIMITS = (("DATA", 4), ("DATA", 8), ("AS", 8), ("AS", 64))
CHILD = r'''
import importlib.util, json, resource, sys
try:
    from ncap.models import memory as m
except ImportError:  # a GPU machine without ncap installed: load the module from the checkout
    spec = importlib.util.spec_from_file_location("memory", sys.argv[3])
    m = importlib.util.module_from_spec(spec); sys.modules["memory"] = m; spec.loader.exec_module(m)
kind, gb = sys.argv[1], float(sys.argv[2])
lim = int(gb * 2**30)
if kind == "DATA":
    m.apply_memory_limit(lim)
else:
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
out = {"limit": f"RLIMIT_{kind} {gb:g} GB"}
def vm():
    s = open("/proc/self/status").read()
    return {k: s.split(k + ":")[1].split()[0] + " kB" for k in ("VmSize", "VmData", "VmRSS")}
try:
    import torch
    torch.zeros(1, device="cuda"); torch.cuda.synchronize()
    out["cuda_init"] = "ok"; out["after_init"] = vm()
    g = torch.empty(20 * 2**30 // 4, device="cuda"); g.fill_(1); torch.cuda.synchronize(); del g
    out["gpu_20GB"] = "ok"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.LazyLinear(10)).cuda()
    net(torch.randn(64, 3, 64, 64, device="cuda")).sum().backward(); torch.cuda.synchronize()
    out["train_step"] = "ok"; out["after_step"] = vm()
    try:
        torch.empty(int(gb * 1.5 * 2**30) // 4).fill_(1)
        out["host_alloc_over_limit"] = "allocated (limit not enforced)"
    except RuntimeError as e:
        out["host_alloc_over_limit"] = m.candidate_failure(e)
    torch.empty(2**30 // 4, pin_memory=True)
    out["pinned_1GB"] = "ok"
except Exception as e:
    out["error"] = f"{type(e).__name__}: {str(e)[:300]}"
print(json.dumps(out))
'''


def main() -> int:
    memory_py = Path(__file__).resolve().parents[1] / "models" / "memory.py"
    for kind, gb in LIMITS:
        r = subprocess.run([sys.executable, "-c", CHILD, kind, str(gb), str(memory_py)], capture_output=True,
                           text=True, timeout=300, check=False)
        print(r.stdout.strip() or r.stderr[-800:], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
