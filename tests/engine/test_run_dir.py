"""Run-folder identity: config hash, run names, the exclusive lock, status.json and every resume decision."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from scseg.engine.checkpoint import CheckpointManager
from scseg.engine.run_dir import (
    ConfigMismatchError,
    RunLock,
    RunLockedError,
    RunStateError,
    checkpoint_dir,
    read_status,
    resolve_resume,
    write_status,
)
from scseg.run_identity import config_hash, parse_run_name, run_name, short_hash


def _cfg(**changes) -> dict:
    cfg = {
        "seed": 1,
        "model": {"arch": "unet", "se": "scse", "aggregation": "add"},
        "data": {"name": "malc", "loader": {"num_workers": 4, "batch_size": 8}},
        "trainer": {"epochs": 10, "progress_bar": True},
        "paths": {"data_root": "/data", "runs": "/runs"},
        "resume": "auto",
    }
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return cfg


# --- config hash ----------------------------------------------------------------------------------------------


def test_hash_ignores_key_order_and_excluded_keys_but_not_the_rest():
    base = config_hash(_cfg())
    assert len(base) == 64 and short_hash(base) == base[:8]
    reordered = dict(reversed(list(_cfg().items())))
    assert config_hash(reordered) == base
    for change in (
        {"paths__data_root": "/elsewhere"},
        {"resume": "never"},
        {"data__loader__num_workers": 0},
        {"trainer__progress_bar": False},
    ):
        assert config_hash(_cfg(**change)) == base, change
    for change in ({"seed": 2}, {"model__aggregation": "max"}, {"data__loader__batch_size": 4}):
        assert config_hash(_cfg(**change)) != base, change
    assert config_hash(_cfg(seed=2), exclude=("seed", "paths", "resume", "data", "trainer")) == config_hash(
        _cfg(), exclude=("seed", "paths", "resume", "data", "trainer")
    )


def test_dictconfig_interpolations_resolve_except_machine_specific_ones():
    def make(data_root: str, epochs: int):
        return OmegaConf.create(
            {
                **_cfg(),
                "paths": {"data_root": data_root},
                "base_epochs": epochs,
                "trainer": {"epochs": "${base_epochs}", "progress_bar": True},
                "data": {
                    "name": "malc",
                    "root": "${paths.data_root}/malc",
                    "home": "${oc.env:HOME}",
                    "loader": {"num_workers": 4, "batch_size": 8},
                },
            }
        )

    base = config_hash(make("/data", 10))
    assert config_hash(make("/other/machine", 10)) == base  # data.root hashed as its text
    assert config_hash(make("/data", 20)) != base  # trainer.epochs resolved
    literal = make("/data", 10)
    literal.trainer.epochs = 10
    assert config_hash(literal) == base  # a resolved interpolation hashes like the literal value
    missing = make("/data", 10)
    missing.model.se = "???"
    with pytest.raises(ValueError, match=r"model\.se"):
        config_hash(missing)


def test_short_hash_rejects_non_hex():
    with pytest.raises(ValueError, match="hex digest"):
        short_hash("xyz")


# --- run names --------------------------------------------------------------------------------------------------


def test_run_name_format_and_round_trip():
    assert run_name("unet", "scse", "max", 3, "0123abcd") == "unet-scse-max-seed3-0123abcd"
    assert run_name("sdnet", "cse", "max", 0, "0123abcd") == "sdnet-cse-seed0-0123abcd"  # aggregation only for scse
    for name in ("unet-scse-max-seed3-0123abcd", "fcdensenet56-none-seed12-ffffffff"):
        info = parse_run_name(name)
        assert run_name(info["arch"], info["se"], info["aggregation"], info["seed"], info["hash8"]) == name
    with pytest.raises(ValueError, match="aggregation"):
        run_name("unet", "scse", None, 1, "0123abcd")
    with pytest.raises(ValueError, match="arch"):
        run_name("u-net", "none", None, 1, "0123abcd")
    with pytest.raises(ValueError, match="hash8"):
        run_name("unet", "none", None, 1, "0123")
    with pytest.raises(ValueError, match="not a run name"):
        parse_run_name("unet-scse-seed1-0123abcd")


# --- lock ---------------------------------------------------------------------------------------------------------


def test_second_lock_on_the_same_folder_fails_naming_it(tmp_path):
    run = tmp_path / "run"
    with RunLock(run) as lock:
        assert lock.locked
        with pytest.raises(RunLockedError, match=str(run)):
            RunLock(run).acquire()  # a second open file description conflicts even in this process
    with RunLock(run):  # released
        pass


def test_lock_held_by_another_process(tmp_path):
    holder = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    tmp_path.joinpath("run").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path / "run" / ".lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match="locked by another process"):
            RunLock(tmp_path / "run").acquire()
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    with RunLock(tmp_path / "run"):
        pass


# --- status ---------------------------------------------------------------------------------------------------------


def test_status_round_trip_and_errors(tmp_path):
    assert read_status(tmp_path) is None
    write_status(tmp_path, "failed", "abc", traceback="Traceback ...", epoch=3)
    status = read_status(tmp_path)
    assert status["state"] == "failed" and status["config_hash"] == "abc" and status["epoch"] == 3
    assert status["traceback"] == "Traceback ..." and {"updated_at", "pid", "host"} <= set(status)
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary file left
    with pytest.raises(ValueError, match="running, done, failed"):
        write_status(tmp_path, "paused", "abc")
    with pytest.raises(ValueError, match="reserved"):
        write_status(tmp_path, "done", "abc", pid=1)
    with pytest.raises(ValueError, match="plain JSON"):
        write_status(tmp_path, "done", "abc", obj=object())
    assert read_status(tmp_path)["state"] == "failed"  # refused writes left the file alone
    (tmp_path / "status.json").write_text("{truncated")
    with pytest.raises(RunStateError, match="status.json"):
        read_status(tmp_path)


# --- resume decision ---------------------------------------------------------------------------------------------


def _run(tmp_path, state: str | None, checkpoint: bool, hash_: str = "h1"):
    run = tmp_path / "run"
    run.mkdir()
    if state is not None:
        write_status(run, state, hash_)
    if checkpoint:
        CheckpointManager(checkpoint_dir(run)).save({"epoch": 1})
    return run


@pytest.mark.parametrize("resume", ["auto", "never", "must"])
def test_hash_mismatch_is_refused_naming_both_hashes(tmp_path, resume):
    run = _run(tmp_path, "running", True, hash_="h_stored")
    with pytest.raises(ConfigMismatchError, match="h_stored.*h_new"):
        resolve_resume(run, "h_new", resume)


@pytest.mark.parametrize(
    ("resume", "state", "checkpoint", "expected"),
    [
        ("never", "done", True, "fresh"),
        ("never", "running", True, "fresh"),
        ("never", None, False, "fresh"),
        ("auto", "done", False, "skip"),
        ("must", "done", True, "skip"),
        ("auto", "running", True, "resume"),
        ("auto", "failed", True, "resume"),
        ("must", "failed", True, "resume"),
        ("auto", None, False, "fresh"),
        ("auto", "failed", False, "fresh"),
    ],
)
def test_resume_decision_table(tmp_path, resume, state, checkpoint, expected):
    assert resolve_resume(_run(tmp_path, state, checkpoint), "h1", resume) == expected


@pytest.mark.parametrize("resume", ["auto", "must"])
def test_checkpoint_without_status_cannot_be_verified(tmp_path, resume):
    with pytest.raises(RunStateError, match="cannot be verified"):
        resolve_resume(_run(tmp_path, None, True), "h1", resume)


@pytest.mark.parametrize("state", [None, "running"])
def test_must_without_checkpoint_fails(tmp_path, state):
    with pytest.raises(RunStateError, match="no checkpoint"):
        resolve_resume(_run(tmp_path, state, False), "h1", "must")


def test_unknown_resume_mode(tmp_path):
    with pytest.raises(ValueError, match="auto, never, must"):
        resolve_resume(tmp_path, "h1", "sometimes")


def test_status_file_is_plain_json(tmp_path):
    write_status(tmp_path, "done", "h1", best_dice=0.8)
    assert json.loads((tmp_path / "status.json").read_text())["best_dice"] == 0.8
