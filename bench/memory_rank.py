"""Peak memory of ``ncap rank`` on generated ImageFolders of growing size: it must not grow with the images.

    python -m ncap.bench.memory_rank [--sizes 1000,4000,16000] [--side 224] [--root /tmp/ncap-memory]
    python -m ncap.bench.memory_rank --trainable top --image-size 224    # partial fine-tuning: the cache too

Writes one folder of ``n`` JPEG images (``--side`` px, 4 classes, smooth random colour fields) per size
under ``--root`` (outside the repository; reused when present), then runs ``ncap rank`` on each as a
subprocess with tiny settings (one random-init candidate, 1 epoch, 1 observation, the model fed at
``--image-size`` px: only the images are large) while sampling the process tree every 0.2 s: the peak
RSS of the ``ncap`` process itself and the peak of the tree's summed PSS (proportional set size: memory
shared between the main process and its forked loader workers is counted once). Target: the largest
folder's peak within 20 % of the smallest's. Writes bench/results/memory_rank.{md,json}; with ``--trainable
top|probe``, memory_rank_<trainable>.{md,json} (the activation cache, in a fresh $NCAP_CACHE under --root, is
built and then read every epoch: its memory map must not grow the process either).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
CLASSES = ("a", "b", "c", "d")


def make_folder(root: Path, n: int, side: int, seed: int = 0) -> Path:
    """``n`` JPEGs of ``side`` px in 4 class folders (a colour field upsampled from 6×6 noise, tinted per
    class); written once, then reused (a ``.done`` marker says the folder is complete)."""
    from PIL import Image

    folder = root / f"n{n}-{side}px"
    if (folder / ".done").is_file():
        return folder
    rng = np.random.default_rng(seed)
    for i in range(n):
        k = i % len(CLASSES)
        small = rng.integers(0, 200, (6, 6, 3), dtype=np.uint8)
        small[..., k % 3] += 55
        path = folder / CLASSES[k] / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(small).resize((side, side), Image.BILINEAR).save(path, quality=90)
    (folder / ".done").write_text(str(n))
    return folder


def peak_memory(cmd: list[str], env: dict, interval: float = 0.2) -> dict:
    """Run ``cmd``; peak RSS of the process and peak summed PSS of its tree (bytes), wall time, exit code."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    main = psutil.Process(proc.pid)
    peak_rss = peak_tree = 0
    while proc.poll() is None:
        try:
            peak_rss = max(peak_rss, main.memory_info().rss)
            tree = 0
            for p in [main, *main.children(recursive=True)]:
                try:
                    tree += p.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak_tree = max(peak_tree, tree)
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    out = proc.communicate()[0]
    return {"peak_rss": peak_rss, "peak_tree_pss": peak_tree, "seconds": time.perf_counter() - t0,
            "returncode": proc.returncode, "output_tail": out[-2000:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,4000,16000")
    ap.add_argument("--side", type=int, default=224)
    ap.add_argument("--image-size", type=int, default=32, help="the size the model is fed (only)")
    ap.add_argument("--candidate", default="mobilenetv3_small_050=random")
    ap.add_argument("--trainable", default="all", choices=["all", "top", "probe"])
    ap.add_argument("--root", type=Path, default=Path("/tmp/ncap-memory"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    for n in sizes:
        folder = make_folder(args.root, n, args.side)
        for stale in (args.root / f"rank-n{n}", args.root / f"cache-{args.trainable}"):  # else a rerun resumes
            shutil.rmtree(stale, ignore_errors=True)
        cmd = [sys.executable, "-m", "ncap.service.cli", "rank", "--data", str(folder), "--candidates", args.candidate,
               "--epochs", "1", "--evals-per-epoch", "1", "--image-size", str(args.image_size), "--probe-width", "16",
               "--out", str(args.root / f"rank-n{n}"), "--quiet", "--no-plots", "--trainable", args.trainable]
        if args.trainable != "all":  # epochs over the cache: 2, so that it is read again after it was written
            cmd[cmd.index("--epochs") + 1] = "2"
            env["NCAP_CACHE"] = str(args.root / f"cache-{args.trainable}")
        r = peak_memory(cmd, env)
        if r["returncode"] != 0:
            raise RuntimeError(f"ncap rank failed on {folder}:\n{r['output_tail']}")
        rows.append({"images": n, **{k: v for k, v in r.items() if k != "output_tail"}})
        print(f"{n} images: peak RSS {r['peak_rss'] / 2**20:.0f} MiB, tree PSS {r['peak_tree_pss'] / 2**20:.0f} MiB, "
              f"{r['seconds']:.0f} s", flush=True)
    ratio_rss = rows[-1]["peak_rss"] / rows[0]["peak_rss"]
    ratio_tree = rows[-1]["peak_tree_pss"] / rows[0]["peak_tree_pss"]
    command = "python -m ncap.bench.memory_rank " + " ".join(argv if argv is not None else sys.argv[1:])
    out = {"command": command.strip(), "machine": f"{platform.machine()} CPU, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}",
           "side": args.side, "image_size": args.image_size, "candidate": args.candidate, "rows": rows,
           "ratio_rss": ratio_rss, "ratio_tree_pss": ratio_tree}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "memory_rank" if args.trainable == "all" else f"memory_rank_{args.trainable}"
    (args.out / f"{stem}.json").write_text(json.dumps(out, indent=1))
    lines = ["# Peak memory of `ncap rank` against the number of images", "",
             (f"Command: `{out['command']}` ({out['machine']}). Each run: `ncap rank --data <folder> --candidates "
              f"{args.candidate} --epochs {1 if args.trainable == 'all' else 2} --evals-per-epoch 1 --image-size "
              f"{args.image_size} --probe-width 16 --trainable {args.trainable}` on "
              f"an ImageFolder of JPEGs at {args.side}×{args.side} px (4 classes), default loader workers; the process "
              "tree sampled every 0.2 s."), "",
             "| images | peak RSS of ncap (MiB) | peak PSS of ncap + loader workers (MiB) | wall (s) |",
             "|---|---|---|---|"]
    lines += [f"| {r['images']} | {r['peak_rss'] / 2**20:.0f} | {r['peak_tree_pss'] / 2**20:.0f} | {r['seconds']:.0f} |"
              for r in rows]
    lines += ["", (f"Largest / smallest: RSS ×{ratio_rss:.2f}, tree PSS ×{ratio_tree:.2f} (target: within 20 %, "
                   "i.e. ≤ ×1.20). Images are decoded per batch by the DataLoader; the dataset holds file paths.")]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
