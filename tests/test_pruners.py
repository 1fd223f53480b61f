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
