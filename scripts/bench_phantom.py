"""Time the phantom generator: `python scripts/bench_phantom.py [--n 20] [--size 64]` prints seconds per subject.

Why this script exists: the phantom is generated on first use of the `phantom` dataset config (tests, demo,
CI), so it must stay fast; this measures generation alone and generation plus NIfTI writing.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from scseg.data.phantom import generate_phantom_subject, write_phantom_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20, help="number of subjects")
    parser.add_argument("--size", type=int, default=64, help="cube side in voxels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = (args.size,) * 3

    t0 = time.perf_counter()
    for i in range(args.n):
        generate_phantom_subject(args.seed + i, size=size)
    gen = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_phantom_dataset(tmp, n_subjects=args.n, seed=args.seed, size=size)
        full = time.perf_counter() - t0

    print(f"{args.n} subjects of {args.size}^3")
    print(f"generate only:       {gen:7.2f} s total, {gen / args.n:.3f} s per subject")
    print(f"generate + NIfTI:    {full:7.2f} s total, {full / args.n:.3f} s per subject")


if __name__ == "__main__":
    main()
