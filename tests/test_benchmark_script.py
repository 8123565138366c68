"""scripts/benchmark.py runs end to end (quick mode) and writes the JSON the docs page is built from.

Timings are not asserted (they mean nothing at quick sizes); what is: the sections' structure, and that every
Dice implementation gives the same numbers. Budget: about 10 s on 2 cores (one thread, to stay out of the way of
a busy machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


def test_quick_benchmark_writes_json_and_markdown(tmp_path):
    out, page = tmp_path / "bench.json", tmp_path / "benchmarks.md"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--threads=1",
            "--sections=se_blocks,evaluation,precision",
            f"--out={out}",
            f"--markdown={page}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())

    assert {"cpu", "cores", "threads", "torch", "allocator"} <= set(report["meta"])
    assert report["meta"]["threads"] == 1 and report["quick"] is True
    assert set(report["sections"]) == {"se_blocks", "evaluation", "precision"}
    assert isinstance(report["meta"]["cpu_features"], list)  # the page names the CPU's AVX-512 / BF16 / AMX flags
    precision = report["sections"]["precision"]["tables"][0]["rows"]
    assert [r["width"] for r in precision] == ["cpu", "paper"] and all(r["speedup"] > 0 for r in precision)

    se = report["sections"]["se_blocks"]
    assert se["skipped"] is None and se["outputs_agree"] is True
    rows = se["tables"][0]["rows"]
    assert {r["block"] for r in rows} == {"cse", "sse", "scse-add", "scse-max", "scse-mul", "scse-concat"}
    for row in rows:
        assert row["scseg_ms"] > 0 and row["reference_ms"] > 0
        assert row["scseg_kept"] > 0
        if row["block"] in ("scse-add", "scse-max", "scse-mul"):
            assert row["scseg_kept"] < 1.25  # only x (plus the small gates) is kept for backward

    evaluation = report["sections"]["evaluation"]
    assert evaluation["agree"] is True
    methods = {r["method"] for r in evaluation["tables"][0]["rows"]}
    assert {"scseg", "numpy loop (sum)"} <= methods
    assert any(t["name"].startswith("scseg speed-up over the numpy loop") for t in report["targets"])
    restore = evaluation["tables"][1]
    assert {r["method"] for r in restore["rows"]} == {"scseg (box-wise)", "dense (every class everywhere)"}
    # the box-wise restore gives the dense labels; where they differ, two classes tie to rounding
    assert evaluation["restore"]["ties"] == evaluation["restore"]["checked"]

    text = page.read_text()
    assert text.startswith("# Benchmarks") and "## Results" in text and "Command: `python scripts/benchmark.py" in text
    assert "### SE blocks" in result.stdout and "### Evaluation" in result.stdout


def test_bracketed_ratios_cancel_a_linear_drift(monkeypatch):
    """A machine slowing down by 2 % per call: ratios to the neighbouring base runs still read 1.3 and 1.05 exactly,
    where a ratio to a base run several calls away (what ``interleaved`` rounds pair) would not."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("scseg_benchmark_script", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, benchmark)  # its dataclasses look their module up there
    spec.loader.exec_module(benchmark)
    common = sys.modules["bench.common"]  # the protocols live in the bench package beside the script
    clock = {"now": 0.0, "calls": 0}

    def costing(factor):
        def run():
            clock["now"] += factor * (1 + 0.02 * clock["calls"])
            clock["calls"] += 1

        return run

    monkeypatch.setattr(common.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(common.gc, "collect", lambda: 0)
    variants = {"none": costing(1.0), "slow": costing(1.3), "light": costing(1.05)}
    times, ratios = common.bracketed(variants, "none", repeats=4, warmup=1)
    assert len(times["none"]) == 9 and len(times["slow"]) == len(ratios["slow"]) == 4
    assert all(abs(r - 1.3) < 1e-12 for r in ratios["slow"])
    assert all(abs(r - 1.05) < 1e-12 for r in ratios["light"])
    far = times["slow"][0] / times["none"][-1]
    assert abs(far - 1.3) > 0.05  # the drift a far-away pairing carries


def test_gpu_check_says_no_cuda_device_at_once(tmp_path):
    """`make gpu-check` on a machine without CUDA: one line and exit status 2, nothing trained."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run")
    script = SCRIPT.parent / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout.startswith("no CUDA device"), done.stdout + done.stderr


def _gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT.parent / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_runs_its_checks_at_once_and_reports_each(tmp_path):
    """One check writes a run folder and passes, one fails, one outlives the limit: each is reported as such, the
    three together take about the limit (they run at once), and the table says which passed."""
    gpu_check = _gpu_check_module()
    summary = tmp_path / "good" / "gpu_check" / "unet-x"
    write = f"import json, pathlib; p = pathlib.Path({str(summary)!r}); p.mkdir(parents=True); "
    write += "(p / 'summary.json').write_text(json.dumps({'fg_mean': 0.8, 'precision': 'bf16', 'device': 'cuda'}))"
    checks = {
        "good": [sys.executable, "-c", write],
        "bad": [sys.executable, "-c", "raise SystemExit(3)"],
        "slow": [sys.executable, "-c", "import time; time.sleep(60)"],
    }
    rows = {r["check"]: r for r in gpu_check.run_checks(checks, tmp_path, timeout_s=4)}
    assert rows["good"]["state"] == "done" and rows["good"]["dice"] == 0.8
    assert rows["bad"]["state"] == "failed (exit 3)" and "dice" not in rows["bad"]
    assert rows["slow"]["state"].startswith("stopped at the 4 s limit") and rows["slow"]["seconds"] < 30
    assert (tmp_path / "slow.log").read_text().startswith(sys.executable)
    table = gpu_check.check_table(list(rows.values()))
    assert "| good | done | 0.800 | bf16 |" in table and table.count("| no |") == 2


def test_gpu_check_commands_compile_every_architecture_and_use_nccl(tmp_path):
    gpu_check = _gpu_check_module()
    checks = gpu_check.training_checks(tmp_path)
    assert set(checks) == {"unet", "sdnet", "fcdensenet", "ddp", "unet-fp32", "unet-cpu"}
    for arch in ("unet", "sdnet", "fcdensenet"):
        assert {"trainer=gpu", "trainer.compile=true", f"model={arch}"} <= set(checks[arch])
    # the references: same U-Net and steps without the fast paths, on CUDA and on the CPU
    assert {"trainer=gpu", "trainer.amp=false", "trainer.channels_last=false"} <= set(checks["unet-fp32"])
    assert "trainer.compile=true" not in checks["unet-fp32"]
    assert {"trainer.device=cpu", "trainer.amp=false"} <= set(checks["unet-cpu"])
    assert "trainer=gpu" not in checks["unet-cpu"]
    assert "torch.distributed.run" in checks["ddp"] and "trainer.backend=nccl" in checks["ddp"]
    assert all(f"paths.runs_dir={tmp_path / name}" in command for name, command in checks.items())


def test_gpu_page_keeps_the_results_under_its_own_introduction():
    gpu_check = _gpu_check_module()
    bench = "# Benchmarks\n\nGenerated by ... `make bench` (the CPU page)\n\n## Results\n\n| a |\n"
    page = gpu_check.gpu_page(bench, "### Training check\n")
    assert page.startswith("# GPU benchmarks") and "make bench" not in page
    assert "## Results\n\n| a |" in page and page.endswith("### Training check\n")
    assert gpu_check.gpu_page("Benchmark: not run (--phases).\n", "").startswith(gpu_check.GPU_INTRO)


def test_gpu_check_compares_compiled_and_eager_gradients(monkeypatch):
    """The gradient row on this machine's CPU (what the check runs on CUDA): compiled and eager agree; a check that
    raises is a failed row, not a crash."""
    gpu_check = _gpu_check_module()
    row = gpu_check.compiled_gradients("unet", "cpu")
    assert row["pass"] and row["cosine"] > gpu_check.GRAD_COSINE and row["norm_eager"] > 0
    assert abs(row["norm_compiled"] / row["norm_eager"] - 1) < 1e-3
    monkeypatch.setattr(gpu_check, "ARCHS", ("nonesuch",))
    (bad,) = gpu_check.gradient_checks("cpu")
    assert not bad["pass"]
    assert "nonesuch" in bad["error"] or "model" in bad["error"], bad["error"]
    table = gpu_check.gradient_table([row, bad])
    assert f"| unet | {row['cosine']:.4f} |" in table and "| nonesuch | failed:" in table and table.count("| no |") == 1


def test_gpu_page_appends_the_profile_sections():
    gpu_check = _gpu_check_module()
    profile_page = "# Benchmarks\n\nintro\n\n## Results\n\nMachine: x\n\n### GPU: where\n\n| t |\n\n### Targets\n"
    part = gpu_check.sections_of(profile_page)
    assert part.startswith("### GPU: where") and "Machine" not in part and part.rstrip().endswith("### Targets")
    page = gpu_check.gpu_page("## Results\n\n| a |\n", "### Training check\n", part)
    assert page.index("### Training check") < page.index("### GPU: where") and page.endswith("### Targets\n")


def _bench_module(name):
    import importlib

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return importlib.import_module(f"bench.{name}")
    finally:
        sys.path.remove(str(SCRIPT.parent))


def test_profile_rows_name_what_scse_adds_and_the_floor_is_seven_passes():
    """Operators ranked by the time scSE adds, shares of the whole difference summing to 100; the floor is seven
    passes over the SE sites' bytes at the measured bandwidth, against the none step."""
    profile = _bench_module("gpu_profile")
    none = {"conv": 10.0, "bn": 2.0, "gone": 0.5}
    scse = {"conv": 10.5, "bn": 2.0, "mul": 1.0, "mean": 0.25}
    rows = profile.added_ops(none, scse)
    assert [r["op"] for r in rows] == ["mul", "conv", "mean", "(all other operators, net)"]
    assert rows[-1]["delta_ms"] == pytest.approx(-0.5)  # "gone" left scSE's profile
    assert sum(r["share"] for r in rows) == pytest.approx(100.0)
    times = {"none|m": [0.100, 0.102, 0.098], "scse|m": [0.120, 0.118, 0.122]}
    row = profile.floor_row("m", site_bytes=10**8, bandwidth=10**12, times=times, batch=32)
    assert row["floor_ms"] == pytest.approx(1000 * 7 * 10**8 / 10**12)
    assert row["floor_pct"] == pytest.approx(100 * 0.0007 / 0.100)
    assert row["measured_pct"] == pytest.approx(20.0) and row["slices"] == pytest.approx(320.0)


def test_gpu_profile_section_runs_its_code_path_on_the_cpu(tmp_path):
    """The profile section end to end at quick sizes on the CPU (what make gpu-check runs on CUDA): a floor row with
    the SE sites' bytes, and an operator table in which scSE's own autograd nodes appear."""
    out = tmp_path / "profile.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--threads=1", "--sections=gpu_profile", "--gpu-device=cpu"]
    result = subprocess.run([*command, f"--out={out}"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    section = json.loads(out.read_text())["sections"]["gpu_profile"]
    assert section["skipped"] is None and not [n for n in section["notes"] if "failed" in n], section["notes"]
    (floor,) = section["tables"][0]["rows"]
    # paper U-Net at 32 x 32, batch 2: 8 SE sites of 64 channels (se.positions: 4 encoder and 4 decoder blocks)
    pixels = 2 * (32 * 32 + 16 * 16 + 8 * 8 + 4 * 4) * 2
    assert floor["site_mib"] * 2**20 == 64 * pixels * 2  # bf16 under autocast: 2 bytes an element
    assert floor["bandwidth"] > 0 and floor["floor_ms"] > 0 and floor["none_ms"] > 0
    # scSE's own autograd nodes are profiled in its step and absent from none's (the ranked table of added time
    # depends on timings, which a busy 2-core machine reorders; the profiles themselves do not)
    profiles = section["raw"]["bf16 channels-last"]["ops"]
    assert any("ScSE" in op for op in profiles["scse"]) and not any("ScSE" in op for op in profiles["none"])
    assert len(section["tables"][1]["rows"]) >= 2  # at least one operator scSE adds, then the net rest


def test_gpu_check_split_over_two_calls_writes_one_page(tmp_path):
    """``--phases grads,train`` then ``--phases bench,profile`` in the same --out: the second call's page still
    holds the first call's tables, and a failed phase of either call is kept in checks.json."""
    gpu_check = _gpu_check_module()
    page = tmp_path / "benchmarks_gpu.md"
    grad = {"check": "unet", "cosine": 1.0, "norm_eager": 1.0, "norm_compiled": 1.0, "seconds": 3, "pass": True}
    check = {"check": "unet", "state": "done", "dice": 0.8, "precision": "bf16", "seconds": 80}
    first = gpu_check.write_report(tmp_path, page, {"gradients": [grad], "checks": [check]})
    assert first["benchmark"] == gpu_check.NOT_RUN and "Benchmark: not run" in page.read_text()
    (tmp_path / gpu_check.BENCH_PAGE).write_text("# Benchmarks\n\n## Results\n\n| slices |\n")
    (tmp_path / gpu_check.PROFILE_PAGE).write_text("# B\n\n## Results\n\nMachine: m\n\n### GPU: where\n\n| op |\n")
    second = gpu_check.write_report(tmp_path, page, {"benchmark": 0, "profile": "stopped at the 5 s left"})
    text = page.read_text()
    assert "### Compiled gradients" in text and "| unet | done | 0.800 |" in text and "| slices |" in text
    assert "Profile: stopped at the 5 s left." in text and "### GPU: where" not in text
    assert second["checks"] == [check] and second["profile"].startswith("stopped")
    gpu_check.write_report(tmp_path, page, {"profile": 0})
    assert "### GPU: where" in page.read_text() and "| unet | done | 0.800 |" in page.read_text()
