"""Measure what the glibc tuning of scseg.engine.allocator buys: `python scripts/bench_allocator.py [--steps 4]`.

Why this script exists: issue 10 found training steps spending as much time in the kernel (page faults on freshly
mmapped activation buffers) as in compute. mallopt cannot be undone inside a process, so each variant runs the
same plain training loop (U-Net, Adam, cross-entropy) in its own child process; variants alternate, repeat, and
the median slices/s, the user/system CPU seconds and the minor page faults per step of each are printed.

Variants: ``glibc`` (SCSEG_TUNE_MALLOC=0), ``tuned`` (scseg's default), ``tuned-arena1`` (plus MALLOC_ARENA_MAX=1),
``tuned-toppad`` (plus a 64 MiB MALLOC_TOP_PAD_), and ``tcmalloc`` / ``jemalloc`` (preloaded with their defaults;
scseg then leaves the allocator alone) when their libraries are installed; neither is a dependency of scseg.
The default (glibc, tuned, tcmalloc if present; 3 repeats) takes two to five minutes on two cores, depending on
what else runs there. Slices/s swing with other load on a shared machine; system time and page faults do not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
PRELOADS = {"tcmalloc": "libtcmalloc_minimal.so.4", "jemalloc": "libjemalloc.so.2"}
ENVIRONMENTS = {
    "glibc": {"SCSEG_TUNE_MALLOC": "0"},
    "tuned": {},
    "tuned-arena1": {"MALLOC_ARENA_MAX": "1"},
    "tuned-toppad": {"MALLOC_TOP_PAD_": str(64 << 20)},
}


def find_library(name: str) -> str | None:
    """Path of an installed shared library, or None (the allocators are optional, never a dependency)."""
    for folder in LIBRARY_DIRS:
        path = Path(folder) / name
        if path.exists():
            return str(path)
    return None


def variant_env(variant: str) -> dict[str, str] | None:
    """The environment a variant's child runs with, or None when its library is missing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    if variant in PRELOADS:
        path = find_library(PRELOADS[variant])
        if path is None:
            return None
        return {**env, "LD_PRELOAD": path}  # scseg then leaves glibc alone ("unsupported: ... preloaded")
    return {**env, **ENVIRONMENTS[variant]}


def child(args: argparse.Namespace) -> None:
    """One measurement: tune like an entry point does, train ``steps`` timed steps, print one JSON line."""
    from scseg.engine.allocator import tune_allocator

    mode = tune_allocator()
    import torch
    from torch import nn

    from scseg.models import create_model

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = create_model("unet", num_classes=args.classes, filters=args.filters, depth=args.depth)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    images = torch.randn(args.batch, 1, args.size, args.size)
    labels = torch.randint(0, args.classes, (args.batch, args.size, args.size))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    usage0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds, usage1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "mode": mode,
                "slices_per_s": args.steps * args.batch / seconds,
                "user_s": usage1.ru_utime - usage0.ru_utime,
                "sys_s": usage1.ru_stime - usage0.ru_stime,
                "faults_per_step": (usage1.ru_minflt - usage0.ru_minflt) / args.steps,
                "max_rss_mib": usage1.ru_maxrss / 1024,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variants", default="glibc,tuned,tcmalloc", help="comma-separated; missing libraries are skipped"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant, alternating between variants")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--size", type=int, default=256, help="slice side in pixels")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--classes", type=int, default=28, help="output classes (MALC: 27 structures + background)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    envs = {}
    for variant in args.variants.split(","):
        env = variant_env(variant)
        if env is None:
            print(f"{variant}: {PRELOADS[variant]} not installed, skipped")
        else:
            envs[variant] = env
    shared = ("steps", "warmup", "size", "batch", "filters", "depth", "classes", "threads")
    forwarded = [f"--{k}={getattr(args, k)}" for k in shared]
    print(
        f"U-Net filters={args.filters} depth={args.depth}, {args.size}x{args.size}, batch {args.batch}, "
        f"{args.threads} threads, {args.steps} timed steps, {args.repeats} alternating repeats"
    )
    results: dict[str, list[dict]] = {v: [] for v in envs}
    for repeat in range(args.repeats):
        for variant, env in envs.items():
            out = subprocess.run(
                [sys.executable, __file__, "--child", *forwarded], env=env, capture_output=True, text=True, check=True
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results[variant].append(result)
            print(
                f"  repeat {repeat + 1} {variant:13s} {result['slices_per_s']:6.2f} slices/s"
                f"  user {result['user_s']:6.1f} s  sys {result['sys_s']:6.1f} s"
                f"  faults/step {result['faults_per_step']:8.0f}  ({result['mode']})",
                flush=True,
            )
    baseline = statistics.median(r["slices_per_s"] for r in results[next(iter(results))])
    print("median over repeats:")
    for variant, runs in results.items():
        speed = statistics.median(r["slices_per_s"] for r in runs)
        user = statistics.median(r["user_s"] for r in runs)
        system = statistics.median(r["sys_s"] for r in runs)
        rss = max(r["max_rss_mib"] for r in runs)
        print(
            f"  {variant:13s} {speed:6.2f} slices/s  x{speed / baseline:4.2f} vs {next(iter(results))}"
            f"  sys/user {system / max(user, 1e-9):5.2f}  max RSS {rss:6.0f} MiB"
        )


if __name__ == "__main__":
    main()
