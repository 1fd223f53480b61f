"""``autoembed search`` end to end: real local Ray (started once for this module), real SQLite, the tiny BERT.

Ray runs are slow (a Tune trial is a fresh worker process that imports torch): the module runs two, and the
inline executor, which must leave the same records, covers the rest.
"""

from __future__ import annotations

import datetime
import io
import json
import re
from pathlib import Path

import optuna
import pytest
from conftest import make_toy_data
from optuna.trial import TrialState
from rich.console import Console
from typer.testing import CliRunner

from autoembed.cli import app
from autoembed.search import SearchOptions, run_search
from autoembed.study import INTERRUPTED, load_existing

runner = CliRunner()

# Every trial's params come from a starting point, so each trial's fate is known before it runs.
OUTCOMES = """\
name: outcomes
metric: recall@1
params:
  freeze_layers: {type: categorical, choices: [0, 5]}          # 5 > the tiny BERT's 2 layers: fails in build
  temperature: {type: categorical, choices: [0.05, 1.0e-300]}  # 1e-300 is 0 in float32: the loss is NaN
  max_steps: {type: categorical, choices: [4, 8]}
  every_steps: {type: categorical, choices: [1, 4], target: evaluation.every_steps}
fixed: {training.batch_size: 8, data.max_seq_length: 16}
# recall@1 never reaches 1.01: every check from 32 training pairs (step 4 at batch 8) on prunes; a trial's last
# evaluation never does
pruner: {type: threshold, lower: 1.01, n_warmup_steps: 32}
sampler: {type: random}
starting_points:
  - {freeze_layers: 5, temperature: 0.05, max_steps: 4, every_steps: 1}
  - {freeze_layers: 0, temperature: 1.0e-300, max_steps: 4, every_steps: 1}
  - {freeze_layers: 0, temperature: 0.05, max_steps: 8, every_steps: 4}
  - {freeze_layers: 0, temperature: 0.05, max_steps: 4, every_steps: 1}
"""
EXPECTED_STATES = ["FAIL", "FAIL", "PRUNED", "COMPLETE"]

# Sampled by TPE after a good starting point, with a median pruner that prunes the worse trials.
SAMPLED = """\
metric: recall@1
params:
  output_dim: {type: categorical, choices: [null, 16]}
  loss: {type: categorical, choices: [infonce, triplet]}
  backbone_lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  head_lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
fixed: {training.max_steps: 6, training.batch_size: 8, evaluation.every_steps: 2, data.max_seq_length: 16}
pruner: {type: median, n_startup_trials: 1, n_warmup_steps: 0}
sampler: {type: tpe, n_startup_trials: 2}
starting_points:
  - {output_dim: null, loss: triplet, backbone_lr: 1.0e-3, head_lr: 3.0e-4}
"""

SIMPLE = """\
metric: recall@1
params:
  backbone_lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
fixed: {training.max_steps: 2, training.batch_size: 8, evaluation.every_steps: 1, data.max_seq_length: 16}
pruner: {type: none}
sampler: {type: random}
"""

# Two starting points, the second 5,000 times as long as the first (with as many evaluations each step).
LATE = """\
metric: recall@1
params:
  max_steps: {type: categorical, choices: [2, 10000]}
fixed: {training.batch_size: 8, evaluation.every_steps: 1, data.max_seq_length: 16}
pruner: {type: none}
sampler: {type: random}
starting_points:
  - {max_steps: 2}
  - {max_steps: 10000}
"""

# What Ray Tune prints on its own when it is not silenced.
TUNE_NOISE = ("tensorboard", "View detailed results", "Configuration for experiment", "Trial status", "╭")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module; the search's ``ensure_ray`` reuses it."""
    import ray

    from autoembed.raytune import ensure_ray

    ensure_ray(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def hard_data(tmp_path_factory) -> dict[str, Path]:
    """120 documents: recall@1 stays well below 1, so values tell trials apart."""
    return make_toy_data(tmp_path_factory.mktemp("hard"), n_docs=120)


def data_args(tiny_model: Path, data: dict[str, Path]) -> list[str]:
    return [
        "--model",
        str(tiny_model),
        "--train",
        str(data["train"]),
        "--val",
        str(data["val"]),
        "--corpus",
        str(data["corpus"]),
    ]


def options(root: Path, name: str, space: str, tiny_model: Path, data: dict[str, Path], **kwargs) -> SearchOptions:
    (root / f"{name}.yaml").write_text(space)
    return SearchOptions(
        study=name,
        model=str(tiny_model),
        train=str(data["train"]),
        val=str(data["val"]),
        corpus=str(data["corpus"]),
        space=str(root / f"{name}.yaml"),
        storage=f"sqlite:///{root}/{name}.db",
        cpus_per_trial=1,
        **kwargs,
    )


def records(study: optuna.Study) -> list[tuple]:
    """What a study says about each trial, minus timing."""
    return [
        (
            t.number,
            t.state.name,
            t.params,
            t.intermediate_values,
            t.value if t.state == TrialState.COMPLETE else None,
            t.user_attrs.get("fail_reason"),
        )
        for t in study.get_trials()
    ]


@pytest.fixture(scope="module")
def ray_outcomes(ray_cluster, tmp_path_factory, tiny_model, toy_data):
    """The OUTCOMES study run on Ray through the CLI, two trials at a time, from its own working folder."""
    root = tmp_path_factory.mktemp("ray-outcomes")
    (root / "space.yaml").write_text(OUTCOMES)
    url = f"sqlite:///{root}/s.db"
    args = [
        "search",
        *data_args(tiny_model, toy_data),
        "--space",
        str(root / "space.yaml"),
        "--study",
        "outcomes",
        "--storage",
        url,
        "--trials",
        "2",
        "--workers",
        "2",
        "--cpus-per-trial",
        "1",
        "--gpus-per-trial",
        "0",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return root, url, result


@pytest.fixture(scope="module")
def inline_outcomes(tmp_path_factory, tiny_model, toy_data):
    root = tmp_path_factory.mktemp("inline-outcomes")
    opts = options(root, "outcomes", OUTCOMES, tiny_model, toy_data, trials=2, executor="inline")
    result = run_search(opts)
    return opts.storage, result


@pytest.mark.slow
def test_ray_runs_two_trials_at_once(ray_outcomes):
    _, url, _ = ray_outcomes
    trials = load_existing("outcomes", url).get_trials()
    assert len(trials) == 4
    overlapping = [
        (a.number, b.number)
        for a in trials
        for b in trials
        if a.number < b.number and a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
    ]
    assert overlapping, [(t.number, t.datetime_start, t.datetime_complete) for t in trials]


@pytest.mark.slow
def test_ray_prunes_fails_and_completes_trials_alone(ray_outcomes):
    _, url, result = ray_outcomes
    study = load_existing("outcomes", url)
    assert [t.state.name for t in study.trials] == EXPECTED_STATES
    freeze, nan, pruned, complete = study.trials
    assert "freeze_layers" in freeze.user_attrs["fail_reason"] and "AutoembedError" in freeze.user_attrs["fail_reason"]
    assert "TrialFailed" in nan.user_attrs["fail_reason"] and "nan" in nan.user_attrs["fail_reason"].lower()
    # pruned at its first check (step 4 of 8), its curve kept; the complete trial evaluated at every step
    # curves are keyed by training pairs seen (batch 8): pruned at its first check (step 4 of 8, 32 pairs)
    assert list(pruned.intermediate_values) == [32] and pruned.user_attrs["pruned_at_step"] == 4
    assert pruned.user_attrs["pruned_at_pairs"] == 32
    assert list(complete.intermediate_values) == [8, 16, 24, 32] and complete.value == complete.intermediate_values[32]
    assert (complete.user_attrs["value_step"], complete.user_attrs["value_pairs"]) == (4, 32)
    assert complete.user_attrs["steps"] == 4 and complete.user_attrs["config"]["training"]["threads"] == 1
    assert json.loads(result.stdout)["counts"] == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 2}


@pytest.mark.slow
def test_no_gpu_slice_trains_on_the_cpu(ray_outcomes):
    """--gpus-per-trial 0: the recorded config pins the CPU (not ``auto``, which would take a GPU nobody accounted
    for), and the worker says it ran there."""
    _, url, _ = ray_outcomes
    trials = load_existing("outcomes", url).get_trials()
    assert trials and all(t.user_attrs["config"]["training"]["device"] == "cpu" for t in trials)
    ran = [t for t in trials if "where" in t.user_attrs]
    assert ran and all(t.user_attrs["device"].startswith("cpu") and t.user_attrs["where"]["slice"] == 0 for t in ran)
    assert all("memory_cap_gib" not in t.user_attrs["where"] for t in ran)


def test_ray_search_prints_only_ours(ray_outcomes):
    root, _, result = ray_outcomes
    summary = json.loads(result.stdout)  # stdout is one JSON object: Tune printed nothing there
    assert summary["study"] == "outcomes" and summary["best_trial"] == 3
    for line in result.stderr.splitlines():
        assert not any(noise in line for noise in TUNE_NOISE), line
    assert "trial 1 FAIL" in result.stderr and "loss is nan" in result.stderr
    # Tune's scratch state lived beside the study file (root) while the search ran, and is gone: nothing is left in
    # the working folder (also root) but the space, the study itself and the best trial's model, kept for export
    assert sorted(p.name for p in root.iterdir()) == ["outcomes", "s.db", "space.yaml"]
    assert sorted(p.name for p in (root / "outcomes").iterdir()) == ["models"]
    assert [p.name for p in (root / "outcomes" / "models").iterdir()] == ["trial-3"]
    assert summary["best_model"] == str((root / "outcomes" / "models" / "trial-3").resolve())
    assert "next: autoembed export outcomes --storage" in result.stderr and "--model studies/outcomes/model" in result.stderr


@pytest.mark.slow
def test_a_ray_worker_keeps_only_the_complete_trials_model(ray_outcomes):
    """The worker saved the complete trial's model where the driver asked; the pruned and failed trials kept none."""
    root, url, _ = ray_outcomes
    trials = load_existing("outcomes", url).get_trials()
    assert [t.number for t in trials if "model" in t.user_attrs] == [3]
    kept = trials[3].user_attrs["model"]
    folder = Path(kept["path"])
    assert folder == (root / "outcomes" / "models" / "trial-3").resolve()
    assert json.loads((folder / "trial.json").read_text()) == {"token": kept["token"]}
    assert json.loads((folder / "metrics.json").read_text())["value"] == trials[3].value
    assert (folder / "model.safetensors").is_file() and (folder / "modules.json").is_file()


@pytest.mark.slow
def test_inline_leaves_the_same_records_as_ray(ray_outcomes, inline_outcomes):
    _, url, _ = ray_outcomes
    inline_url, _ = inline_outcomes
    assert records(load_existing("outcomes", inline_url)) == records(load_existing("outcomes", url))


def test_inline_prunes_fails_and_completes_trials_alone(inline_outcomes):
    url, result = inline_outcomes
    study = load_existing("outcomes", url)
    assert [t.state.name for t in study.trials] == EXPECTED_STATES
    assert result.counts == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 2} and result.best_number == 3
    assert study.trials[1].user_attrs["fail_reason"] == "TrialFailed: loss is nan at step 1"
    # only the complete trial's model is kept (a pruned trial stopped before its end, a failed one has none)
    assert [t.number for t in study.trials if "model" in t.user_attrs] == [3]
    assert result.best_model == study.trials[3].user_attrs["model"]["path"]
    assert [p.name for p in Path(result.best_model).parent.iterdir()] == ["trial-3"]


@pytest.mark.slow
def test_ray_and_inline_sample_train_and_prune_alike(ray_cluster, tmp_path, monkeypatch, tiny_model, hard_data):
    monkeypatch.chdir(tmp_path)
    ray_opts = options(tmp_path, "ray", SAMPLED, tiny_model, hard_data, trials=3, workers=1, executor="ray")
    inline_opts = options(tmp_path, "inline", SAMPLED, tiny_model, hard_data, trials=3, workers=1, executor="inline")
    run_search(ray_opts)
    run_search(inline_opts)
    on_ray = records(load_existing("ray", ray_opts.storage))
    inline = records(load_existing("inline", inline_opts.storage))
    assert on_ray == inline
    assert {r[1] for r in inline} == {"COMPLETE", "PRUNED"}  # the comparison covers the pruner's decisions
    assert all(0 < v < 1 for r in inline for v in r[3].values())


def backdate_heartbeat(study: optuna.Study, trial_id: int, *, seconds: float) -> None:
    """Give a trial a heartbeat as its driver would have recorded it ``seconds`` ago (on the database's clock)."""
    import sqlalchemy

    study._storage.record_heartbeat(trial_id)
    engine = study._storage._backend.engine
    with engine.begin() as conn:
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        if isinstance(now, str):  # SQLite's CURRENT_TIMESTAMP
            now = datetime.datetime.fromisoformat(now)
        conn.execute(
            sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t WHERE trial_id = :i"),
            {"t": now - datetime.timedelta(seconds=seconds), "i": trial_id},
        )


def test_orphans_are_failed_and_live_trials_kept(tmp_path, tiny_model, toy_data):
    """A driver fails another's RUNNING trial only once its heartbeat is older than the grace period."""
    from autoembed.study import GRACE_SECONDS, fail_interrupted, make_storage

    study = optuna.create_study(study_name="beats", storage=make_storage(f"sqlite:///{tmp_path}/b.db"))
    live, orphan = study.ask(), study.ask()
    backdate_heartbeat(study, live._trial_id, seconds=2)
    backdate_heartbeat(study, orphan._trial_id, seconds=GRACE_SECONDS + 30)
    assert fail_interrupted(study) == 1
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {live.number: TrialState.RUNNING, orphan.number: TrialState.FAIL}
    assert study.get_trials()[orphan.number].user_attrs["fail_reason"] == INTERRUPTED


def test_resume_keeps_finished_trials_and_fails_interrupted_ones(tmp_path, monkeypatch, tiny_model, toy_data):
    monkeypatch.chdir(tmp_path)
    first = options(tmp_path, "resume", SIMPLE, tiny_model, toy_data, trials=2, executor="inline")
    assert run_search(first).counts == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 0}
    before = records(load_existing("resume", first.storage))
    killed = load_existing("resume", first.storage)
    orphan = killed.ask()  # a run killed mid-trial leaves it RUNNING, its last heartbeat two minutes old
    backdate_heartbeat(killed, orphan._trial_id, seconds=120)
    out = io.StringIO()
    result = run_search(SearchOptions(**{**vars(first), "trials": 4}), console=Console(file=out, width=200))
    study = load_existing("resume", first.storage)
    assert result.counts == {"COMPLETE": 4, "PRUNED": 0, "FAIL": 1}
    assert records(study)[:2] == before
    assert study.trials[2].state == TrialState.FAIL and study.trials[2].user_attrs["fail_reason"] == INTERRUPTED
    assert [t.state.name for t in study.trials[3:]] == ["COMPLETE", "COMPLETE"]
    assert "2 finished trials kept, 1 interrupted trials marked FAIL" in out.getvalue()
    # asking for no more than the study holds runs nothing
    again = run_search(SearchOptions(**{**vars(first), "trials": 4}))
    assert again.counts == result.counts and len(load_existing("resume", first.storage).trials) == 5


def test_status_json_is_one_object(inline_outcomes):
    url, _ = inline_outcomes
    result = runner.invoke(app, ["status", "outcomes", "--storage", url, "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 2, "RUNNING": 0, "WAITING": 0}
    assert summary["best"]["number"] == 3 and summary["objective"] == "recall@1"
    assert summary["best"]["model"] == load_existing("outcomes", url).trials[3].user_attrs["model"]["path"]
    text = runner.invoke(app, ["status", "outcomes", "--storage", url]).stdout
    assert f"best: trial 3 = {summary['best']['value']:.4f} (model kept: {summary['best']['model']}" in " ".join(text.split())
    assert [t["state"] for t in summary["trials"]] == EXPECTED_STATES
    assert "freeze_layers" in summary["trials"][0]["fail_reason"]


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("sqlite:///{root}/none.db", "storage sqlite:///.*none.db does not exist"),
        ("{url}", "no study 'nope' in .*; it holds: outcomes"),
    ],
)
def test_status_of_a_missing_study_is_one_line(inline_outcomes, tmp_path, storage, message):
    url, _ = inline_outcomes
    result = runner.invoke(app, ["status", "nope", "--storage", storage.format(root=tmp_path, url=url), "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("autoembed: error: study: ")
    assert re.search(message, result.stderr)
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(
    ("space", "where"),
    [
        ("params:\n  backbone_lr: {type: float, low: 1.0e-4, hihg: 1.0e-3}\n", "space.yaml:2: params.backbone_lr.hihg"),
        ("metric: recall@99x\n", "space.yaml:1: metric"),
        # found only against the backbone (hidden size 32): still before any study exists
        (
            "params:\n  attention_heads: {type: categorical, choices: [3, 5]}\n",
            "space.yaml:2: params.attention_heads.choices",
        ),
        (
            "params:\n  attention_heads: {type: categorical, choices: [null, 2, 3]}\nstarting_points:\n  - {attention_heads: 3}\n",
            "space.yaml:4: starting_points[0].attention_heads",
        ),
    ],
)
def test_bad_space_is_one_line_and_creates_no_study(tmp_path, monkeypatch, tiny_model, toy_data, space, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(space)
    result = runner.invoke(
        app,
        ["search", *data_args(tiny_model, toy_data), "--space", "space.yaml", "--study", "bad", "--executor", "inline"],
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and where in errors[0], result.stderr
    assert result.stdout == "" and not (tmp_path / "studies").exists()


def test_storage_password_never_printed(tmp_path, monkeypatch, tiny_model, toy_data):
    pytest.importorskip("psycopg")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(SIMPLE)
    url = "postgresql+psycopg://user:s3cret/pw@127.0.0.1:1/db"  # nothing listens on port 1
    result = runner.invoke(
        app,
        [
            "search",
            *data_args(tiny_model, toy_data),
            "--space",
            "space.yaml",
            "--study",
            "pw",
            "--storage",
            url,
            "--executor",
            "inline",
        ],
    )
    assert result.exit_code == 2
    assert "s3cret" not in result.output and "user:***@127.0.0.1:1/db" in result.stderr


def test_study_yaml_sets_the_flags(tmp_path, monkeypatch, tiny_model, toy_data):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(SIMPLE)
    Path("studies").mkdir()
    Path("studies/mine.yaml").write_text(
        f"name: mine\nmodel: {tiny_model}\ntrain: {toy_data['train']}\nval: {toy_data['val']}\ncorpus: {toy_data['corpus']}\n"
        "space: space.yaml\ntrials: 1\nexecutor: inline\ncpus-per-trial: 1\nseed: 7\nbase:\n  evaluation: {k: [1, 5]}\n"
    )
    result = runner.invoke(app, ["search", "studies/mine.yaml", "--trials", "2"])  # a flag overrides the file
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["COMPLETE"] == 2
    study = load_existing("mine", "sqlite:///studies/mine.db")  # the default storage, under the working folder
    assert study.user_attrs["provenance"]["seed"] == 7
    assert study.trials[0].user_attrs["config"]["evaluation"]["k"] == [1, 5]


def test_unknown_key_in_a_study_yaml_names_file_line_and_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("x.yaml").write_text("name: x\nmodel: m\ntrain: t.jsonl\ntrails: 3\n")
    result = runner.invoke(app, ["search", "x.yaml"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "x.yaml:4: trails: unknown key 'trails'; expected one of: name, study, model" in lines[0]
    assert not Path("studies").exists()


def test_a_trial_measures_the_export_its_config_asks_for(tmp_path, tiny_model, toy_data):
    """A space that fixes export.pca_variance: each completed trial records what PCA gives on its model (dimension,
    variance kept, the objective before and after), and the dashboard plots those points beside the trained ones."""
    from autoembed.dashboard import data as dashboard_data
    from autoembed.dashboard import figures

    space = (
        "metric: recall@1\n"
        "params:\n"
        "  backbone_lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}\n"
        "fixed: {training.max_steps: 4, training.batch_size: 8, evaluation.every_steps: 4, data.max_seq_length: 16,"
        " export.pca_variance: 0.9}\n"
        "pruner: {type: none}\n"
        "sampler: {type: random}\n"
    )
    opts = options(tmp_path, "pca", space, tiny_model, toy_data, trials=2, executor="inline")
    run_search(opts)
    trials = load_existing("pca", opts.storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    for t in trials:
        pca = t.user_attrs["export"]["pca"]
        assert pca["variance"] >= 0.9 and pca["dim"] <= pca["input_dim"] == t.user_attrs["embedding_dim"]
        assert pca["recall@1_before"] == t.value  # the trained model's value, then the projected one
        assert 0.0 <= pca["recall@1_after"] <= 1.0
    info = dashboard_data._get_pareto_info(trials, optuna.study.StudyDirection.MAXIMIZE, "recall@1")
    assert [(d, v, n) for d, v, n, _ in info.pca] == [
        (t.user_attrs["export"]["pca"]["dim"], t.user_attrs["export"]["pca"]["recall@1_after"], t.number) for t in trials
    ]
    fig = figures._get_pareto_plot(info, "recall@1")
    assert [trace.name for trace in fig.data][-1].startswith("PCA at export")
    assert list(fig.data[-1].x) == [p[0] for p in info.pca]
    # the recipe carries the export section and what the study measured it to give
    from autoembed.recipe import export_recipe
    from autoembed.yamlio import load_yaml

    out = export_recipe("pca", opts.storage, tmp_path / "recipe.yaml")
    recipe = load_yaml(tmp_path / "recipe.yaml")
    best = next(t for t in trials if t.number == out["trial"])
    assert recipe["export"]["pca_variance"] == 0.9 and recipe["provenance"]["export"] == best.user_attrs["export"]


def test_a_trial_predicted_to_end_after_the_timeout_is_not_started(tmp_path, tiny_model, toy_data):
    """With --timeout the search starts no trial that its plan, scaled by what the trials before took, predicts to end
    after it: the search ends within its time with the model it has. A starting point so refused waits in the study, so
    a resumed search (a longer --timeout) starts it first; --start-late-trials starts it at once (Optuna's timeout)."""
    import dataclasses
    import time

    from autoembed.config import TrialConfig
    from autoembed.plan import Plan
    from autoembed.progress import SearchDisplay
    from autoembed.space import SearchSpace
    from autoembed.trials import LATE_ALLOWANCE, Coordinator

    # the long trial's plan says ~2 minutes (80,000 pairs at ~1,000 a second here), scaled up by the short trial's
    # overrun (its model loading): far more than the minute's timeout and its tenth allowed past it
    opts = options(tmp_path, "late", LATE, tiny_model, toy_data, trials=5, timeout=60, executor="inline")
    result = run_search(opts)
    assert result.not_started == 1
    study = load_existing("late", opts.storage)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "WAITING"]
    reason = trials[1].user_attrs["fail_reason"]
    assert reason.startswith("not started: it would take ~") and "--start-late-trials" in reason, reason
    assert not trials[1].intermediate_values and trials[2].system_attrs["fixed_params"] == {"max_steps": 10000}

    # the decision itself, on this study's plan: with a second of the timeout left the long trial is refused, and with
    # --start-late-trials started; with the whole timeout left the short one starts
    short, late = (TrialConfig.from_dict(t.user_attrs["config"]) for t in trials[:2])
    measured = Plan.from_dict(study.user_attrs["plan"]).measured
    for start_late, elapsed, config, refused in ((False, 59, late, True), (True, 59, late, False), (False, 0, short, False)):
        o = dataclasses.replace(opts, start_late_trials=start_late)
        c = Coordinator(study, SearchSpace.from_yaml_file(o.space), config, o, 32, SearchDisplay(None, o), measured=measured,
                        started=time.monotonic() - elapsed)  # fmt: skip
        try:
            assert (c.late(c.predicted(config)) is not None) == refused, (start_late, elapsed)
        finally:
            c.close("test over")

    # a trial may be predicted to end up to LATE_ALLOWANCE of the timeout after it (about the prediction's error), and
    # not more: with the whole 60 s left, 63 s starts and 69 s does not
    c = Coordinator(study, SearchSpace.from_yaml_file(opts.space), short, opts, 32, SearchDisplay(None, opts), measured=measured)
    try:
        assert LATE_ALLOWANCE * opts.timeout == 6
        assert c.late(63) is None
        assert "with 0.1 min allowed past it" in c.late(69)
    finally:
        c.close("test over")


def test_a_timeout_the_set_up_used_up_still_runs_one_trial(tmp_path, tiny_model, toy_data):
    """--timeout counts the set-up (Ray, the plan, mining), which can take longer than a short timeout: the search
    still runs one trial, so it ends with a model, and starts no other."""
    opts = options(tmp_path, "short", SIMPLE, tiny_model, toy_data, trials=5, timeout=0.001, executor="inline")
    result = run_search(opts)
    assert result.counts == {"COMPLETE": 1, "PRUNED": 0, "FAIL": 0} and result.best_number == 0
