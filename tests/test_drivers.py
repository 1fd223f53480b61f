"""Real processes on one study: several drivers at once, signals sent to a running search, impossible requests.

Each driver is its own ``autoembed search`` process, as a user on several machines would start them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autoembed.study import load_existing

PG_URL = os.environ.get("AUTOEMBED_TEST_POSTGRES_URL")

FAST = """
metric: recall@1
params:
  backbone_lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
  warmup_ratio: {type: float, low: 0.0, high: 0.3}
fixed: {training.max_steps: 1, training.batch_size: 8, data.max_seq_length: 16}
pruner: {type: none}
sampler: {type: random}
"""

# long enough to be interrupted mid-trial: evaluations every step keep it reporting
SLOW = """
metric: recall@1
params:
  backbone_lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
fixed: {training.max_steps: 100000, training.batch_size: 8, evaluation.every_steps: 5, data.max_seq_length: 16}
pruner: {type: none}
"""


def search_cmd(tiny_model: Path, data: dict[str, Path], space: Path, study: str, storage: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "autoembed.cli", "search",
        "--model", str(tiny_model), "--train", str(data["train"]), "--val", str(data["val"]), "--corpus", str(data["corpus"]),
        "--space", str(space), "--study", study, "--storage", storage, "--cpus-per-trial", "1", *extra,
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


def run_drivers(cmd: list[str], n: int, cwd: Path) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def check_shared_study(study: optuna.Study, total: int) -> None:
    trials = study.get_trials()
    decided = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(decided) == total, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # a FAIL here may only be a trial refused because another driver took the last place at the same moment
    assert all(t.user_attrs["fail_reason"].startswith("not run:") for t in trials if t.state == TrialState.FAIL)
    # each driver samples apart: no two trials share a sample, and each trial records its own seed
    samples = [tuple(sorted(t.params.items())) for t in decided]
    assert len(set(samples)) == len(samples)
    assert len({t.user_attrs["sampler_seed"] for t in decided}) == len(decided)
    assert len({t.number for t in trials}) == len(trials)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_three_drivers_share_one_study(backend, tmp_path, tiny_model, toy_data):
    """Optuna's bar: several processes x 20 trials on one study; 0 lost, 0 duplicated, the exact total."""
    if backend == "postgres":
        if not PG_URL:
            assert not os.environ.get("CI"), "CI must provide AUTOEMBED_TEST_POSTGRES_URL (scripts/test.sh starts PostgreSQL)"
            pytest.skip("no PostgreSQL (AUTOEMBED_TEST_POSTGRES_URL unset)")
        storage = PG_URL
    else:
        storage = f"sqlite:///{tmp_path}/shared.db"
    space = tmp_path / "space.yaml"
    space.write_text(FAST)
    name = f"drivers-{uuid.uuid4().hex[:8]}"
    results = run_drivers(search_cmd(tiny_model, toy_data, space, name, storage, "--executor", "inline", "--trials", "60"), 3, tmp_path)
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    check_shared_study(load_existing(name, storage), 60)


def start_search(cmd: list[str], cwd: Path) -> subprocess.Popen:
    """Start a search in its own session, as a terminal would run it."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return proc


def wait_for_trial(storage: str, name: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            trials = load_existing(name, storage).get_trials(states=(TrialState.RUNNING,))
        except Exception:  # the study does not exist yet
            trials = []
        if any(t.intermediate_values for t in trials):
            return
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("the search never got to a trial's first evaluation")


def ray_processes() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "raylet|gcs_server|ray::"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("executor", "signum", "code"),
    [("inline", signal.SIGINT, 130), ("inline", signal.SIGTERM, 143), ("ray", signal.SIGTERM, 143), ("ray", signal.SIGINT, 130)],
)
def test_a_signal_stops_the_search_gracefully(executor, signum, code, tmp_path, tiny_model, toy_data):
    space = tmp_path / "space.yaml"
    space.write_text(SLOW)
    storage = f"sqlite:///{tmp_path}/s.db"
    before = ray_processes()
    proc = start_search(search_cmd(tiny_model, toy_data, space, "sig", storage, "--executor", executor, "--trials", "3"), tmp_path)
    wait_for_trial(storage, "sig", proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == code, stderr[-3000:]
    assert stdout == ""  # nothing claims success
    assert f"interrupted by {name}" in stderr and "rerun to resume" in stderr
    assert "Traceback" not in stderr
    (trial,) = load_existing("sig", storage).get_trials()
    assert trial.state == TrialState.FAIL and f"interrupted by {name}" in trial.user_attrs["fail_reason"]
    if executor == "ray":
        deadline = time.monotonic() + 30
        while ray_processes() - before and time.monotonic() < deadline:
            time.sleep(1)
        assert ray_processes() - before == set()  # no raylet, GCS or worker outlives the search


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--cpus-per-trial", "64"], "64 CPUs"),
        (["--gpus-per-trial", "0.5"], "0.5 GPUs"),
    ],
)
def test_a_request_no_node_can_meet_is_refused_before_the_study(flags, words, tmp_path, tiny_model, toy_data):
    space = tmp_path / "space.yaml"
    space.write_text(FAST)
    cmd = search_cmd(tiny_model, toy_data, space, "big", f"sqlite:///{tmp_path}/big.db", "--trials", "1")
    at = cmd.index("--cpus-per-trial")
    cmd = cmd[:at] + cmd[at + 2 :] + flags
    result = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and words in lines[0] and "no Ray node has that much" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "big.db").exists()  # refused before the study existed
