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

End to end, ``--scseg-train``: each measurement is a whole ``python -m scseg.train`` run in its own child process
(``experiment=quickstart width=small se=scse``, U-Net; ``logger=none``, ``resume=never``, runs in a temporary
folder deleted afterwards), variants ``tuned``, ``glibc`` and ``glibc-nchw`` (untuned and NCHW tensors:
scseg-train as issue 10 found it) by default, alternating repeat by repeat:

    python scripts/bench_allocator.py --scseg-train [--repeats 3] [--iters 30] [--epochs 2] [--data chaos|phantom]

Data: CHAOS T2 (axial slices on their native 256 x 256 grid, no resampling, padded to ``--size``) when
``$SCSEG_CHAOS_ROOT`` or ``../shared/data/chaos_t2`` exists (``--data auto``, the default), else the phantom
generated at ``--size`` x ``--size`` x 32. The data cache is prepared once before the first measurement (untimed;
a temporary cache unless ``--cache-dir``). Slices/s is what the trainer prints for its training epochs, the median
over the epochs after the first (the first includes warm-up; with ``--epochs 1`` that one). The final validation and
the test evaluation (on the one validation subject, ``test_split=val``, to keep it short) do not enter slices/s;
user/system CPU seconds, minor page faults and wall time are those of the whole child (start-up included).
The default (2 epochs x 30 batches of 8, 3 repeats) takes about five to ten minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from scseg.machine import cpu_model

LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
PRELOADS = {"tcmalloc": "libtcmalloc_minimal.so.4", "jemalloc": "libjemalloc.so.2"}
ENVIRONMENTS = {
    "glibc": {"SCSEG_TUNE_MALLOC": "0"},
    "tuned": {},
    "tuned-arena1": {"MALLOC_ARENA_MAX": "1"},
    "tuned-toppad": {"MALLOC_TOP_PAD_": str(64 << 20)},
    "glibc-nchw": {"SCSEG_TUNE_MALLOC": "0"},
}
# Config overrides of a variant's scseg-train child (--scseg-train only): ``glibc-nchw`` is scseg-train as it was
# when issue 10 measured it (untuned allocator, NCHW tensors), the baseline of its ">= 2x" target.
TRAIN_OVERRIDES = {"glibc-nchw": ["trainer.channels_last=false"]}
REPO = Path(__file__).resolve().parents[1]
# What the trainer prints after each epoch (scseg.engine.trainer.Trainer._print_epoch), e.g.
# "epoch 2/2 loss 0.7312 val_dice 0.4120 lr 2.50e-03 17.1 slices/s 33.0s"
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) loss \S+.* ([0-9.]+) slices/s ([0-9.]+)s\s*$")
ALLOCATOR_LINE = re.compile(r"^allocator: (.*)$")
PHANTOM_DEPTH = 32  # axial slices per phantom subject
# Fills the data cache the measured runs then read (compose_train_config gives scseg-train's config, and the cache
# is keyed by content and settings, so the same entries are found).
PREPARE_CODE = """
import sys
from scseg.config import compose_train_config
from scseg.data.datamodule import DataModule
cfg = compose_train_config(sys.argv[1:])
DataModule(cfg.data, seed=int(cfg.seed)).prepare()
"""


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


# ------------------------------------------------------------------------------------- end to end: scseg-train
def parse_epoch_lines(text: str) -> list[dict]:
    """The trainer's epoch lines in ``text``: [{"epoch", "slices_per_s", "epoch_time_s"}] in order."""
    epochs = []
    for line in text.splitlines():
        match = EPOCH_LINE.match(line.strip())
        if match:
            epochs.append(
                {
                    "epoch": int(match.group(1)),
                    "slices_per_s": float(match.group(3)),
                    "epoch_time_s": float(match.group(4)),
                }
            )
    return epochs


def measured_speed(epochs: list[dict]) -> float:
    """Slices/s of a run: the median over the epochs after the first (warm-up), or the only epoch's."""
    if not epochs:
        raise ValueError("no epoch lines")
    later = epochs[1:] or epochs
    return statistics.median(e["slices_per_s"] for e in later)


def chaos_root() -> Path:
    """The CHAOS T2 folder: ``$SCSEG_CHAOS_ROOT``, else ``../shared/data/chaos_t2`` (as configs/data/chaos)."""
    root = Path(os.environ.get("SCSEG_CHAOS_ROOT") or "../shared/data/chaos_t2").expanduser()
    return (root if root.is_absolute() else REPO / root).resolve()


def resolve_data(choice: str) -> str:
    """``auto``: chaos when its data is there, else phantom."""
    if choice == "auto":
        return "chaos" if (chaos_root() / "split.json").exists() else "phantom"
    return choice


def train_overrides(
    data: str,
    runs_dir: str | Path,
    cache_dir: str | Path,
    *,
    iters: int = 30,
    epochs: int = 2,
    size: int = 256,
    batch: int = 8,
    threads: int = 2,
    root: str | Path | None = None,
) -> list[str]:
    """The overrides of one measured ``scseg-train`` run: the quick-start recipe at width=small with scSE, short,
    on a ``size`` x ``size`` canvas; validation only after the last epoch and the "test" evaluation on the single
    validation subject, so neither weighs much (the printed training slices/s exclude both anyway)."""
    overrides = [
        "experiment=quickstart",
        "experiment_name=bench_allocator",
        f"data={data}",
        "model=unet",
        "width=small",
        "se=scse",
        "logger=none",
        "resume=never",
        "seed=0",
        "test_split=val",
        f"paths.runs_dir={runs_dir}",
        f"data.cache_dir={cache_dir}",
        f"data.preprocess.pad_size=[{size},{size}]",
        "data.val_subjects=1",
        f"data.loader.batch_size={batch}",
        f"trainer.max_epochs={epochs}",
        f"trainer.iters_per_epoch={iters}",
        f"trainer.val_every={epochs}",
        f"trainer.num_threads={threads}",
        "trainer.progress_bar=false",
    ]
    if data == "chaos":  # native in-plane grid: configs/data/chaos has no target spacing
        overrides.append(f"data.layout.root={root or chaos_root()}")
    elif data == "phantom":  # 4 training, 1 validation, 1 test subject of size x size x 32
        overrides += [
            f"data.layout.size=[{size},{size},{PHANTOM_DEPTH}]",
            "data.layout.n_subjects=6",
            "data.layout.n_test=1",
        ]
    else:
        raise ValueError(f"unknown data {data!r}: chaos or phantom")
    return overrides


def train_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "scseg.train", *overrides]


def env_prefix(env: dict[str, str]) -> str:
    """What a variant's environment changes, as a shell prefix (``SCSEG_TUNE_MALLOC=0 ``; empty for none)."""
    removed = sorted(k for k in os.environ if k not in env)
    changed = sorted(k for k in env if os.environ.get(k) != env[k])
    parts = (["env", *(f"-u {k}" for k in removed)] if removed else []) + [
        f"{k}={shlex.quote(env[k])}" for k in changed
    ]
    return " ".join(parts) + (" " if parts else "")


def run_train_child(command: list[str], env: dict[str, str]) -> dict:
    """Run one scseg-train child; its epoch speeds, allocator line and CPU time (getrusage of children)."""
    usage0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    wall, usage1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.stdout + "\n" + out.stderr
    epochs = parse_epoch_lines(out.stdout)
    if out.returncode != 0 or not epochs:
        raise SystemExit(f"scseg-train failed (exit {out.returncode}):\n{shlex.join(command)}\n{text[-4000:]}")
    allocator = next((m.group(1) for m in map(ALLOCATOR_LINE.match, out.stdout.splitlines()) if m), "?")
    return {
        "slices_per_s": measured_speed(epochs),
        "epochs": epochs,
        "allocator": allocator,
        "user_s": usage1.ru_utime - usage0.ru_utime,
        "sys_s": usage1.ru_stime - usage0.ru_stime,
        "minor_faults": usage1.ru_minflt - usage0.ru_minflt,
        "wall_s": wall,
    }


def machine_line() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "?"
    libc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else "?"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu_model()}, {cores} cores, torch {torch_version}, {libc}, load average {load:.2f} at the start"


def results_table(results: dict[str, list[dict]]) -> str:
    """Markdown: per variant the medians over repeats, and the median of the per-repeat speed ratios against
    ``glibc`` (or the first variant when glibc was not measured)."""
    base = "glibc" if "glibc" in results else next(iter(results))
    lines = [
        f"| variant | allocator | slices/s (median) | x vs {base} (median of per-repeat ratios) | user s | sys s "
        "| sys/user | minor faults | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, runs in results.items():
        ratio = statistics.median(
            r["slices_per_s"] / b["slices_per_s"] for r, b in zip(runs, results[base], strict=False)
        )
        user = statistics.median(r["user_s"] for r in runs)
        system = statistics.median(r["sys_s"] for r in runs)
        lines.append(
            f"| {variant} | {runs[0]['allocator']} | {statistics.median(r['slices_per_s'] for r in runs):.2f} "
            f"| {ratio:.2f} | {user:.1f} | {system:.1f} | {system / max(user, 1e-9):.2f} "
            f"| {statistics.median(r['minor_faults'] for r in runs) / 1e6:.2f} M "
            f"| {statistics.median(r['wall_s'] for r in runs):.1f} |"
        )
    return "\n".join(lines)


def scseg_train_main(args: argparse.Namespace, envs: dict[str, dict[str, str]]) -> None:
    data = resolve_data(args.data)
    root = chaos_root() if data == "chaos" else None
    if data == "chaos" and not (root / "split.json").exists():
        raise SystemExit(f"--data chaos: no CHAOS T2 data at {root} (set SCSEG_CHAOS_ROOT)")
    with tempfile.TemporaryDirectory(prefix="bench_allocator-") as tmp:
        cache = Path(args.cache_dir).expanduser().resolve() if args.cache_dir else Path(tmp) / "cache"
        overrides = train_overrides(
            data,
            Path(tmp) / "runs",
            cache,
            iters=args.iters,
            epochs=args.epochs,
            size=args.size,
            batch=args.batch,
            threads=args.threads,
            root=root,
        )
        where = (
            f"CHAOS T2 ({root}), native grid" if data == "chaos" else f"phantom {args.size}x{args.size}x{PHANTOM_DEPTH}"
        )
        print(
            f"scseg-train end to end: {where}, canvas {args.size}x{args.size}, U-Net width=small se=scse, "
            f"batch {args.batch}, {args.threads} threads, {args.epochs} epochs x {args.iters} batches, "
            f"{args.repeats} alternating repeats"
        )
        print(f"machine: {machine_line()}")
        print(f"commands (in {REPO}; {tmp} is deleted afterwards):")
        commands = {variant: train_command(overrides + TRAIN_OVERRIDES.get(variant, [])) for variant in envs}
        for variant, env in envs.items():
            print(f"  {variant}: {env_prefix(env)}{shlex.join(commands[variant])}")
        t0 = time.perf_counter()
        prepare = subprocess.run(
            [sys.executable, "-c", PREPARE_CODE, *overrides], cwd=REPO, capture_output=True, text=True
        )
        if prepare.returncode != 0:
            raise SystemExit(f"preparing the data cache failed:\n{(prepare.stdout + prepare.stderr)[-4000:]}")
        print(f"data cache {cache} prepared in {time.perf_counter() - t0:.1f} s (not measured)", flush=True)
        results: dict[str, list[dict]] = {v: [] for v in envs}
        for repeat in range(args.repeats):
            for variant, env in envs.items():
                result = run_train_child(commands[variant], env)
                results[variant].append(result)
                speeds = ", ".join(f"{e['slices_per_s']:.1f}" for e in result["epochs"])
                print(
                    f"  repeat {repeat + 1} {variant:8s} {result['slices_per_s']:6.2f} slices/s (epochs: {speeds})"
                    f"  user {result['user_s']:6.1f} s  sys {result['sys_s']:6.1f} s  wall {result['wall_s']:6.1f} s"
                    f"  (allocator: {result['allocator']})",
                    flush=True,
                )
    print()
    print(results_table(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated; missing libraries are skipped (default: glibc,tuned,tcmalloc; "
        "with --scseg-train: tuned,glibc)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant, alternating between variants")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--size", type=int, default=256, help="slice side in pixels (--scseg-train: the canvas, and the phantom's side)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--classes", type=int, default=28, help="output classes (MALC: 27 structures + background)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    end_to_end = parser.add_argument_group("end to end (--scseg-train)")
    end_to_end.add_argument(
        "--scseg-train", action="store_true", help="measure whole `python -m scseg.train` runs instead"
    )
    end_to_end.add_argument("--iters", type=int, default=30, help="batches per epoch")
    end_to_end.add_argument("--epochs", type=int, default=2, help="epochs per run (the first is not measured)")
    end_to_end.add_argument(
        "--data",
        choices=("auto", "chaos", "phantom"),
        default="auto",
        help="auto: CHAOS T2 when $SCSEG_CHAOS_ROOT or ../shared/data/chaos_t2 exists, else the phantom",
    )
    end_to_end.add_argument(
        "--cache-dir", default=None, help="data cache to use and keep (default: a temporary one, deleted)"
    )
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    variants = args.variants or ("tuned,glibc,glibc-nchw" if args.scseg_train else "glibc,tuned,tcmalloc")
    envs = {}
    for variant in variants.split(","):
        env = variant_env(variant)
        if env is None:
            print(f"{variant}: {PRELOADS[variant]} not installed, skipped")
        else:
            envs[variant] = env
    if args.scseg_train:
        scseg_train_main(args, envs)
        return
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
