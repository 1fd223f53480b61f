"""One GPU, sliced: one trial's fp32 and bf16 speed, searches on 1 x 1.0, 4 x 0.25 and 8 x 0.125 slices, the time
from `autoembed search` to the first training step, and how busy the card was.

    python benchmarks/gpu_slices.py --model DIR --data DIR [--steps 200] [--batch 128] [--max-seq-length 128]
                                    [--layouts 1x1.0,4x0.25,8x0.125] [--rounds 2] [--out results.json]
    python benchmarks/gpu_slices.py --dry-run      # the same table on the CPU, tiny sizes: proves the script runs

``--data`` holds train.jsonl (and val.jsonl, corpus.jsonl if present): scripts/gpu_prepare.sh writes the ICD-10
example's there (.gpudata/icd10); ``--model`` is a BERT folder (benchmarks/make_model.py builds a random
all-MiniLM-L6-v2-shaped one). Measured:

- one trial, no Ray (``autoembed.training.train``): pairs/s between the end of a warm-up step and the last step, in
  fp32 and in bf16 autocast (the device synchronised at both ends, nothing in between);
- a search per layout N x F (``autoembed search --workers N --gpus-per-trial F``, N x ``--rounds`` trials, so later
  trials run in reused workers): aggregate pairs/s = every trial's pairs over the time from the first trial's start
  to the last one's end (startup in the workers included: that is what a search gets);
- seconds from launching `autoembed search` (a fresh process, a fresh Ray) to its first trial's first evaluation
  at step 1, polled from the study every 0.1 s: the first training step plus one small evaluation;
- GPU busy %: NVML (pynvml), else ``nvidia-smi``, sampled every 0.5 s while each part runs, as
  ../shared/gpu/sampler.py does; the mean over the samples.

On the CPU (``--dry-run``) the layouts run with ``--gpus-per-trial 0`` and the CPUs split among the workers, and
busy % is n/a; the numbers only show that every part runs. The JSON of every number goes to ``--out``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout's autoembed, and make_model beside this file


class BusySampler:
    """GPU utilisation every ``every`` seconds in a thread, from NVML or nvidia-smi; ``mean()`` of a window."""

    def __init__(self, every: float = 0.5):
        self.every, self.samples, self.source = every, [], None
        self._stop = threading.Event()
        self._read = self._nvml() or self._smi()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self._read is not None:
            self._thread.start()

    def _nvml(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            pynvml.nvmlDeviceGetUtilizationRates(handle)
        except Exception:
            return None
        self.source = "nvml"
        return lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu

    def _smi(self):
        def read() -> float:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True, text=True, timeout=5, check=True,
            )
            return float(out.stdout.strip().splitlines()[0])

        try:
            read()
        except Exception:
            return None
        self.source = "nvidia-smi"
        return read

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), self._read()))
            except Exception:
                pass
            self._stop.wait(self.every)

    def mean(self, start: float, end: float) -> float | None:
        window = [u for t, u in self.samples if start <= t <= end]
        return sum(window) / len(window) if window else None

    def stop(self) -> None:
        self._stop.set()


def card_name(dry_run: bool) -> str:
    import torch

    if dry_run or not torch.cuda.is_available():
        return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB"


def toy_data(folder: Path, n_docs: int = 300, seed: int = 0) -> Path:
    """Short ICD-10-like pairs for the dry run: each document three words, its queries share two of them."""
    words = ("acute chronic left right upper lower fever pain infection fracture heart lung kidney liver skin bone arm "
             "leg knee hip eye ear nose throat blood pressure diabetes asthma cancer tumor injury burn cough").split()
    rng = random.Random(seed)
    docs = [{"_id": f"d{i}", "text": " ".join(rng.sample(words, 3)) + f" {i}"} for i in range(n_docs)]
    rows = [{"query": " ".join(rng.sample(d["text"].split()[:3], 2)) + f" {rng.choice(words)}", "positive": d["text"]} for d in docs for _ in range(2)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[: len(rows) * 4 // 5]))
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[len(rows) * 4 // 5 :]))
    return folder


def data_flags(data: Path) -> dict[str, str]:
    return {role: str(data / f"{role}.jsonl") for role in ("train", "val", "corpus") if (data / f"{role}.jsonl").is_file()}


def base_config(model: str, data: Path, args, device: str, precision: str) -> dict:
    return {
        "model": model,
        "data": {**data_flags(data), "max_seq_length": args.max_seq_length},
        "loss": {"type": "infonce", "temperature": 0.05},
        "training": {"batch_size": args.batch, "max_steps": args.warmup + args.steps, "device": device, "precision": precision},
        "evaluation": {"max_queries": args.max_queries, "max_corpus": args.max_corpus},
    }


def one_trial(model: str, data: Path, args, precision: str, device: str, busy: BusySampler | None) -> dict:
    """pairs/s of one training run, no Ray, between the end of the warm-up steps and the last step."""
    import torch

    from autoembed.config import TrialConfig
    from autoembed.training import train

    config = TrialConfig.from_dict(base_config(model, data, args, device, precision))
    stamps: dict[int, float] = {}
    last = args.warmup + args.steps

    def progress(step: int, total: int, loss: float) -> None:
        if step in (args.warmup, last):
            if device == "cuda":
                torch.cuda.synchronize()  # only here: the steps between run as a search runs them
            stamps[step] = time.time()

    train(config, progress=progress)
    seconds = stamps[last] - stamps[args.warmup]
    return {
        "precision": precision, "pairs_per_s": args.batch * args.steps / seconds, "seconds": seconds,
        "busy_pct": busy.mean(stamps[args.warmup], stamps[last]) if busy else None,
    }


def space_yaml(folder: Path, name: str, args, steps: int, every: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        "metric: recall@10\n"
        "params:\n  backbone_lr: {type: float, low: 2.0e-5, high: 1.0e-4, log: true}\n"
        f"fixed: {{training.max_steps: {steps}, training.batch_size: {args.batch}, evaluation.every_steps: {every}, "
        f"data.max_seq_length: {args.max_seq_length}, training.precision: {args.precision}, "
        f"evaluation.max_queries: {args.max_queries}, evaluation.max_corpus: {args.max_corpus}}}\n"
        "pruner: {type: none}\nsampler: {type: random}\n"
    )
    return path


def search_cmd(model: str, data: Path, space: Path, study: str, storage: str, *, trials: int, workers: int, gpus: float, cpus: float) -> list[str]:
    flags = [f"--{role}={path}" for role, path in data_flags(data).items()]
    return [
        sys.executable, "-m", "autoembed.cli", "search", "--model", model, *flags, "--space", str(space), "--study", study,
        "--storage", storage, "--trials", str(trials), "--workers", str(workers), "--gpus-per-trial", f"{gpus:g}",
        "--cpus-per-trial", f"{cpus:g}",
    ]  # fmt: skip


def run_search(cmd: list[str], folder: Path, log: Path, *, timeout: float, storage: str | None = None, study: str | None = None) -> dict:
    """Run `autoembed search`; with ``storage``, also the seconds from launch to the first intermediate value."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.time()
    first = None
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if storage and first is None and _first_value(storage, study):
                first = time.time() - started
            if time.time() - started > timeout:
                proc.kill()
                raise SystemExit(f"autoembed search ran past {timeout:g} s; see {log}")
            time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"autoembed search exited {proc.returncode}; see {log}")
    return {"wall_s": time.time() - started, "first_step_s": first, "started": started}


def _first_value(storage: str, study: str) -> bool:
    import sqlite3

    path = storage.removeprefix("sqlite:///")
    if not Path(path).is_file():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.05) as db:
            return db.execute("SELECT 1 FROM trial_intermediate_values LIMIT 1").fetchone() is not None
    except sqlite3.Error:
        return False  # not created yet, or locked for a moment


def layout_numbers(storage: str, study: str, batch: int, busy: BusySampler | None, workers: int) -> dict:
    from autoembed.study import load_existing

    trials = [t for t in load_existing(study, storage).get_trials() if t.datetime_complete is not None]
    states = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    done = [t for t in trials if t.state.name == "COMPLETE"]
    if not done:
        raise SystemExit(f"no trial of {study} completed: {states}")
    start = min(t.datetime_start for t in done).timestamp()
    end = max(t.datetime_complete for t in done).timestamp()
    pairs = sum(int(t.user_attrs.get("steps", 0)) * batch for t in done)
    # a trial's wall in the driver: the first round starts workers, later rounds reuse them
    walls = [(t.number, (t.datetime_complete - t.datetime_start).total_seconds()) for t in done]
    fresh = [w for n, w in walls if n < workers]
    reused = [w for n, w in walls if n >= workers]
    return {
        "trials": states, "pairs": pairs, "window_s": end - start, "pairs_per_s": pairs / max(end - start, 1e-9),
        "busy_pct": busy.mean(start, end) if busy else None,
        "devices": sorted({t.user_attrs.get("device", "?") for t in done}),
        "memory_cap_gib": sorted({t.user_attrs.get("where", {}).get("memory_cap_gib") for t in done} - {None}),
        "train_seconds": [round(t.user_attrs.get("train_seconds", 0.0), 2) for t in done],
        "trial_wall_fresh_s": sum(fresh) / len(fresh) if fresh else None,
        "trial_wall_reused_s": sum(reused) / len(reused) if reused else None,
    }


def fmt(value, spec: str = ".0f", unit: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + unit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a BERT folder (benchmarks/make_model.py); the dry run builds a tiny one")
    parser.add_argument("--data", type=Path, help="a folder with train.jsonl [val.jsonl corpus.jsonl]")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--max-queries", type=int, default=500)
    parser.add_argument("--max-corpus", type=int, default=5000)
    parser.add_argument("--precision", default="bf16", help="of the search trials")
    parser.add_argument("--layouts", default="1x1.0,4x0.25,8x0.125")
    parser.add_argument("--rounds", type=int, default=None, help="trials per worker in each layout's search (2; dry run 1)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a search may run")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU with tiny sizes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.steps, args.warmup, args.batch, args.max_seq_length = min(args.steps, 4), 1, min(args.batch, 16), min(args.max_seq_length, 32)
        args.max_queries, args.max_corpus, args.precision = 40, 200, "fp32"
    args.rounds = args.rounds or (1 if args.dry_run else 2)

    import torch

    device = "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.dry_run:
        raise SystemExit("no CUDA device: run with --dry-run to check the script on the CPU")
    workdir = Path(tempfile.mkdtemp(prefix="gpu_slices."))
    # absolute: each search runs from its own working folder
    data = args.data.resolve() if args.data else toy_data(workdir / "data")
    model = str(Path(args.model).resolve()) if args.model else None
    if model is None:
        from make_model import make_model

        small = {"hidden": 32, "layers": 2, "heads": 4, "inter": 64, "vocab": 300} if args.dry_run else {}
        model = make_model(data, workdir / "model", **small)["model"]
    busy = BusySampler() if device == "cuda" else None
    log = (args.out.parent if args.out else workdir) / "gpu_slices.search.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {"card": card_name(args.dry_run), "device": device, "torch": torch.__version__, "model": model, "data": str(data),
                     "batch": args.batch, "max_seq_length": args.max_seq_length, "steps": args.steps, "busy_source": busy.source if busy else None}
    print(f"card: {results['card']}; batch {args.batch}, max_seq_length {args.max_seq_length}, {args.steps} timed steps after {args.warmup}", flush=True)

    # an untimed short run first: the process's first training pays one-off costs (allocator, kernels, thread pools)
    one_trial(model, data, argparse.Namespace(**{**vars(args), "steps": 1, "warmup": 1}), "fp32", device, None)
    results["one_trial"] = [one_trial(model, data, args, p, device, busy) for p in ("fp32", "bf16")]
    fp32, bf16 = results["one_trial"]
    print(f"one trial, no Ray:   fp32 {fp32['pairs_per_s']:8.0f} pairs/s (busy {fmt(fp32['busy_pct'], unit='%')})   "
          f"bf16 {bf16['pairs_per_s']:8.0f} pairs/s (busy {fmt(bf16['busy_pct'], unit='%')})   bf16/fp32 {bf16['pairs_per_s'] / fp32['pairs_per_s']:.2f}x"
          + ("   (the CPU trains bf16 in fp32)" if device == "cpu" else ""), flush=True)

    if not args.skip_search:
        cores = os.cpu_count() or 1
        space = space_yaml(workdir, "first", args, steps=1, every=1)
        storage = f"sqlite:///{workdir}/first.db"
        cmd = search_cmd(model, data, space, "first", storage, trials=1, workers=1, gpus=1.0 if device == "cuda" else 0.0, cpus=cores)
        first = run_search(cmd, workdir, log, timeout=args.timeout, storage=storage, study="first")
        from autoembed.study import load_existing

        (trial,) = load_existing("first", storage).get_trials()
        first["driver_s"] = trial.datetime_start.timestamp() - first["started"]  # launch to the trial's start
        results["first_step"] = first
        print(f"autoembed search -> first step (+ one evaluation): {fmt(first['first_step_s'], '.1f', ' s')} "
              f"(launch -> trial start in the driver {first['driver_s']:.1f} s, the rest in the worker; "
              f"the whole 1-trial, 1-step search: {first['wall_s']:.1f} s)", flush=True)
        results["layouts"] = {}
        for layout in args.layouts.split(","):
            workers, share = layout.split("x")
            workers, share = int(workers), float(share)
            name = f"slices{workers}"
            space = space_yaml(workdir, name, args, steps=args.warmup + args.steps, every=args.warmup + args.steps)
            storage = f"sqlite:///{workdir}/{name}.db"
            gpus = share if device == "cuda" else 0.0
            cpus = max(cores // workers, 1) if device == "cuda" else max(cores / workers, 0.1)
            cmd = search_cmd(model, data, space, name, storage, trials=workers * args.rounds, workers=workers, gpus=gpus, cpus=cpus)
            ran = run_search(cmd, workdir, log, timeout=args.timeout)
            numbers = {**layout_numbers(storage, name, args.batch, busy, workers), "search_wall_s": ran["wall_s"]}
            results["layouts"][layout] = numbers
            print(f"{workers} x {share:g}{' (cpu)' if device == 'cpu' else ''}: {numbers['pairs_per_s']:8.0f} pairs/s in aggregate "
                  f"(busy {fmt(numbers['busy_pct'], unit='%')}), {sum(numbers['trials'].values())} trials {numbers['trials']}, "
                  f"search {ran['wall_s']:.0f} s, trial wall fresh worker {fmt(numbers['trial_wall_fresh_s'], '.1f', ' s')} / reused "
                  f"{fmt(numbers['trial_wall_reused_s'], '.1f', ' s')}, caps {numbers['memory_cap_gib']} GiB, {numbers['devices']}", flush=True)
        one = results["layouts"].get(args.layouts.split(",")[0])
        for layout, numbers in results["layouts"].items():
            if one and layout != args.layouts.split(",")[0]:
                print(f"  {layout} / {args.layouts.split(',')[0]}: {numbers['pairs_per_s'] / one['pairs_per_s']:.2f}x")
    if busy:
        busy.stop()
    out = args.out or workdir / "gpu_slices.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {out}; search logs: {log}")


if __name__ == "__main__":
    main()
