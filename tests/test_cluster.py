"""A real two-node Ray cluster on this machine (``ray start --head``, then ``ray start --address``): one study
runs across both nodes, and losing the worker node mid-trial fails that trial alone."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from autoembed.study import load_existing

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("ray") is None, reason="needs the ray command")]

SPACE = """
metric: recall@1
params:
  backbone_lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
fixed: {training.max_steps: STEPS, training.batch_size: 8, evaluation.every_steps: 4, data.max_seq_length: 16}
pruner: {type: none}
sampler: {type: random}
"""


# Ray 2.60 clusters use token authentication: the nodes and every client present one token, here in RAY_AUTH_TOKEN
# (as the README's cluster page says a user may). `ray start --head` makes no token of its own: it needs one there or
# in ~/.ray/auth_token, which only an earlier local ray.init() writes, so the test must not lean on that file.
ENV = {
    **os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "PYTHONUNBUFFERED": "1",
    "HF_HUB_OFFLINE": "1",
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_nodes(address: str) -> int:
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


class Cluster:
    """Head and worker nodes as blocking ``ray start`` processes; terminating one takes its node down."""

    def __init__(self, root: Path):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.root = root
        # its own session folder, nothing shared with another Ray on the machine; short, since a node's unix socket
        # paths live under it and may not exceed 107 bytes
        self.temp = Path(tempfile.mkdtemp(prefix="ae-ray-", dir="/tmp"))
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        cmd = ["ray", "start", "--block", "--num-cpus", "1", "--disable-usage-stats", *args]
        log = open(self.root / f"ray-start-{len(self.procs)}.log", "w")  # noqa: SIM115 - the process writes it while it runs
        proc = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def up(self) -> None:
        self.start("--head", "--port", str(self.port), "--include-dashboard", "false", "--temp-dir", str(self.temp))
        self.wait_for(1)  # a worker started before the head answers gives up at once
        self.worker = self.start("--address", self.address)
        self.wait_for(2)

    def wait_for(self, nodes: int) -> None:
        deadline = time.monotonic() + 240
        while _alive_nodes(self.address) < nodes:
            assert time.monotonic() < deadline, f"the Ray cluster never had {nodes} alive nodes"
            for i, p in enumerate(self.procs):
                assert p.poll() is None, (self.root / f"ray-start-{i}.log").read_text()[-3000:]
            time.sleep(2)

    def down(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.up()
        yield c
    finally:
        c.down()


def search(cluster: Cluster, tmp_path: Path, tiny_model: Path, data: dict[str, Path], steps: int, trials: int) -> subprocess.Popen:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("STEPS", str(steps)))
    cmd = [
        sys.executable, "-m", "autoembed.cli", "search", "--model", str(tiny_model), "--train", str(data["train"]),
        "--val", str(data["val"]), "--corpus", str(data["corpus"]), "--space", str(space), "--study", "two",
        "--storage", f"sqlite:///{tmp_path}/two.db", "--ray-address", cluster.address, "--workers", "2",
        "--cpus-per-trial", "1", "--trials", str(trials),
    ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_one_study_runs_on_both_nodes(cluster, tmp_path, tiny_model, toy_data):
    proc = search(cluster, tmp_path, tiny_model, toy_data, steps=24, trials=4)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert json.loads(stdout)["counts"] == {"COMPLETE": 4, "PRUNED": 0, "FAIL": 0}
    trials = load_existing("two", f"sqlite:///{tmp_path}/two.db").get_trials()
    nodes = {t.user_attrs["where"]["node_id"] for t in trials}
    assert len(nodes) == 2, [t.user_attrs["where"] for t in trials]
    assert all(t.user_attrs["device"].startswith("cpu") for t in trials)


def test_losing_the_worker_node_fails_its_trial_alone(cluster, tmp_path, tiny_model, toy_data):
    proc = search(cluster, tmp_path, tiny_model, toy_data, steps=400, trials=3)
    storage = f"sqlite:///{tmp_path}/two.db"
    deadline = time.monotonic() + 300
    while True:  # both nodes mid-trial: two RUNNING trials that have reported
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "two trials never ran at once"
        try:
            running = load_existing("two", storage).get_trials(states=(TrialState.RUNNING,))
        except Exception:
            running = []
        if sum(bool(t.intermediate_values) for t in running) == 2:
            break
        time.sleep(0.5)
    os.killpg(cluster.worker.pid, signal.SIGTERM)  # the worker node goes away, its trial with it
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    trials = load_existing("two", storage).get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 3, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert "worker died" in failed.user_attrs["fail_reason"]
