"""Pruner and sampler specs: checked against Optuna's own signatures, built with the space file's meaning."""

from __future__ import annotations

import optuna
import pytest
from pydantic_core import PydanticCustomError

from autoembed.pruners import check_pruner, make_pruner

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_a_checked_spec_is_plain_and_builds_the_wrapped_pruner_inside():
    spec = {"type": "patient", "patience": "2", "wrapped": {"type": "median", "n_startup_trials": 3}}
    checked = check_pruner(spec)
    assert checked == {"type": "patient", "patience": 2, "wrapped": {"type": "median", "n_startup_trials": 3}}
    pruner = make_pruner(checked)
    assert isinstance(pruner, optuna.pruners.PatientPruner)
    assert isinstance(pruner._wrapped_pruner, optuna.pruners.MedianPruner)


@pytest.mark.parametrize(
    ("spec", "at", "says"),
    [
        ({"type": "median", "n_warmup_steps": "four"}, ("n_warmup_steps",), "must be int, got str 'four'"),
        ({"type": "threshold", "lower": True}, ("lower",), "got bool True"),
        ({"type": "patient", "patience": 1, "wrapped": {"type": "x"}}, ("wrapped", "type"), "unknown pruner 'x'"),
        ({"type": "patient", "patience": 1, "wrapped": 3}, ("wrapped",), "must be a mapping, got int 3"),
    ],
)
def test_a_bad_argument_is_placed_at_its_key(spec, at, says):
    with pytest.raises(PydanticCustomError) as info:
        check_pruner(spec)
    assert info.value.context["at"] == at and says in info.value.context["message"]


@pytest.mark.parametrize("kind", ["median", "percentile"])
def test_the_warmup_step_itself_is_not_judged(kind):
    """``n_warmup_steps: N`` skips steps 0..N; Optuna alone would judge step N."""
    spec = {"type": kind, "n_startup_trials": 1, "n_warmup_steps": 4} | ({"percentile": 50.0} if kind == "percentile" else {})
    study = optuna.create_study(direction="maximize", pruner=make_pruner(check_pruner(spec)))
    good = study.ask()
    for step in range(8):
        good.report(1.0, step)
    study.tell(good, 1.0)
    bad = study.ask()
    judged = []
    for step in range(8):
        bad.report(0.0, step)
        judged.append(bad.should_prune())
    assert judged == [False] * 5 + [True] * 3


def _study_with(values: list[float | None], sampler: optuna.samplers.BaseSampler, only: list[int] | None = None) -> optuna.Study:
    """A study whose trials ended with ``values`` in order (None: pruned), each with two params (``only``: just these)."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dists = {"x": optuna.distributions.FloatDistribution(0.0, 1.0), "c": optuna.distributions.CategoricalDistribution(["a", "b"])}
    for i, v in enumerate(values):
        if only is not None and i not in only:
            continue
        params = {"x": (i * 0.37) % 1.0, "c": "ab"[i % 2]}
        state = optuna.trial.TrialState.PRUNED if v is None else optuna.trial.TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=v, state=state,
                                                  intermediate_values={1: (i % 7) / 7}))  # fmt: skip
    return study


def _ask(study: optuna.Study) -> dict:
    trial = study.ask()
    return {"x": trial.suggest_float("x", 0.0, 1.0), "c": trial.suggest_categorical("c", ["a", "b"])}


def test_bounded_tpe_keeps_the_best_and_the_most_recent_and_samples_as_tpe_on_them():
    from autoembed.pruners import BEST_KEPT, BoundedTPESampler, _RecentHistory

    values = [((i * 7919) % 101) / 100 if i % 3 else None for i in range(80)]  # complete and pruned, scrambled
    bounded = _study_with(values, BoundedTPESampler(seed=3, multivariate=True, max_history=40))
    running = bounded.ask()  # a running trial stays in view
    kept = [t.number for t in _RecentHistory(bounded, 40)._get_trials(deepcopy=False)]
    complete = [(v, i) for i, v in enumerate(values) if v is not None]
    best = {i for _, i in sorted(complete, key=lambda vi: (-vi[0], vi[1]))[:BEST_KEPT]}
    recent = [i for i in range(80) if i not in best][-(40 - BEST_KEPT) :]
    assert kept == sorted(best | set(recent)) + [running.number]

    # Optuna's own TPE on a study holding only the kept trials, in order, samples exactly what the bounded TPE does
    bounded = _study_with(values, BoundedTPESampler(seed=3, multivariate=True, max_history=40))
    only = _study_with(values, optuna.samplers.TPESampler(seed=3, multivariate=True), only=kept[:-1])
    assert [_ask(bounded) for _ in range(3)] == [_ask(only) for _ in range(3)]


def test_bounded_tpe_within_its_bound_is_optunas_tpe():
    from autoembed.pruners import BoundedTPESampler

    values = [((i * 31) % 17) / 17 for i in range(30)]
    ours = _study_with(values, BoundedTPESampler(seed=5, multivariate=True, max_history=30))
    theirs = _study_with(values, optuna.samplers.TPESampler(seed=5, multivariate=True))
    assert [_ask(ours) for _ in range(4)] == [_ask(theirs) for _ in range(4)]
