"""Scale, by simulation on one machine: 1,000 simulated trials at 64 slices of 64 fake GPUs, through the real driver.

Ray is told the machine has 64 GPUs (it accepts resources that are not there), and the study runs through the same
searcher, scheduler and recorder as ``autoembed search`` (:class:`~autoembed.trials.Coordinator`,
:class:`~autoembed.raytune.StudySearcher` / :class:`~autoembed.raytune.PrunerScheduler` via
:func:`~autoembed.raytune.run_ray`), with the space's TPE and median pruner, on PostgreSQL. Only the trainable is
simulated: it sleeps and reports a synthetic learning curve whose level depends on the sampled params, with the
result protocol of ``autoembed.raytune._trainable``, so TPE and the pruner have something to learn.

It prints the driver's bookkeeping per trial (the time spent inside the searcher's and scheduler's callbacks,
which hold every Coordinator call: asking, sampling, recording, pruning), the TPE ask time (ask + sample) at 100 and
at 1,000 trials, the memory of Ray's processes, and the ``autoembed status`` and ``autoembed dashboard`` times at
1,000 trials and, once synthetic finished trials (copies of the simulated ones) top the study up, at 10,000.

    python benchmarks/scale_sim.py [--trials 1000] [--concurrency 64] [--storage postgresql+psycopg://...]
    python benchmarks/scale_sim.py --study NAME   # the readings alone, on an existing study
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPACE = ROOT / "search_spaces" / "default.yaml"
HIDDEN = 384
TOTAL_STEPS = 1000


def learning_curve(config: dict[str, Any]) -> tuple[float, float]:
    """The simulated trial's (level, k): its value at step s is ``level * (1 - exp(-s / k))`` plus noise."""
    training, loss, data = config.get("training", {}), config.get("loss", {}), config.get("data", {})
    lr = float(training.get("backbone_lr") or training.get("lr") or 5e-5)
    head_lr = float(training.get("head_lr") or 1e-3)
    level = 0.85 - 0.12 * math.log10(lr / 6e-5) ** 2
    if loss.get("type", "infonce") != "infonce":
        level -= 0.08
    elif loss.get("temperature"):
        level -= 0.05 * abs(math.log10(float(loss["temperature"]) / 0.05))
    level += 0.02 * int(data.get("hard_negatives") or 0)
    return level, 150 * (1e-3 / head_lr) ** 0.3


def simulated_trial(params: dict[str, Any], prepared: dict[str, Any] | None = None) -> None:
    """A trial that does not train: it reports ``value = level(params) * (1 - exp(-step / k)) + noise``.

    The level peaks at backbone_lr 6e-5 (log scale) and favours InfoNCE, a temperature near 0.05 and one mined
    negative; k follows head_lr. Same results as ``raytune._trainable``: evals, then ``{"kind": "end"}``.
    """
    import socket

    from ray import tune

    sim = prepared or {}
    config = params["config"]
    metric = config.get("evaluation", {}).get("metric", "recall@10")
    every = int(config.get("evaluation", {}).get("every_steps") or 100)
    level, k = learning_curve(config)
    rng = random.Random(json.dumps(config, sort_keys=True))
    t0 = time.perf_counter()
    value = 0.0
    for step in range(every, TOTAL_STEPS + 1, every):
        time.sleep(sim.get("eval_seconds", 1.0))
        value = max(0.0, level * (1 - math.exp(-step / k)) + rng.gauss(0, 0.01))
        tune.report({"kind": "eval", "step": step, "total_steps": TOTAL_STEPS, "metrics": {metric: value}})
    where = {"node": socket.gethostname(), "slice": params.get("gpus") or 0.0, "device": "simulated"}
    outcome = {
        "value": value, "value_step": TOTAL_STEPS, "metrics": {metric: value}, "train_seconds": time.perf_counter() - t0,
        "steps": TOTAL_STEPS, "total_steps": TOTAL_STEPS, "embedding_dim": HIDDEN, "where": where,
    }  # fmt: skip
    tune.report({"kind": "end", "outcome": outcome})


# --------------------------------------------------------------------------------------------------
# Instruments


class Timers:
    """Seconds spent inside wrapped callables, by name, and per-trial ask/sample times."""

    def __init__(self, profile: bool = False) -> None:
        # --profile: cProfile runs only inside the outermost timed call, so the profile is the bookkeeping alone
        self.profiler = cProfile.Profile() if profile else None
        self.depth = 0
        self.seconds: dict[str, float] = defaultdict(float)
        # CPU seconds of the driver thread inside the calls: what a quiet machine would spend, less database waits
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.ask: dict[int, float] = {}
        self.sample: dict[int, float] = {}
        self.lock = threading.Lock()

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            self.depth += 1
            if self.depth == 1 and self.profiler is not None:
                self.profiler.enable()
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0 and self.profiler is not None:
                    self.profiler.disable()
                with self.lock:
                    self.seconds[label] += time.perf_counter() - t0
                    self.cpu[label] += time.thread_time() - c0
                    self.calls[label] += 1

        setattr(owner, name, timed)

    def wrap_ask(self, study: Any, space_cls: type) -> None:
        """Time ``study.ask`` and ``SearchSpace.sample`` per trial number (together: what TPE costs a trial)."""
        ask, sample = study.ask, space_cls.sample

        def timed_ask(*args, **kwargs):
            t0 = time.perf_counter()
            trial = ask(*args, **kwargs)
            self.ask[trial.number] = time.perf_counter() - t0
            return trial

        def timed_sample(space, trial, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return sample(space, trial, *args, **kwargs)
            finally:
                self.sample[trial.number] = time.perf_counter() - t0

        # a pydantic model takes no instance attributes: the class's method is wrapped
        study.ask, space_cls.sample = timed_ask, timed_sample

    def tpe_ms(self, numbers: range) -> tuple[float, int] | None:
        times = [self.ask[n] + self.sample.get(n, 0.0) for n in numbers if n in self.ask]
        return (1000 * statistics.median(times), len(times)) if times else None


def _children(pid: int) -> list[int]:
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _pss_mib(pid: int) -> float:
    """Proportional set size: shared pages split between the processes that share them, so sums are honest."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


class MemoryWatch(threading.Thread):
    """Samples the memory of this process and every process under it (Ray's GCS, raylet, workers) every 2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mib = 0.0
        self.peak_procs = 0
        self.peak_driver_mib = 0.0
        self.min_available_mib = math.inf
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(2.0):
            me = os.getpid()
            procs = _children(me)
            driver = _pss_mib(me)
            total = driver + sum(_pss_mib(p) for p in procs)
            if total > self.peak_mib:
                self.peak_mib, self.peak_procs = total, len(procs)
            self.peak_driver_mib = max(self.peak_driver_mib, driver)
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    self.min_available_mib = min(self.min_available_mib, int(line.split()[1]) / 1024)


# --------------------------------------------------------------------------------------------------
# The simulated search


def run_simulation(args: argparse.Namespace, workdir: Path) -> tuple[str, Timers, dict[str, Any]]:
    import ray
    from rich.console import Console

    from autoembed import raytune
    from autoembed.plan import Plan
    from autoembed.progress import SearchDisplay
    from autoembed.search import base_config, open_study, record_provenance
    from autoembed.space import SearchSpace
    from autoembed.trials import Coordinator, SearchOptions

    name = f"scale-sim-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    options = SearchOptions(
        study=name, model="simulated-model", train=str(workdir / "train.jsonl"), space=str(args.space), trials=args.trials,
        storage=args.storage, workers=args.concurrency, gpus_per_trial=1.0, cpus_per_trial=1.0, executor="ray",
        seed=0, workdir=str(workdir),
    )  # fmt: skip
    space = SearchSpace.from_yaml_file(options.space)
    base = base_config(options, space.metric)
    # the display formats and prints every line as a real search does; the lines go nowhere
    display = SearchDisplay(Console(file=open(os.devnull, "w"), force_terminal=False), options, live=False, metric=space.metric)  # noqa: SIM115
    study, _ = open_study(options, space, HIDDEN, Plan())  # no --timeout: no plan
    record_provenance(study, {"model": "simulated-model", "seed": 0}, space)
    coordinator = Coordinator(study, space, base, options, HIDDEN, display, provenance={"model": "simulated-model", "seed": 0})

    timers = Timers(profile=bool(args.profile))
    timers.wrap_ask(study, SearchSpace)
    # the Tune callbacks hold every Coordinator call; the Coordinator's own are timed too, for the breakdown
    for cls, method in ((raytune.StudySearcher, "suggest"), (raytune.StudySearcher, "on_trial_complete"), (raytune.PrunerScheduler, "on_trial_result")):
        timers.wrap(cls, method, f"{cls.__name__}.{method}")
    for method in ("start_trial", "on_result", "on_end"):
        timers.wrap(coordinator, method, f"Coordinator.{method}")

    # 1 CPU and 1 GPU per trial, of as many CPUs as slices and 64 GPUs: Tune runs `concurrency` trials at once
    ray.init(
        num_cpus=args.concurrency, num_gpus=64, object_store_memory=256 * 2**20,
        include_dashboard=False, log_to_driver=False, logging_level="ERROR",
    )  # fmt: skip
    memory = MemoryWatch()
    memory.start()
    cpu0, t0 = time.process_time(), time.monotonic()
    try:
        raytune.run_ray(coordinator, {"eval_seconds": args.eval_seconds}, trainable=simulated_trial)
    finally:
        wall, driver_cpu = time.monotonic() - t0, time.process_time() - cpu0
        coordinator.close("the simulation stopped before this trial ended")
        memory.stop_event.set()
        ray.shutdown()
    counts: dict[str, int] = defaultdict(int)
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] += 1
    facts = {"wall": wall, "driver_cpu": driver_cpu, "counts": dict(counts), "memory": memory, "best": study.best_value}
    return name, timers, facts


# --------------------------------------------------------------------------------------------------
# Reading the study: status and dashboard


def time_status(name: str, url: str, repeats: int = 3) -> tuple[float, int]:
    """`autoembed status NAME --storage URL --json`, in this process (its code path, without Python's start-up)."""
    from autoembed.cli import status

    times, size = [], 0
    for _ in range(repeats):
        buffer = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buffer):
            status(name, storage=url, as_json=True)
        times.append(time.perf_counter() - t0)
        size = len(buffer.getvalue())
    return statistics.median(times), size


def time_dashboard(name: str, url: str, out: Path, repeats: int = 2) -> tuple[float, int]:
    from autoembed.dashboard import write_dashboard

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        write_dashboard(url, name, out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out.stat().st_size


def add_synthetic_trials(name: str, url: str, n: int, seed: int = 0) -> float:
    """Add ``n`` finished trials, each a copy of a random finished trial of the study (params, distributions,
    intermediate values, user attrs: config, value_step, final_metrics, ...) with a jittered value.

    Written straight into Optuna's tables, a few multi-row INSERTs per table: ``study.add_trials`` writes one
    trial per transaction, about 150 ms each on PostgreSQL here (9,000 would take over 20 minutes).
    """
    import datetime

    import sqlalchemy
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    from autoembed.study import _rdb, load_existing, read_trials

    study = load_existing(name, url)
    pool = [t for t in read_trials(study) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    rng = random.Random(seed)
    engine = _rdb(study).engine
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    trial_model = models.TrialModel
    t0 = time.perf_counter()
    with engine.begin() as conn:
        first = conn.execute(
            sqlalchemy.select(sqlalchemy.func.count()).select_from(trial_model).where(trial_model.study_id == study._study_id)
        ).scalar()
        picks = [rng.choice(pool) for _ in range(n)]
        heads = [
            {"number": first + i, "study_id": study._study_id, "state": t.state, "datetime_start": now, "datetime_complete": now}
            for i, t in enumerate(picks)
        ]
        table = trial_model.__table__
        ids = conn.execute(table.insert().returning(table.c.trial_id, sort_by_parameter_order=True), heads).scalars().all()
        params, values, steps, users = [], [], [], []
        for trial_id, t in zip(ids, picks, strict=True):
            for key, value in t.params.items():
                dist = t.distributions[key]
                params.append({"trial_id": trial_id, "param_name": key, "param_value": dist.to_internal_repr(value),
                               "distribution_json": distribution_to_json(dist)})  # fmt: skip
            if t.state == TrialState.COMPLETE:
                stored, kind = models.TrialValueModel.value_to_stored_repr(t.value + rng.gauss(0, 0.005))
                values.append({"trial_id": trial_id, "objective": 0, "value": stored, "value_type": kind})
            for step, value in t.intermediate_values.items():
                stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
                steps.append({"trial_id": trial_id, "step": step, "intermediate_value": stored, "intermediate_value_type": kind})
            users += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in t.user_attrs.items()]
        for model, rows in ((models.TrialParamModel, params), (models.TrialValueModel, values),
                            (models.TrialIntermediateValueModel, steps), (models.TrialUserAttributeModel, users)):  # fmt: skip
            if rows:
                conn.execute(model.__table__.insert(), rows)
    return time.perf_counter() - t0


def time_tpe_ask(name: str, url: str, space_file: Path = SPACE, repeats: int = 3) -> float:
    """ask + sample on the study as it stands (each asked trial then told FAIL), median ms."""
    from optuna.trial import TrialState

    from autoembed.search import base_config
    from autoembed.space import SearchSpace
    from autoembed.study import load_existing
    from autoembed.trials import SearchOptions

    space = SearchSpace.from_yaml_file(str(space_file))
    options = SearchOptions(study=name, model="simulated-model", train="train.jsonl", space=str(space_file))
    base = base_config(options, space.metric)
    study = load_existing(name, url)
    times = []
    for i in range(repeats):
        study.sampler = space.build_sampler(seed=i, n_workers=64)
        t0 = time.perf_counter()
        trial = study.ask()
        space.sample(trial, base, hidden_size=HIDDEN)
        times.append(time.perf_counter() - t0)
        study.tell(trial, state=TrialState.FAIL)
    return 1000 * statistics.median(times)


# --------------------------------------------------------------------------------------------------


def simulate(args: argparse.Namespace, workdir: Path) -> str:
    name, timers, facts = run_simulation(args, workdir)
    counts, mem = facts["counts"], facts["memory"]
    finished = sum(counts.values())
    print(f"study {name}: {dict(sorted(counts.items()))}, best {facts['best']:.4f}")
    print(f"wall {facts['wall']:.0f} s; driver CPU {facts['driver_cpu']:.0f} s ({1000 * facts['driver_cpu'] / finished:.0f} ms per trial, Tune's loop included)")
    bookkeeping = sum(v for k, v in timers.seconds.items() if not k.startswith("Coordinator."))
    bookkeeping_cpu = sum(v for k, v in timers.cpu.items() if not k.startswith("Coordinator."))
    print(f"driver bookkeeping: {1000 * bookkeeping / finished:.1f} ms per trial (goal <= 50); "
          f"of it {1000 * bookkeeping_cpu / finished:.1f} ms CPU in the driver thread (the rest: waits and other processes)")  # fmt: skip
    for label in sorted(timers.seconds):
        s, c, cpu = timers.seconds[label], timers.calls[label], timers.cpu[label]
        print(f"  {label}: {s:.1f} s in {c} calls ({1000 * s / max(1, c):.1f} ms per call, {1000 * cpu / max(1, c):.1f} ms CPU)")
    if timers.profiler is not None:
        timers.profiler.dump_stats(args.profile)
        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(30)
    for at in (100, args.trials):
        measured = timers.tpe_ms(range(max(0, at - 20), at))
        if measured:
            print(f"TPE ask + sample, live, trials {max(0, at - 20)}-{at - 1}: median {measured[0]:.0f} ms (goal <= 100 at 1,000)")
    print(f"memory: peak {mem.peak_mib:.0f} MiB PSS in the driver ({mem.peak_driver_mib:.0f} MiB) and {mem.peak_procs} "
          f"processes under it (Ray); lowest MemAvailable {mem.min_available_mib:.0f} MiB", flush=True)  # fmt: skip
    return name


def readings(name: str, url: str, workdir: Path, target: int, space_file: Path = SPACE) -> None:
    """status, dashboard and a TPE ask on the study as it is, then after topping it up to ``target`` trials."""
    from autoembed.study import load_existing

    for top_up in (False, True):
        held = len(load_existing(name, url).get_trials(deepcopy=False))
        if top_up:
            if target <= held:
                return
            seconds = add_synthetic_trials(name, url, target - held)
            print(f"added {target - held} synthetic finished trials (multi-row INSERTs) in {seconds:.0f} s", flush=True)
            held = target
        status_s, status_bytes = time_status(name, url)
        dash_s, dash_bytes = time_dashboard(name, url, workdir / "dashboard.html")
        print(f"at {held} trials: status {status_s:.2f} s ({status_bytes / 1e6:.1f} MB JSON; goal <= 2 s at 10,000), "
              f"dashboard {dash_s:.2f} s ({dash_bytes / 1e6:.1f} MB page; goal <= 10 s at 10,000)", flush=True)  # fmt: skip
        print(f"at {held} trials: TPE ask + sample {time_tpe_ask(name, url, space_file):.0f} ms (3 asks, each then told FAIL)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64, help="trials at once (Tune workers), each on 1 of 64 fake GPUs")
    parser.add_argument("--eval-seconds", type=float, default=2.0, help="sleep per simulated evaluation (10 per trial)")
    parser.add_argument("--storage", default=os.environ.get("AUTOEMBED_TEST_POSTGRES_URL"), help="PostgreSQL URL")
    parser.add_argument("--profile", help="write a cProfile of the driver's bookkeeping to this file")
    parser.add_argument("--readings-at", type=int, default=10_000, help="after the first reading, add synthetic finished trials until the study holds this many, and read again")
    parser.add_argument("--study", help="skip the simulation: take the readings on this existing study")
    parser.add_argument("--space", type=Path, default=SPACE, help="the search space (default: the shipped default space)")
    args = parser.parse_args(argv)
    if not args.storage:
        parser.error("give --storage postgresql+psycopg://... (or set AUTOEMBED_TEST_POSTGRES_URL)")
    import optuna

    from autoembed.study import mask_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"storage {mask_url(args.storage)}; {args.trials} trials, {args.concurrency} at once on 64 fake GPUs; "
          f"{args.eval_seconds:g} s per simulated evaluation", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="scale-sim-") as tmp:
        workdir = Path(tmp)
        name = args.study or simulate(args, workdir)
        readings(name, args.storage, workdir, args.readings_at, args.space)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
