"""Are two checkpoints' weights the same, bit for bit? `python scripts/compare_checkpoints.py A.pt B.pt`

Why: a study pairs runs made at different commits (or on different machines) only if the code between them trains
the same network. Training one epoch of the same config at both commits and comparing the checkpoints settles it:
identical weights mean the training path did not change; otherwise the largest difference says how far apart they
are. Exit status 0 when every tensor is identical, 1 otherwise, 2 when a file cannot be read or the tensors' names
or shapes differ (each named).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def compare_weights(a: dict, b: dict) -> tuple[int, list[str], float]:
    """(tensors compared, names of those that differ, largest absolute difference) of two model state dicts whose
    names and shapes agree; ``ValueError`` naming the first mismatch otherwise."""
    import torch

    if a.keys() != b.keys():
        only = sorted(set(a) ^ set(b))
        raise ValueError(f"the checkpoints hold different tensors: {', '.join(only[:5])}")
    differ, largest = [], 0.0
    for name in a:
        x, y = a[name], b[name]
        if x.shape != y.shape:
            raise ValueError(f"{name}: shape {tuple(x.shape)} against {tuple(y.shape)}")
        if not torch.equal(x, y):
            differ.append(name)
            if x.is_floating_point():
                largest = max(largest, float((x.double() - y.double()).abs().max()))
    return len(a), differ, largest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first")
    parser.add_argument("second")
    args = parser.parse_args(argv)
    from scseg.engine.checkpoint import load_checkpoint, strip_prefixes

    try:
        states = [strip_prefixes(load_checkpoint(path)["model"]) for path in (args.first, args.second)]
        count, differ, largest = compare_weights(*states)
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        print(f"compare_checkpoints: {error}", file=sys.stderr)
        return 2
    if not differ:
        print(f"identical: all {count} tensors equal bit for bit")
        return 0
    print(f"different: {len(differ)} of {count} tensors (first: {differ[0]}); largest difference {largest:.3g}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
