"""`make gpu-check`: what only a GPU can show, in one script (<= 8 minutes on one H100/H200), no ../shared needed.

0. compiled gradients: one fp32 step of each architecture's scSE network (the demo's width, channels-last) with
   and without torch.compile on the GPU; the two gradients must agree (cosine >= 0.999). The custom autograd
   functions of the SE blocks once compiled to wrong gradients on CUDA (cosine 0.41, docs/gpu.md): this row
   finds such a fault in seconds, before the training checks show it as a network that does not learn;
1. each architecture trains 300 steps on the phantom with trainer=gpu (CUDA, bf16 autocast, channels-last) and
   torch.compile, and must learn (test foreground Dice >= 0.5); beside them, DDP at world size 1 with NCCL
   (torchrun) trains U-Net and writes its run folder, and two references train the same U-Net without the fast
   paths: ``unet-fp32`` (CUDA, fp32, contiguous, eager) and ``unet-cpu`` (this machine's CPU, fp32). When a fast
   check fails to learn, the references say where to look: the fast paths (references pass), CUDA itself (only
   ``unet-cpu`` passes) or the machine's packages (both fail). The runs share the GPU at once: they are checks,
   not timings, and a GPU lease is short;
2. then, alone on the GPU, the benchmark's GPU section (training slices/s per architecture at 256 x 256 in fp32,
   channels-last, bf16 and compile; the paper U-Net's scSE step time against none, interleaved in the same rounds)
   is written to docs/benchmarks_gpu.md with the machine named, and the training check's table appended;
3. last, the benchmark's ``gpu_profile`` section: the paper U-Net's none and scSE steps under the profiler (the
   operators scSE adds, largest first) and the floor a perfectly fused scSE could reach at this GPU's copy
   bandwidth, appended to the page. It runs in its own process, so running out of budget there loses only it.

Every phase runs under a share of ``--budget-s``; a phase that fails or runs out of time is reported as such and the
others still run, so one lease gives every answer it can. Each run's output is kept in ``--out``; a call with
``--phases`` takes the phases it does not run from the previous call's ``--out``, so a check split over two calls
still writes one page.
On a machine without CUDA it prints `no CUDA device` and exits with status 2 at once (tested).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("unet", "sdnet", "fcdensenet")
STEPS = 300
FLOOR = 0.5
TRAIN_SHARE = 0.45  # of the budget, for the training checks together (they run at once)
PHASES = ("grads", "train", "bench", "profile")
NOT_RUN = "not run (--phases)"
BENCH_PAGE, PROFILE_PAGE = "benchmark_gpu.md", "profile.md"  # in --out: each phase's page, kept between calls
GRAD_COSINE = 0.999  # compiled vs eager gradients of one fp32 step: rounding only stays far above this


def train_command(runs: Path, arch: str, *extra: str, launcher: Sequence[str] | None = None) -> list[str]:
    """One phantom run of ``STEPS`` steps in one epoch (the demo experiment's data, model width and learning rate)."""
    return [
        *(launcher or [sys.executable, "-m", "scseg.train"]),
        "experiment=demo",
        f"model={arch}",
        "se=scse",
        "trainer.max_epochs=1",
        f"trainer.iters_per_epoch={STEPS}",
        f"paths.runs_dir={runs}",
        "experiment_name=gpu_check",
        *extra,
    ]


def training_checks(out: Path) -> dict[str, list[str]]:
    """name -> command: each architecture with bf16 + channels-last + compile, U-Net under DDP/NCCL, and the two
    references (U-Net in CUDA fp32 eager, and on the CPU)."""
    checks = {
        arch: train_command(
            out / arch, arch, "trainer=gpu", "trainer.compile=true", "trainer.channels_last=true", "trainer.amp=true"
        )
        for arch in ARCHS
    }
    checks["unet-fp32"] = train_command(
        out / "unet-fp32", "unet", "trainer=gpu", "trainer.amp=false", "trainer.channels_last=false"
    )
    checks["unet-cpu"] = train_command(out / "unet-cpu", "unet", "trainer.device=cpu", "trainer.amp=false")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    launcher = [*torchrun, "-m", "scseg.train"]
    checks["ddp"] = train_command(out / "ddp", "unet", "trainer=ddp", "trainer.backend=nccl", launcher=launcher)
    return checks


def run_checks(checks: dict[str, list[str]], out: Path, timeout_s: float) -> list[dict]:
    """Start every check at once, wait until all end or ``timeout_s`` passes; one result row per check."""
    started = time.perf_counter()
    procs = {}
    for name, command in checks.items():
        log = (out / f"{name}.log").open("w")
        log.write(" ".join(command) + "\n\n")
        log.flush()
        procs[name] = (subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), log)
    rows = []
    for name, (proc, log) in procs.items():
        try:
            proc.wait(timeout=max(1.0, timeout_s - (time.perf_counter() - started)))
            state = "done" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            state = f"stopped at the {timeout_s:.0f} s limit"
        log.close()
        rows.append({"check": name, "state": state, "seconds": time.perf_counter() - started, **run_result(out / name)})
    return rows


def run_result(runs: Path) -> dict:
    """Test Dice, precision and device from the check's run folder (empty when it wrote none)."""
    summaries = sorted(runs.glob("gpu_check/*/summary.json"), key=lambda p: p.stat().st_mtime)
    if not summaries:
        return {}
    summary = json.loads(summaries[-1].read_text())
    return {"dice": summary.get("fg_mean"), "precision": summary.get("precision"), "device": summary.get("device")}


def compiled_gradients(arch: str, device: str, overrides: Sequence[str] = ()) -> dict:
    """One fp32 training step of the demo-width scSE ``arch`` (channels-last), eager and under torch.compile, on
    ``device``: the cosine between the two gradients and their norms. Dropout is off (the compiled graph draws
    other random numbers); BatchNorm stays in training mode, whose output the running statistics do not change."""
    import torch

    from scseg.config import compose_train_config
    from scseg.engine.run import build_model
    from scseg.engine.spec import RunSpec

    started = time.perf_counter()
    spec = RunSpec.from_config(compose_train_config(["experiment=demo", f"model={arch}", "se=scse", *overrides]))
    classes = 11  # the phantom's label map
    torch.manual_seed(0)
    model = build_model(spec, classes, 1).to(device).to(memory_format=torch.channels_last).train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 64, 64, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (4, 64, 64), generator=g).to(device)

    def gradients(module: torch.nn.Module) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(module(x).float(), y).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    eager = gradients(model)
    compiled = gradients(torch.compile(model))
    cosine = float(torch.nn.functional.cosine_similarity(eager, compiled, dim=0))
    return {
        "check": arch,
        "cosine": cosine,
        "norm_eager": float(eager.norm()),
        "norm_compiled": float(compiled.norm()),
        "seconds": time.perf_counter() - started,
        "pass": cosine >= GRAD_COSINE,
    }


def gradient_table(rows: list[dict]) -> str:
    lines = [
        "### Compiled gradients: one fp32 step, eager against torch.compile (demo width, scSE, channels-last)",
        "",
        f"Pass: cosine between the two gradients >= {GRAD_COSINE}.",
        "",
        "| arch | cosine | gradient norm eager | compiled | seconds | pass |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['check']} | failed: {r['error']} | - | - | - | no |")
            continue
        passed = "yes" if r["pass"] else "no"
        lines.append(
            f"| {r['check']} | {r['cosine']:.4f} | {r['norm_eager']:.4g} | {r['norm_compiled']:.4g} | "
            f"{r['seconds']:.0f} | {passed} |"
        )
    return "\n".join(lines) + "\n"


def gradient_checks(device: str) -> list[dict]:
    """:func:`compiled_gradients` of every architecture; a check that raises is a row saying so."""
    rows = []
    for arch in ARCHS:
        try:
            rows.append(compiled_gradients(arch, device))
        except Exception as error:  # noqa: BLE001 - reported in the table, the other checks still run
            rows.append({"check": arch, "error": f"{type(error).__name__}: {str(error)[:200]}", "pass": False})
        print(f"compiled gradients {arch}: {rows[-1]}", flush=True)
    return rows


def check_table(rows: list[dict]) -> str:
    lines = [
        f"### Training check: {STEPS} steps on the phantom (experiment=demo, se=scse), all runs at once",
        "",
        "Each architecture with trainer=gpu, bf16 autocast, channels-last and torch.compile; `ddp` is U-Net under "
        "torchrun with NCCL at world size 1; the references `unet-fp32` (CUDA, fp32, contiguous, eager) and "
        "`unet-cpu` (the same machine's CPU, fp32) train without the fast paths. "
        f"Pass: test foreground Dice >= {FLOOR}. Seconds include start-up, the phantom's generation, compilation "
        "and evaluation, with the runs sharing the GPU and the CPU.",
        "",
        "| check | state | test fg Dice | precision | seconds | pass |",
        "|---|---|---:|---|---:|---|",
    ]
    for r in rows:
        dice = r.get("dice")
        passed = "yes" if r["state"] == "done" and dice is not None and dice >= FLOOR else "no"
        shown = "-" if dice is None else f"{dice:.3f}"
        precision = r.get("precision") or "-"
        lines.append(f"| {r['check']} | {r['state']} | {shown} | {precision} | {r['seconds']:.0f} | {passed} |")
    return "\n".join(lines) + "\n"


GPU_INTRO = """# GPU benchmarks

Written by `make gpu-check` (`scripts/gpu_check.py`) on a CUDA machine; do not edit by hand. The GPU section of
`scripts/benchmark.py` (training slices/s at 256 x 256 per architecture and mode, the paper U-Net's scSE step time
against none, interleaved in the same rounds) and the training check (each architecture learns the phantom with
bf16 autocast, channels-last and torch.compile; DDP with NCCL; two references without the fast paths). The CPU
figures are on [benchmarks.md](benchmarks.md); the protocol is the same.
"""


def gpu_page(benchmark_markdown: str, checks: str, profile: str = "") -> str:
    """The GPU page: its own introduction, then the benchmark's results (from its ``## Results`` heading on; the
    benchmark writer's introduction describes the CPU page), the training check's table and the profile's
    sections (:func:`sections_of`)."""
    _, found, results = benchmark_markdown.partition("## Results")
    body = (found + results) if found else benchmark_markdown
    page = GPU_INTRO + "\n" + body.strip("\n") + "\n\n" + checks
    return page + ("\n" + profile.strip("\n") + "\n" if profile else "")


def sections_of(benchmark_markdown: str) -> str:
    """A benchmark page's sections and targets (from its first ``###`` heading on), without the page's
    introduction and machine line: what the profile phase appends to the GPU page."""
    _, found, rest = benchmark_markdown.partition("\n### ")
    return "### " + rest if found else benchmark_markdown


def run_benchmark(sections: str, out: Path, page: Path, timeout_s: float) -> int | str:
    """``scripts/benchmark.py --sections ...`` in its own process: its exit status, or why it stopped."""
    command = [sys.executable, "scripts/benchmark.py", "--sections", sections, "--out", str(out)]
    command += ["--markdown", str(page), "--command", "make gpu-check"]
    try:
        return subprocess.run(command, cwd=REPO, timeout=max(1.0, timeout_s)).returncode
    except subprocess.TimeoutExpired:
        return f"stopped at the {timeout_s:.0f} s left of the budget"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget for the whole check")
    parser.add_argument("--out", default=str(REPO / "runs" / "gpu_check"), help="folder for run folders and logs")
    parser.add_argument("--page", default=str(REPO / "docs" / "benchmarks_gpu.md"), help="the GPU benchmarks page")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="comma-separated: grads (compiled vs eager gradients), train (the training checks), bench (the GPU "
        "benchmark section), profile (where scSE's step time goes, and its floor); default all four",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: gpu-check needs one (see the device tool or a CUDA machine)")
        return 2
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"gpu-check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    phases = set(args.phases.split(","))
    if not phases <= set(PHASES):
        print(f"--phases: expected some of {', '.join(PHASES)}; got {args.phases!r}")
        return 2
    fresh: dict = {}
    if "grads" in phases:
        fresh["gradients"] = gradient_checks("cuda")
    if "train" in phases:
        share = TRAIN_SHARE if "bench" in phases else 1.0
        fresh["checks"] = run_checks(training_checks(out), out, share * args.budget_s)
        for r in fresh["checks"]:
            print(f"{r['check']}: {r['state']}, test Dice {r.get('dice')}, {r['seconds']:.0f} s", flush=True)
    if "bench" in phases:
        # the benchmark first: the profile takes what it leaves (run it alone with --phases profile for more)
        fresh["benchmark"] = run_benchmark(
            "gpu", out / "benchmark_gpu.json", out / BENCH_PAGE, budget_left(args, started)
        )
    if "profile" in phases:
        fresh["profile"] = run_benchmark(
            "gpu_profile", out / "profile.json", out / PROFILE_PAGE, budget_left(args, started)
        )
    page = Path(args.page)
    report = write_report(out, page, fresh)
    failed = [r["check"] for r in report["checks"] if not (r["state"] == "done" and (r.get("dice") or 0) >= FLOOR)]
    failed += [f"{r['check']} gradients" for r in report["gradients"] if not r["pass"]]
    if failed:
        print(f"gpu-check: failed or below the Dice floor {FLOOR}: {', '.join(failed)}")
    print(f"gpu-check: {time.perf_counter() - started:.0f} s; page {page}", flush=True)
    return 1 if failed or any(report[k] not in (0, NOT_RUN) for k in ("benchmark", "profile")) else 0


def write_report(out: Path, page: Path, fresh: dict) -> dict:
    """The GPU page and ``out/checks.json`` from this call's phases (``fresh``) and, for the phases it did not run,
    the previous call's results in the same ``--out``: a lease can split the check over calls (``--phases
    grads,train``, then ``--phases bench,profile``) and still get one page with every answer."""
    previous_file = out / "checks.json"
    previous = json.loads(previous_file.read_text()) if previous_file.is_file() else {}
    report = {"gradients": [], "checks": [], "benchmark": NOT_RUN, "profile": NOT_RUN}
    report.update({k: previous[k] for k in report if k in previous})
    report.update(fresh)
    bench, profile = report["benchmark"], report["profile"]
    results = (out / BENCH_PAGE).read_text() if bench == 0 else f"Benchmark: {bench}.\n"
    profile_text = ""
    if profile != NOT_RUN:
        profile_text = sections_of((out / PROFILE_PAGE).read_text()) if profile == 0 else f"Profile: {profile}.\n"
    grads, rows = report["gradients"], report["checks"]
    tables = (gradient_table(grads) + "\n" if grads else "") + (check_table(rows) if rows else "")
    page.write_text(gpu_page(results, tables, profile_text))
    previous_file.write_text(json.dumps(report, indent=2))
    return report


def budget_left(args: argparse.Namespace, started: float) -> float:
    return args.budget_s - (time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
