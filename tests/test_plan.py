"""The budget plan: what a search sets from this machine's measured speed, and what it leaves to the user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_toy_data

from autoembed.config import TrialConfig
from autoembed.model import backbone_info
from autoembed.plan import Plan, make_plan
from autoembed.space import SearchSpace

SPACE = """
metric: recall@10
params:
  backbone_lr: {type: float, low: 1.0e-5, high: 1.0e-4, log: true}
  batch_size: {type: categorical, choices: [8, 16]}
FIXED
pruner: {type: median}
"""


def space(tmp_path: Path, fixed: str = "") -> SearchSpace:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("FIXED", fixed))
    return SearchSpace.from_yaml_file(path)


def base(tiny_model, data, **sections) -> TrialConfig:
    return TrialConfig.from_dict(
        {"model": str(tiny_model), "data": {"train": str(data["train"]), "val": str(data["val"]), "corpus": str(data["corpus"])}, **sections}
    )


def test_without_a_budget_only_a_grid_is_set(tmp_path, tiny_model, toy_data):
    plan = make_plan(space(tmp_path), base(tiny_model, toy_data), backbone_info(str(tiny_model)), timeout=None, base_sections={})
    assert set(plan.updates) == {"evaluation.every_pairs"} and plan.updates["evaluation.every_pairs"] % 256 == 0
    assert plan.pruner == {} and plan.measured == {}


def test_a_budget_is_measured_and_planned(tmp_path, tiny_model, toy_data):
    s = space(tmp_path)
    plan = make_plan(s, base(tiny_model, toy_data), backbone_info(str(tiny_model)), timeout=600, base_sections={})
    assert plan.measured["train_pairs_per_s"] > 0 and plan.measured["encode_texts_per_s"] > 0
    grid = plan.updates["evaluation.every_pairs"]
    warmup = plan.pruner["n_warmup_steps"]
    assert grid >= 256 and plan.pruner == {"n_startup_trials": plan.pruner["n_startup_trials"], "n_warmup_steps": warmup}
    assert warmup % grid == 0  # grid points only (none, when the first is past a quarter of a trial)
    assert 2 <= plan.pruner["n_startup_trials"] <= 5
    assert plan.line.startswith("10 min: ~") and f"evaluate every {grid:,} pairs" in plan.line
    # the toy validation is smaller than the sample: no sample is set
    assert "evaluation.max_queries" not in plan.updates
    planned = plan.apply(base(tiny_model, toy_data), s)
    assert planned.evaluation.every_pairs == grid and s.pruner["n_warmup_steps"] == warmup


def test_what_the_user_sets_wins(tmp_path, tiny_model, toy_data):
    s = space(tmp_path, "fixed: {evaluation.every_steps: 3, training.epochs: 1.0}")
    s.pruner["n_startup_trials"] = 4
    plan = make_plan(
        s, base(tiny_model, toy_data), backbone_info(str(tiny_model)), timeout=600,
        base_sections={"evaluation": {"max_queries": 5}},
    )  # fmt: skip
    for key in ("evaluation.every_pairs", "evaluation.every_steps", "training.epochs", "evaluation.max_queries"):
        assert key not in plan.updates
    assert "n_startup_trials" not in plan.pruner


def test_a_tight_budget_warns(tmp_path, tiny_model, toy_data):
    # the space fixes the trial length, so the plan cannot shorten it: a thousand epochs of the toy data take far
    # longer than a second on any machine
    s = space(tmp_path, "fixed: {training.epochs: 1000.0}")
    plan = make_plan(s, base(tiny_model, toy_data), backbone_info(str(tiny_model)), timeout=1, base_sections={})
    assert plan.warnings and "trials" in plan.warnings[0] and "fit in" in plan.warnings[0]


@pytest.mark.parametrize("data", [{}, {"updates": {"evaluation.every_pairs": 512}, "pruner": {"n_warmup_steps": 512}, "line": "x"}])
def test_a_plan_round_trips(data):
    assert Plan.from_dict(Plan.from_dict(data).to_dict()).to_dict() == Plan.from_dict(data).to_dict()


def test_tpe_start_up_ends_within_the_budget_unless_the_space_sets_it(tmp_path, tiny_model, toy_data):
    """A TPE sampler with no n_startup_trials: the plan sets it (the starting points, then at least one random trial,
    at most Optuna's 10), the applied space builds its TPE with it, and a stored plan restores it. A space that sets
    it keeps it; without --timeout nothing is set (Optuna's default)."""
    import optuna

    s = space(tmp_path)
    s.starting_points = [{"backbone_lr": 1e-4, "batch_size": 8}, {"backbone_lr": 5e-5, "batch_size": 16}]
    plan = make_plan(s, base(tiny_model, toy_data), backbone_info(str(tiny_model)), timeout=600, base_sections={})
    n = plan.sampler["n_startup_trials"]
    assert 3 <= n <= 10
    plan.apply(base(tiny_model, toy_data), s)
    sampler = s.build_sampler(seed=0, n_workers=1)
    assert isinstance(sampler, optuna.samplers.TPESampler) and sampler._n_startup_trials == n
    assert Plan.from_dict(plan.to_dict()).sampler == {"n_startup_trials": n}
    fixed = space(tmp_path)
    fixed.sampler = fixed.sampler.model_copy(update={"n_startup_trials": 7})
    assert make_plan(fixed, base(tiny_model, toy_data), backbone_info(str(tiny_model)), timeout=600, base_sections={}).sampler == {}
    assert make_plan(space(tmp_path), base(tiny_model, toy_data), backbone_info(str(tiny_model)), timeout=None, base_sections={}).sampler == {}


def test_a_planned_trial_has_a_point_the_pruner_judges():
    """The pruner skips the first grid point and never prunes at the last evaluation: a planned trial gets at least
    three, however dear evaluation is, and cheap evaluations stop at 20."""
    from autoembed.plan import evaluations

    assert evaluations(train_seconds=100, eval_seconds=1000) == 3
    assert evaluations(train_seconds=1000, eval_seconds=10) == 17  # 15% of the trial: 0.15 / 0.85 x 100
    assert evaluations(train_seconds=10_000, eval_seconds=1) == 20


def test_the_trial_count_counts_where_a_pruner_can_stop_a_trial(tmp_path, tiny_model, toy_data, monkeypatch):
    """A pruned trial stops at the first evaluation past the pruner's warm-up at the earliest: with the warm-up at
    the first of three it runs two thirds of its length, so a trial past the start-up costs 1/2 + 1/2 x 2/3 of a full
    one on average (half of them stopped; the plan took two thirds stopped until session 11, and the 0.53 of a full
    trial until session 7); without a pruner every trial runs to the end. The planned length follows."""
    import autoembed.plan as planning
    from autoembed.plan import cost_share

    assert cost_share(True, 3072, 1024) == pytest.approx(1 / 2 + 1 / 2 * 2 / 3)
    assert cost_share(True, 10_240, 1024) == pytest.approx(1 / 2 + 1 / 2 * 0.2)
    assert cost_share(False, 10_240, 1024) == 1.0 and cost_share(True, 2048, 1024) == 1.0  # nothing to judge
    # a fixed, slow machine: 20 pairs/s of training, evaluation dear enough that trials get three evaluations
    monkeypatch.setattr(planning, "measure", lambda *a, **k: {"train_pairs_per_s": 20.0, "encode_texts_per_s": 200.0})
    data = make_toy_data(tmp_path / "data", n_docs=1500)  # 3,375 training pairs
    lengths = {}
    for pruner in ("median", "none"):
        s = space(tmp_path)
        s.pruner = {"type": pruner}
        plan = make_plan(s, base(tiny_model, data), backbone_info(str(tiny_model)), timeout=1200, base_sections={})
        lengths[pruner] = plan.updates["training.epochs"]
        n = int(plan.line.split("~")[1].split()[0])
        assert 10 <= n <= 13, plan.line  # about TARGET_TRIALS fit either way
    # trials that are never stopped early must be shorter for as many to fit
    assert lengths["none"] < lengths["median"], lengths


def test_the_trial_count_runs_the_pruner_start_up_to_the_end():
    """The median pruner judges no trial before its start-up trials end, and later stops about half of them: so
    the plan counts the start-up at full cost. Session 10's equal-budget search (25 min, trials of ~4.0 min,
    judged from 3,072 of 8,944 pairs) was promised ~11 trials by the old count (two thirds of every trial stopped);
    7 ran, 6 of them complete. The count now says ~8."""
    from autoembed.plan import cost_share, startup_trials, trials_cost, trials_fit

    share = cost_share(True, 8944, 3072, warmup=0)
    assert share == pytest.approx(1 / 2 + 1 / 2 * 3072 / 8944)
    budget = 25 / 4.0  # full trials' time
    assert startup_trials(trials_fit(budget, share, 2)) == 2
    assert round(trials_fit(budget, share, 2)) == 8
    assert trials_fit(budget, 1.0, 2) == budget  # no pruner: full trials
    assert trials_fit(1.5, share, 2) == 1.5  # all of it start-up
    assert trials_cost(trials_fit(budget, share, 2), share, 2) == pytest.approx(budget)  # its inverse
    assert startup_trials(1) == 2 and startup_trials(40) == 5


def test_the_grid_measures_the_value_sample_unless_the_user_sets_an_interim_one(tmp_path, tiny_model, monkeypatch):
    """The plan sets no interim sub-sample: every evaluation on the grid measures the trial's value sample, so the
    pruner judges a trial on what its value will be measured on (on ICD-10 the 400 x 2,000 sub-sample planned in
    sessions 8-9 ordered six trials unlike their values: benchmarks/pruning_curves.py). Three evaluations put the first
    a third into a trial, and the pruner judges it. A user's interim sub-sample still buys a finer grid, measured by
    the plan and named in its line."""
    import autoembed.plan as planning

    monkeypatch.setattr(planning, "measure", lambda *a, **k: {"train_pairs_per_s": 20.0, "encode_texts_per_s": 50.0})
    data = make_toy_data(tmp_path / "data", n_docs=1500)  # ~1,100 validation queries x 1,500 docs: the whole set fits
    s = space(tmp_path, "fixed: {training.epochs: 3.0}")
    plan = make_plan(s, base(tiny_model, data), backbone_info(str(tiny_model)), timeout=3600, base_sections={})
    assert not [k for k in plan.updates if k.startswith("evaluation.") and k != "evaluation.every_pairs"], plan.updates
    assert " on " not in plan.line, plan.line
    coarse = plan.updates["evaluation.every_pairs"]
    # 3 epochs of ~3,400 pairs at 20/s: 8.5 min of training, 15% of it 89 s: two whole-set evaluations (~2,600 texts,
    # 52 s), so the plan's minimum of three: the first a third into the trial, past its warm-up, so judged
    assert coarse == planning._round_up(3 * 3375 / 3), coarse
    assert plan.pruner["n_warmup_steps"] == 0
    fixed = "fixed: {training.epochs: 3.0, evaluation.interim_queries: 100, evaluation.interim_corpus: 200}"
    user = make_plan(space(tmp_path, fixed), base(tiny_model, data), backbone_info(str(tiny_model)), timeout=3600, base_sections={})
    fine = user.updates["evaluation.every_pairs"]
    assert user.line.endswith(" on 100 x 200"), user.line
    # 300 texts on the grid (after the end's whole-set evaluation): several times the evaluations in the same 15%
    assert coarse // fine >= 2, (fine, coarse)
    # the pruner's warm-up: the grid points in the first quarter of the trial
    assert user.pruner["n_warmup_steps"] == planning.warmup_pairs(3 * 3375, fine) > 0


def test_the_pruner_judges_no_trial_before_a_quarter_of_it():
    """The pruner's warm-up covers the grid points in the first quarter of a typical trial (where the learning rate
    may still be warming up: on ICD-10 the value sample ordered six trials as their values did with rho -0.03 at 14%
    of a trial, 0.88 at 29%), and a pruned trial's cost counts from the first point past it. A first point past the
    quarter is judged (until session 10 the first point never was: with three evaluations, one judgement at two
    thirds of a trial)."""
    from autoembed.plan import cost_share, warmup_pairs

    assert warmup_pairs(10_240, 512) == 2560 and warmup_pairs(10_240, 4096) == 0
    assert cost_share(True, 10_240, 512, warmup=2560) == pytest.approx(1 / 2 + 1 / 2 * 3072 / 10_240)
    assert cost_share(True, 10_240, 4096, warmup=0) == pytest.approx(1 / 2 + 1 / 2 * 4096 / 10_240)
    assert cost_share(True, 10_240, 512) == pytest.approx(1 / 2 + 1 / 2 * 1024 / 10_240)  # no warm-up given: the first


def test_the_plan_times_the_batches_the_space_may_sample_and_counts_mined_negatives(tmp_path, tiny_model, toy_data, monkeypatch):
    """A trial's speed depends on its batch and on its mined negatives (one more text per pair each): the plan times
    the smallest to the largest batch the space may sample and averages time per pair over them, then scales for
    the negatives the space may add. (It timed the typical batch alone until session 8, and promised ICD-10 trials
    of ~3.1 min that took ~4.1.)"""
    import autoembed.plan as planning

    s = space(tmp_path)
    assert planning.batch_choices(s, 32) == [8, 16]
    s.params["batch_size"] = s.params["batch_size"].model_copy(update={"choices": [4, 8, 16, 32, 64, 128, 256]})
    assert planning.batch_choices(s, 32) == [4, 16, 64, 256]  # four, spread from the smallest to the largest
    s.params["batch_size"] = s.params["batch_size"].model_copy(update={"type": "int", "choices": None, "low": 6, "high": 100})
    assert planning.batch_choices(s, 32) == [6, 100]  # a range: its ends
    assert planning.batch_choices(SearchSpace.from_dict({"metric": "recall@10", "fixed": {"training.epochs": 1.0}}), 32) == [32]

    timed = {}

    def measure(*args, batches, **kwargs):
        timed["batches"] = batches
        return {"train_pairs_per_s": 40.0, "encode_texts_per_s": 400.0}

    monkeypatch.setattr(planning, "measure", measure)
    mined = space(tmp_path, "  hard_negatives: {type: categorical, choices: [0, 1]}")
    plan = make_plan(mined, base(tiny_model, toy_data), backbone_info(str(tiny_model)), timeout=600, base_sections={})
    assert timed["batches"] == [8, 16]
    # half the trials encode 3 texts per pair instead of 2: 1.25x the time on average
    assert plan.measured["train_pairs_per_s"] == 32.0 and plan.measured["mined_negatives_factor"] == 1.25
    plain = make_plan(space(tmp_path), base(tiny_model, toy_data), backbone_info(str(tiny_model)), timeout=600, base_sections={})
    assert plain.measured["train_pairs_per_s"] == 40.0 and "mined_negatives_factor" not in plain.measured


def test_measure_times_each_batch(tiny_model, toy_data):
    from autoembed.data import load_dataset
    from autoembed.plan import measure

    config = base(tiny_model, toy_data)
    dataset = load_dataset(config.data.train, config.data.val, config.data.corpus)
    speed = measure(config, backbone_info(str(tiny_model)), dataset, batches=[2, 8])
    assert speed["train_pairs_per_s@2"] > 0 and speed["train_pairs_per_s@8"] > 0
    harmonic = 2 / (1 / speed["train_pairs_per_s@2"] + 1 / speed["train_pairs_per_s@8"])
    assert speed["train_pairs_per_s"] == pytest.approx(harmonic, rel=0.01)


def test_the_validation_sample_grows_with_what_a_trial_costs(tmp_path, tiny_model, monkeypatch):
    """A trial's value (what the search picks by) measures as much of validation as 5% of a typical trial's training
    pays for: at least 600 queries x 5,000 documents, the whole set when it fits. Longer trials, a larger sample."""
    import autoembed.plan as planning
    from autoembed.plan import validation_sample

    assert validation_sample(1100, 1500, 100) == (1100, 1500)  # fits the least sample: all of it
    assert validation_sample(1214, 46_881, 100) == (600, 5000)  # the least sample
    assert validation_sample(1214, 46_881, 15_500) == (1214, 14_286)  # all queries; the documents take the rest
    assert validation_sample(50_000, 2000, 5600) == (3600, 2000)  # all documents; the queries take the rest
    assert planning.nearest_first(600, 5000) == 18 and planning.nearest_first(10, 5000) == 100
    monkeypatch.setattr(planning, "measure", lambda *a, **k: {"train_pairs_per_s": 20.0, "encode_texts_per_s": 100.0})
    data = make_toy_data(tmp_path / "data", n_docs=8000)  # 18,000 training pairs; ~5,000 queries x 8,000 docs
    n_queries = len({json.loads(line)["query"] for line in data["val"].read_text().splitlines()})
    samples = {}
    for epochs in (0.5, 2.0, 3.0):
        s = space(tmp_path, f"fixed: {{training.epochs: {epochs}}}")
        plan = make_plan(s, base(tiny_model, data), backbone_info(str(tiny_model)), timeout=36_000, base_sections={})
        u = plan.updates
        samples[epochs] = (u.get("evaluation.max_queries", n_queries), u.get("evaluation.max_corpus", 8000))
        assert "evaluation.interim_queries" not in u and "evaluation.interim_corpus" not in u
        # the documents are the answers, then each query's nearest, rank by rank, until the sample is full
        if samples[epochs][1] < 8000:
            assert u["evaluation.hard_distractors"] == planning.nearest_first(*samples[epochs]), (u, samples)
        else:
            assert "evaluation.hard_distractors" not in u, u
        assert f"validation {samples[epochs][0]:,} queries x {samples[epochs][1]:,} docs" in plan.line, plan.line
    assert samples[0.5] == (600, 5000), samples  # 450 s of training: 5% of it encodes fewer than the least sample
    # 1,800 s of training: 5% of it is 9,000 texts at 100 texts/s, all 8,000 documents and 1,000 queries
    assert samples[2.0] == (1000, 8000), samples
    assert samples[3.0] == (n_queries, 8000), samples  # 13,500 texts: the whole validation set fits


def test_a_space_with_mined_negatives_gets_its_value_on_twice_the_documents(tmp_path, tiny_model, monkeypatch):
    """A nearest-first sample holds the base model's nearest documents, what mined negatives train against, and
    favours trials with them (ICD-10: rho 0.48 over twelve models at 14,000 documents, 0.83 at 28,000; session 11).
    When the space may sample mined negatives, a trial's value measures twice the documents, and the grid the sample
    it would have had, as an interim sub-sample (nearest first, as the value's sample); otherwise nothing changes."""
    import autoembed.plan as planning

    monkeypatch.setattr(planning, "measure", lambda *a, **k: {"train_pairs_per_s": 20.0, "encode_texts_per_s": 100.0})
    data = make_toy_data(tmp_path / "data", n_docs=12_000)
    mined = "  hard_negatives: {type: categorical, choices: [0, 1]}\nfixed: {training.epochs: 0.5}"
    plain = make_plan(space(tmp_path, "fixed: {training.epochs: 0.5}"), base(tiny_model, data), backbone_info(str(tiny_model)), timeout=36_000, base_sections={})
    assert plain.updates["evaluation.max_corpus"] == 5000 and "evaluation.interim_corpus" not in plain.updates
    plan = make_plan(space(tmp_path, mined), base(tiny_model, data), backbone_info(str(tiny_model)), timeout=36_000, base_sections={})
    u = plan.updates
    assert (u["evaluation.max_queries"], u["evaluation.max_corpus"], u["evaluation.interim_corpus"]) == (600, 10_000, 5000), u
    assert u["evaluation.hard_distractors"] == planning.nearest_first(600, 10_000) and "evaluation.interim_queries" not in u
    assert "validation 600 queries x 10,000 docs" in plan.line and plan.line.endswith(" on 600 x 5,000"), plan.line
    # twice the sample is the whole corpus: no corpus sample for the value; the grid's is still filled nearest first
    data = make_toy_data(tmp_path / "data8", n_docs=8000)
    plan = make_plan(space(tmp_path, mined), base(tiny_model, data), backbone_info(str(tiny_model)), timeout=36_000, base_sections={})
    u = plan.updates
    assert "evaluation.max_corpus" not in u and u["evaluation.interim_corpus"] == 5000, u
    assert u["evaluation.hard_distractors"] == planning.nearest_first(600, 5000), u
    # what the user sets wins: an interim of their own, or a fixed number of nearest documents
    for fixed in ("evaluation.interim_corpus: 3000", "evaluation.hard_distractors: 3"):
        s = space(tmp_path, f"  hard_negatives: {{type: categorical, choices: [0, 1]}}\nfixed: {{training.epochs: 0.5, {fixed}}}")
        plan = make_plan(s, base(tiny_model, data), backbone_info(str(tiny_model)), timeout=36_000, base_sections={})
        assert plan.updates["evaluation.max_corpus"] == 5000 and "evaluation.interim_corpus" not in plan.updates, plan.updates


def test_a_sample_the_space_fixes_is_what_the_plan_counts(tmp_path, tiny_model, monkeypatch):
    """A validation sample the space's `fixed` sets (not the study's base) is what the plan times and prints; it
    sets no sample of its own. Until session 9 it counted the whole validation set then: a pinned 807 x 6,726
    sample on ICD-10 printed "validation 1,213 queries x 46,881 docs" and "~1.9 trials"."""
    import autoembed.plan as planning

    monkeypatch.setattr(planning, "measure", lambda *a, **k: {"train_pairs_per_s": 20.0, "encode_texts_per_s": 50.0})
    data = make_toy_data(tmp_path / "data", n_docs=1500)
    pinned = "{evaluation.max_queries: 50, evaluation.max_corpus: 300, evaluation.interim_queries: 20, evaluation.interim_corpus: 100}"
    plan = make_plan(space(tmp_path, f"fixed: {pinned}"), base(tiny_model, data), backbone_info(str(tiny_model)), timeout=3600, base_sections={})
    assert "validation 50 queries x 300 docs" in plan.line, plan.line
    assert not [k for k in plan.updates if k != "evaluation.every_pairs" and k.startswith("evaluation.")], plan.updates
    whole = make_plan(space(tmp_path), base(tiny_model, data), backbone_info(str(tiny_model)), timeout=3600, base_sections={})
    # evaluating 50 + 300 texts (20 + 100 on the grid) instead of all ~2,600: a finer grid
    assert plan.updates["evaluation.every_pairs"] < whole.updates["evaluation.every_pairs"]


def test_a_trials_own_length_is_predicted_from_what_the_plan_measured(tmp_path, tiny_model, toy_data):
    """The search's deadline (Coordinator.late) predicts each trial from its own config: its training pairs at its batch
    size's measured speed (between two measured sizes, in proportion), slower by a third per mined negative's extra text
    (two texts a pair become three), and its evaluations on its grid."""
    from autoembed.plan import predict_seconds

    plan = make_plan(space(tmp_path), base(tiny_model, toy_data), backbone_info(str(tiny_model)), timeout=600, base_sections={})
    n_train = len([line for line in Path(toy_data["train"]).read_text().splitlines() if line.strip()])
    assert plan.measured["train_rows"] == n_train and plan.measured["val_queries"] > 0 and plan.measured["val_docs"] > 0
    measured = {"train_rows": 1000, "train_pairs_per_s@16": 10.0, "train_pairs_per_s@64": 40.0, "encode_texts_per_s": 100.0,
                "val_queries": 50, "val_docs": 450}  # fmt: skip
    config = base(tiny_model, toy_data, training={"epochs": 2, "batch_size": 32}, evaluation={"every_pairs": 500})
    # 2,000 pairs at 20 pairs/s (a third of the way from 10 to 40), and 4 evaluations of 500 texts at 100 texts/s
    assert predict_seconds(config, measured) == pytest.approx(100 + 4 * 5)
    mined = config.replace(**{"data.hard_negatives": 1})
    assert predict_seconds(mined, measured) == pytest.approx(150 + 4 * 5)
    sampled = config.replace(**{"evaluation.max_queries": 10, "evaluation.max_corpus": 90, "training.batch_size": 128})
    assert predict_seconds(sampled, measured) == pytest.approx(2000 / 40 + 4 * 1)  # beyond the largest size: its speed
    # a plan stored before the data's size was kept, or one without --timeout, predicts nothing
    assert predict_seconds(config, {k: v for k, v in measured.items() if k != "train_rows"}) is None
    assert predict_seconds(config, {}) is None
