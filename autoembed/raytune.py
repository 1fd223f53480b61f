"""Running the study's trials as Ray Tune trials.

:class:`StudySearcher` is Tune's search algorithm: Tune asks it for a config, it asks the Optuna study.
:class:`PrunerScheduler` is Tune's scheduler: every result a trial reports goes onto its Optuna trial, and
when Optuna's pruner says prune it returns ``STOP``, so Tune ends the trial at once and frees its slice.
Both live in the driver and share the :class:`~autoembed.trials.Coordinator`; :class:`RayExecutor` wires
them into a Tuner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from autoembed.config import TrialConfig
from autoembed.errors import AutoembedError
from autoembed.progress import SearchDisplay
from autoembed.study import mask_url
from autoembed.training import prepared_for, train
from autoembed.trials import Coordinator, Executor, SearchOptions, keep_model, trial_failure, trial_outcome


def _trainable(params: dict[str, Any], prepared=None) -> None:
    """One trial inside a Ray worker: train, report each evaluation, end with the outcome (or the failure)."""
    config = TrialConfig.from_dict(params["config"])
    where = _claim_slice(params.get("gpus") or 0.0)

    class Reporter:
        total = 0

        def start(self, total_steps: int) -> None:
            self.total = total_steps

        def report(self, step: int, metrics: dict[str, float], *, pairs: int) -> None:
            tune.report({"kind": "eval", "step": step, "pairs": pairs, "total_steps": self.total, "metrics": metrics})

        def should_stop(self) -> bool:
            return False  # the scheduler stops this actor when the pruner says so

    t0 = time.perf_counter()
    try:
        result = train(config, prepared=prepared_for(prepared, config), reporter=Reporter())
        outcome = trial_outcome(result, config, params["hidden_size"])  # with the export, when the config has one
        outcome.update(keep_model(result, config, outcome, params.get("keep")))  # for `autoembed export --model`
    except Exception as exc:  # the trial fails alone; the reason goes into the study
        reason = trial_failure(exc)
        if reason.startswith("out of memory") and where.get("memory_cap_gib"):
            reason += f" (the trial's slice is {where['slice']:g} of the GPU: {where['memory_cap_gib']:.1f} GiB)"
        tune.report({"kind": "end", "outcome": {"fail_reason": reason, "train_seconds": time.perf_counter() - t0, "where": where}})
        return
    tune.report({"kind": "end", "outcome": {**outcome, "where": where}})


def _claim_slice(gpus: float) -> dict[str, Any]:
    """Fit this worker to its slice before the trial, and say where it runs (recorded on the trial).

    A reused worker first releases the last trial's CUDA cache; a fractional GPU slice caps the process's share of
    the card's memory, so a trial that outgrows its slice fails alone (CUDA out of memory) instead of starving the
    trials that share the card.
    """
    import socket

    import torch

    where: dict[str, Any] = {"node": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id(), "slice": gpus}
    if gpus > 0 and torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        props = torch.cuda.get_device_properties(0)
        where["device"] = f"cuda: {props.name}"
        where["memory_gib"] = round(props.total_memory / 2**30, 1)
        if gpus < 1:
            torch.cuda.set_per_process_memory_fraction(gpus, 0)
            where["memory_cap_gib"] = round(gpus * props.total_memory / 2**30, 2)
    else:
        where["device"] = f"cpu: {torch.get_num_threads()} threads"
    return where


def _unflatten(result: dict) -> dict:
    """Tune flattens nested results into ``a/b`` keys; put them back."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        node = out
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def absolute_paths(config: TrialConfig) -> TrialConfig:
    updates = {f"data.{role}": str(Path(getattr(config.data, role)).resolve()) for role in ("train", "val", "corpus") if getattr(config.data, role)}
    if not config.model.startswith("package:"):
        updates["model"] = str(Path(config.model).resolve())
    return config.replace(**updates)


class StudySearcher(Searcher):
    def __init__(self, coordinator: Coordinator):
        super().__init__(metric=None, mode="max")
        self.coordinator = coordinator

    def suggest(self, trial_id: str):
        c = self.coordinator
        if c.out_of_time() or c.failures >= c.max_failures or not c.wants_more():
            # a running trial may still fail and need replacing, and an orphaned one of a dead driver may be failed
            # by should_finish's sweep: wait until neither is possible
            return Searcher.FINISHED if c.running() == 0 and c.should_finish() else None
        started = c.start_trial(trial_id)
        if started is None:
            return None
        recorder, config = started
        # workers may run elsewhere (another folder, another node): give them absolute paths
        return {"config": absolute_paths(config).to_dict(), "hidden_size": c.hidden_for(config), "gpus": c.options.gpus_per_trial,
                "keep": recorder.keep}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        result = _unflatten(result or {})
        outcome = result.get("outcome") if result.get("kind") == "end" else None
        if outcome is None:
            if self.coordinator.recorders.get(trial_id) is not None and self.coordinator.recorders[trial_id].pruned:
                outcome = {}
            else:
                outcome = {"fail_reason": "the Ray worker died or was stopped before the trial ended" if error else "the trial ended without an outcome"}
        self.coordinator.on_end(trial_id, outcome)

    # the study is the state; nothing of the searcher needs saving, and the coordinator must not be pickled
    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.coordinator = None

    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass


class PrunerScheduler(FIFOScheduler):
    def __init__(self, coordinator: Coordinator):
        super().__init__()
        self.coordinator = coordinator

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("kind") != "eval":
            return TrialScheduler.CONTINUE
        result = _unflatten(result)
        pairs = int(result["pairs"]) if result.get("pairs") is not None else None
        stop = self.coordinator.on_result(trial.trial_id, int(result["step"]), result["metrics"], int(result["total_steps"]), pairs)
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.coordinator = None


def ensure_ray(address: str | None, num_cpus: float | None = None) -> None:
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address:
        kwargs["address"] = address
    elif num_cpus:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)


# Tune's console output is not ours: even at verbose=0 its default reporter prints an experiment box, the
# results folder and a TensorBoard hint to stdout, where `autoembed search` writes its JSON. The legacy
# reporter prints nothing at verbose=0. Tune's per-trial CSV/JSON/TensorBoard logs duplicate the study.
# Tune's own SIGINT handler would end the run quietly and let `autoembed search` report success; the search
# handles SIGINT and SIGTERM itself (search._stop_on_signals).
_QUIET_TUNE = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "TUNE_DISABLE_SIGINT_HANDLER": "1"}


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Set :data:`_QUIET_TUNE` while Tune runs (a value the user set wins), then restore the environment."""
    saved = {key: os.environ.get(key) for key in _QUIET_TUNE}
    for key, value in _QUIET_TUNE.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class RayExecutor(Executor):
    """Each trial a Ray Tune trial on its own slice; at most ``--workers`` at once."""

    name = "ray"

    def __init__(self) -> None:
        self.started_ray = False

    def check(self, options: SearchOptions, display: SearchDisplay) -> None:
        if not ray.is_initialized():
            display.note("starting Ray ..." if not options.ray_address else f"connecting to Ray at {options.ray_address} ...")
            self.started_ray = True
        ensure_ray(options.ray_address)
        check_resources(options.cpus(), options.gpus_per_trial, ray.nodes())

    def run(self, coordinator: Coordinator, prepared) -> None:
        run_ray(coordinator, prepared)

    def close(self) -> None:
        # a Ray this search started goes with it: no raylet or worker outlives the search (nor its interruption)
        if self.started_ray and ray.is_initialized():
            ray.shutdown()


def check_resources(cpus: float, gpus: float, nodes: list[dict[str, Any]]) -> None:
    """Refuse a per-trial request that no alive node of the cluster can meet; Ray would wait for it forever."""
    alive = [n.get("Resources") or {} for n in nodes if n.get("Alive", n.get("alive", True))]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in alive):
        return
    have = ", ".join(sorted({f"{r.get('CPU', 0):g} CPUs and {r.get('GPU', 0):g} GPUs" for r in alive})) or "no alive node"
    raise AutoembedError(
        f"each trial asks for {cpus:g} CPUs and {gpus:g} GPUs, but no Ray node has that much (nodes: {have}); "
        "lower --cpus-per-trial / --gpus-per-trial or add a node",
        key="resources",
    )


def run_ray(coordinator: Coordinator, prepared, *, trainable=None) -> None:
    """Run the coordinator's trials as Tune trials; ``trainable`` replaces :func:`_trainable` (benchmarks/scale_sim.py
    plugs in a simulated one that reports the same results)."""
    options = coordinator.options
    ensure_ray(options.ray_address)
    resources = {"cpu": options.cpus(), "gpu": options.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(trainable or _trainable, prepared=prepared), resources)
    # Tune's experiment state duplicates the study: it lives in the study's workdir while the search runs, then goes
    scratch_root = options.workdir_path / "_ray"
    scratch_root.mkdir(parents=True, exist_ok=True)
    storage = Path(tempfile.mkdtemp(dir=scratch_root, prefix=f"{options.study}-")).resolve()
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=StudySearcher(coordinator),
            scheduler=PrunerScheduler(coordinator),
            num_samples=-1,
            max_concurrent_trials=options.workers,
            # a trial's worker process (torch, transformers imported, the shared data mapped) serves the next
            reuse_actors=True,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=f"run-{int(time.time())}",
            storage_path=str(storage),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False, num_to_keep=1),
            log_to_file=False,
        ),
    )
    coordinator.display.note(f"Ray: {ray.cluster_resources().get('CPU', 0):g} CPUs, {ray.cluster_resources().get('GPU', 0):g} GPUs; each trial gets {resources['cpu']:g} CPUs, {resources['gpu']:g} GPUs; study in {mask_url(options.storage_url)}")
    try:
        with _quiet_tune():
            tuner.fit()
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        with contextlib.suppress(OSError):
            scratch_root.rmdir()  # only if empty: other drivers of the study may be using it


__all__ = ["PrunerScheduler", "RayExecutor", "StudySearcher", "ensure_ray", "run_ray"]
