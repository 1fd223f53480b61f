"""One training run: every loss trains, learning-rate groups, seeding, frozen layers, the reporter."""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from autoembed.config import TrialConfig
from autoembed.errors import AutoembedError, TrialFailed
from autoembed.evaluation import TokenCache, encode
from autoembed.model import build_model, freeze_lowest_layers
from autoembed.training import _optimizer, prepare, total_steps, train

WORDS = "fever pain heart lung kidney liver skin bone arm leg knee hip eye ear nose throat".split()


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> dict[str, str]:
    """Eight training rows (one batch, the same every step) of each kind, and four validation rows."""
    folder = tmp_path_factory.mktemp("small")
    docs = [f"{WORDS[i]} {WORDS[(i + 5) % 16]}" for i in range(12)]
    pairs = [{"query": f"{WORDS[(i + 5) % 16]} of the {WORDS[i]}", "positive": docs[i]} for i in range(12)]
    return {
        "pairs": jsonl(folder / "pairs.jsonl", pairs[:8]),
        "triplets": jsonl(
            folder / "triplets.jsonl", [{**p, "negative": docs[(i + 1) % 8]} for i, p in enumerate(pairs[:8])]
        ),
        "labeled": jsonl(
            folder / "labeled.jsonl",
            [
                {"text1": p["query"], "text2": docs[i] if i % 2 == 0 else docs[(i + 3) % 8], "label": int(i % 2 == 0)}
                for i, p in enumerate(pairs[:8])
            ],
        ),
        "val": jsonl(folder / "val.jsonl", pairs[8:]),
        "val_labeled": jsonl(
            folder / "val_labeled.jsonl", [{"text1": p["query"], "text2": p["positive"], "label": 1} for p in pairs[8:]]
        ),
    }


def toy_config(tiny_model, toy_data, **dotted) -> TrialConfig:
    """Trains on CPU also where CUDA is present: bit-identical reruns are promised on CPU (tests/test_gpu.py covers CUDA)."""
    base = {
        "model": str(tiny_model),
        "data": {"train": str(toy_data["train"]), "val": str(toy_data["val"]), "corpus": str(toy_data["corpus"])},
        "training": {"batch_size": 8, "max_steps": 4, "backbone_lr": 1e-3, "head_lr": 1e-3, "device": "cpu"},
    }
    return TrialConfig.from_dict(base).replace(**dotted)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("train_file", "val_file", "loss"),
    [
        ("pairs", "val", {"loss.type": "infonce"}),
        ("pairs", "val", {"loss.type": "infonce", "loss.symmetric": True, "loss.label_smoothing": 0.1}),
        ("pairs", "val", {"loss.type": "triplet"}),
        ("triplets", "val", {"loss.type": "triplet", "loss.distance": "euclidean", "loss.margin": 1.0}),
        ("triplets", "val", {"loss.type": "infonce"}),
        ("pairs", "val", {"loss.type": "contrastive"}),
        ("labeled", "val_labeled", {"loss.type": "contrastive", "loss.margin": 0.8}),
    ],
    ids=[
        "infonce",
        "infonce-symmetric",
        "triplet-in-batch",
        "triplet-negatives",
        "infonce-negatives",
        "contrastive",
        "contrastive-labeled",
    ],
)
def test_every_loss_falls_and_the_weights_move(tiny_model, small_files, train_file, val_file, loss):
    config = TrialConfig.from_dict(
        {
            "model": str(tiny_model),
            "data": {"train": small_files[train_file], "val": small_files[val_file]},
            "architecture": {"hidden_dropout": 0.0, "attention_dropout": 0.0, "adapter_depth": 1, "adapter_width": 16},
            "training": {
                "batch_size": 8,
                "max_steps": 8,
                "backbone_lr": 2e-3,
                "head_lr": 2e-3,
                "warmup_ratio": 0.0,
                "device": "cpu",
            },
        }
    ).replace(**loss)
    before = weights(build_model(config))
    losses: list[float] = []
    result = train(config, progress=lambda step, total, value: losses.append(value))
    assert len(losses) == result.steps == 8
    assert losses[-1] < 0.8 * losses[0], losses
    after = weights(result.model)
    assert before.keys() == after.keys()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert "0.model.encoder.layer.0.attention.self.query.weight" in moved  # backbone
    assert "2.linear.weight" in moved  # adapter
    assert set(result.metrics) == {"recall@1", "recall@10", "mrr@10", "ndcg@10"}


def test_learning_rate_groups(tiny_model, toy_data):
    config = toy_config(
        tiny_model,
        toy_data,
        **{
            "architecture.adapter_depth": 1,
            "architecture.adapter_width": 16,
            "training.backbone_lr": 2e-5,
            "training.head_lr": 3e-3,
            "training.weight_decay": 0.05,
        },
    )
    model = build_model(config)
    freeze_lowest_layers(model, 1)
    optimizer = _optimizer(model, config)
    assert optimizer.defaults["fused"]  # the fused AdamW kernel, as sentence-transformers' trainer uses
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert [
        (groups[n]["lr"], groups[n]["weight_decay"]) for n in ("backbone", "backbone_no_decay", "head", "head_no_decay")
    ] == [
        (2e-5, 0.05),
        (2e-5, 0.0),
        (3e-3, 0.05),
        (3e-3, 0.0),
    ]
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = {g: {names[id(p)] for p in groups[g]["params"]} for g in groups}
    assert by_group["head"] == {"2.linear.weight"}
    assert by_group["head_no_decay"] == {"2.linear.bias"}
    assert all(n.startswith("0.") for n in by_group["backbone"] | by_group["backbone_no_decay"])
    assert all(n.endswith(".weight") and "LayerNorm" not in n for n in by_group["backbone"])
    assert all(n.endswith(".bias") or "LayerNorm" in n for n in by_group["backbone_no_decay"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set().union(*by_group.values()) == trainable  # every trainable parameter once, no frozen one
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)
    assert not any(".layer.0." in n or "embeddings" in n for n in trainable)


def test_same_seed_gives_identical_embeddings_and_metrics(tiny_model, toy_data):
    config = toy_config(tiny_model, toy_data, **{"architecture.output_dim": 16, "evaluation.every_steps": 2})
    first, second = train(config), train(config)
    other = train(config.replace(**{"training.seed": 7}))
    assert first.history == second.history
    a, b, c = weights(first.model), weights(second.model), weights(other.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    prepared = prepare(config)
    idx = range(len(prepared.cache.texts))
    assert torch.equal(encode(first.model, prepared.cache, idx), encode(second.model, prepared.cache, idx))


def test_frozen_layers_stay_unchanged(tiny_model, toy_data):
    config = toy_config(tiny_model, toy_data, **{"training.freeze_layers": 1})
    before = weights(build_model(config))
    after = weights(train(config).model)
    for key in before:
        unchanged = torch.equal(before[key], after[key])
        frozen = ".embeddings." in key or ".encoder.layer.0." in key
        if frozen:
            assert unchanged, key
        elif ".encoder.layer.1." in key and key.endswith("weight") and "LayerNorm" not in key:
            assert not unchanged, key


@pytest.mark.parametrize(
    ("loss", "expect"),
    [
        ("contrastive", nullcontext()),
        (
            "infonce",
            pytest.raises(
                AutoembedError,
                match=r"^loss\.type: labeled pairs \(text1/text2/label\) train with loss\.type 'contrastive', got 'infonce'$",
            ),
        ),
        ("triplet", pytest.raises(AutoembedError, match=r"got 'triplet'$")),
    ],
)
def test_labeled_pairs_train_with_contrastive_only(tiny_model, small_files, loss, expect):
    config = TrialConfig.from_dict(
        {
            "model": str(tiny_model),
            "data": {"train": small_files["labeled"], "val": small_files["val_labeled"]},
            "loss": {"type": loss},
            "training": {"batch_size": 8, "max_steps": 2, "device": "cpu"},
        }
    )
    with expect:
        assert train(config).steps == 2


def test_mixed_labeled_and_unlabeled_rows_are_refused(tiny_model, tmp_path, small_files):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        Path(small_files["pairs"]).read_text() + json.dumps({"text1": "a", "text2": "b", "label": 0}) + "\n"
    )
    config = TrialConfig.from_dict(
        {
            "model": str(tiny_model),
            "data": {"train": str(path), "val": small_files["val"]},
            "loss": {"type": "contrastive"},
        }
    )
    with pytest.raises(
        AutoembedError,
        match="^" + re.escape(f"{path}: training file mixes labeled pairs (text1/text2/label) with other rows") + "$",
    ):
        train(config)


class Recorder:
    def __init__(self, stop_after: int | None = None):
        self.stop_after = stop_after
        self.started: int | None = None
        self.reports: list[tuple[int, dict[str, float]]] = []
        self.pairs: list[int] = []

    def start(self, total_steps: int) -> None:
        self.started = total_steps

    def report(self, step: int, metrics: dict[str, float], *, pairs: int) -> None:
        self.reports.append((step, metrics))
        self.pairs.append(pairs)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.reports) >= self.stop_after


@pytest.mark.parametrize(("stop_after", "steps", "reported"), [(None, 6, [2, 4, 6]), (1, 2, [2]), (2, 4, [2, 4])])
def test_reporter_sees_every_evaluation_and_can_stop(tiny_model, toy_data, stop_after, steps, reported):
    config = toy_config(tiny_model, toy_data, **{"training.max_steps": 6, "evaluation.every_steps": 2})
    recorder = Recorder(stop_after)
    result = train(config, reporter=recorder)
    assert recorder.started == 6
    assert [s for s, _ in recorder.reports] == reported == [s for s, _ in result.history]
    assert result.steps == steps and result.total_steps == 6
    assert result.stopped is (steps < 6)
    assert (result.value, result.value_step) == (result.history[-1][1]["recall@10"], reported[-1])


@pytest.mark.parametrize(("batch_size", "steps"), [(8, [2, 4, 6]), (6, [3, 6, 8])])
def test_evaluations_follow_one_grid_of_training_pairs(tiny_model, toy_data, batch_size, steps):
    """every_pairs evaluates each time another N pairs were trained on, keyed by the grid point: batch 8 (after 16, 32,
    48 pairs) and batch 6 (after 18, 36, 48) report at the same keys, so a pruner compares them at equal compute."""
    config = toy_config(
        tiny_model, toy_data, **{"training.batch_size": batch_size, "training.max_steps": steps[-1], "evaluation.every_pairs": 16}
    )
    recorder = Recorder()
    result = train(config, reporter=recorder)
    assert [s for s, _ in recorder.reports] == steps
    assert recorder.pairs == [16, 32, 48]
    assert (result.value_step, result.value_pairs) == (steps[-1], 48)


def test_interim_evaluations_measure_a_sub_sample_and_the_value_the_whole_task(tiny_model, tmp_path):
    """evaluation.interim_*: the reporter's curve (what the pruner judges) is measured on a sub-sample of the
    validation task, the run's value on the whole task at its end: the same value as a run without a sub-sample."""
    from conftest import make_toy_data

    from autoembed.evaluation import RetrievalEvaluator

    toy_data = make_toy_data(tmp_path, n_docs=160)  # a task the tiny model does not solve: the two samples differ

    dotted = {"training.max_steps": 6, "evaluation.every_steps": 2}
    whole = train(toy_config(tiny_model, toy_data, **dotted), reporter=Recorder())
    config = toy_config(tiny_model, toy_data, **dotted, **{"evaluation.interim_queries": 20, "evaluation.interim_corpus": 40})
    prepared = prepare(config)
    sub = prepared.interim_task
    assert len(sub.queries) == 20 and len(sub.corpus) == 40 and len(prepared.val_task.queries) > 20
    recorder = Recorder()
    result = train(config, prepared=prepared, reporter=recorder)
    assert [s for s, _ in recorder.reports] == [2, 4, 6] and [s for s, _ in result.history] == [2, 4, 6, 6]
    assert (result.value, result.metrics, result.value_step) == (whole.value, whole.metrics, 6)
    on_sub = RetrievalEvaluator(sub, prepared.cache, config.evaluation.k)(result.model)
    assert recorder.reports[-1][1] == on_sub != result.metrics
    assert RetrievalEvaluator(prepared.val_task, prepared.cache, config.evaluation.k)(result.model) == result.metrics
    # a recipe's run (no reporter) ends on the same value
    assert train(config, prepared=prepared).value == result.value


def test_an_interim_sub_sample_of_the_whole_validation_keeps_each_querys_nearest(tiny_model, tmp_path):
    """With the whole validation set as the task (no max_corpus) the interim sub-sample still takes each query's
    nearest documents by the base model before any random fill (evaluation.hard_distractors), as the budget plan
    asks since session 9: a random fill is documents no model ranks near a query."""
    from conftest import make_toy_data
    from transformers import AutoTokenizer

    from autoembed.mining import BaseEmbeddings
    from autoembed.model import backbone_info, load_encoder

    data = make_toy_data(tmp_path, n_docs=160)
    interim = {"evaluation.interim_queries": 10, "evaluation.interim_corpus": 30}
    near = prepare(toy_config(tiny_model, data, **interim, **{"evaluation.hard_distractors": 2}))
    plain = prepare(toy_config(tiny_model, data, **interim))
    assert near.val_task == plain.val_task and near.interim_task.queries == plain.interim_task.queries
    assert near.interim_task.corpus != plain.interim_task.corpus
    tokenizer = AutoTokenizer.from_pretrained(str(backbone_info(str(tiny_model)).transformer_path))
    base = BaseEmbeddings(load_encoder(str(tiny_model)), tokenizer, 128)
    task, sub = near.val_task, near.interim_task
    for query in sub.queries:
        answers = {task.corpus[d] for d in task.relevant[task.queries.index(query)]}
        others = [t for t in task.corpus if t not in answers]
        nearest = others[base.nearest([query], others, 1)[0][0]]
        assert nearest in sub.corpus, query


def test_every_steps_and_every_pairs_exclude_each_other(tiny_model, toy_data):
    with pytest.raises(AutoembedError, match="every_pairs: set one of every_steps"):
        toy_config(tiny_model, toy_data, **{"evaluation.every_steps": 2, "evaluation.every_pairs": 16})


def test_a_non_finite_loss_fails_the_trial(tiny_model, toy_data, monkeypatch):
    import autoembed.training

    monkeypatch.setattr(autoembed.training, "compute_loss", lambda config, batch: batch.anchors.sum() * float("nan"))
    with pytest.raises(TrialFailed, match="^loss is nan at step 1$"):
        train(toy_config(tiny_model, toy_data))


def test_compiled_backbone_trains_like_the_eager_one(tiny_model, toy_data):
    """training.compile: true compiles the backbone (pays on CUDA; here the CPU, where it must still be right)."""
    eager = train(toy_config(tiny_model, toy_data))
    compiled = train(toy_config(tiny_model, toy_data, **{"training.compile": True}))
    assert compiled.model[0].auto_model._compiled_call_impl is not None
    assert eager.model[0].auto_model._compiled_call_impl is None
    a, b = weights(eager.model), weights(compiled.model)
    assert a.keys() == b.keys()  # compiling in place keeps the names a recipe saves and loads
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert compiled.value == pytest.approx(eager.value, abs=0.05)


def test_the_device_side_loss_watch_fails_at_the_first_bad_step():
    """CUDA reads the loss back only every SYNC_EVERY steps; the failure still names the step the loss went bad at,
    and progress sees every step with the loss last read. (The watch runs on any device; CUDA is where it is used.)"""
    from autoembed.training import SYNC_EVERY, _LossWatch

    seen: list[tuple[int, int, float]] = []
    watch = _LossWatch(torch.device("cpu"), 200, lambda step, total, loss: seen.append((step, total, loss)))
    evaluate = watch.before(lambda model: {"recall@10": 0.5})
    for step in range(1, SYNC_EVERY + 1):
        watch.step(torch.tensor(float(step), requires_grad=True) * 1.0, step)
    assert [s for s, _, _ in seen] == list(range(1, SYNC_EVERY + 1))
    assert seen[0][2] == 1.0 and seen[1][2] == 1.0  # read at step 1, then not again until SYNC_EVERY
    assert seen[-1][2] == float(SYNC_EVERY)
    assert evaluate(None) == {"recall@10": 0.5}
    watch.step(torch.tensor(float("inf")), SYNC_EVERY + 1)
    watch.step(torch.tensor(float("nan")), SYNC_EVERY + 2)  # only the first bad step is kept
    with pytest.raises(TrialFailed, match=f"^loss is inf at step {SYNC_EVERY + 1}$"):
        evaluate(None)  # an evaluation never reports a diverged run
    late = _LossWatch(torch.device("cpu"), 200, None)
    for step in range(1, SYNC_EVERY):
        late.step(torch.tensor(float("nan") if step == 7 else 1.0), step)
    with pytest.raises(TrialFailed, match="^loss is nan at step 7$"):
        late.step(torch.tensor(1.0), SYNC_EVERY)


@pytest.mark.parametrize(
    ("n_train", "batch_size", "epochs", "max_steps", "expected"),
    [
        (64, 8, 1.0, None, 8),
        (65, 8, 1.0, None, 8),  # a trailing batch of one row is dropped
        (66, 8, 1.0, None, 9),
        (64, 8, 2.5, None, 20),
        (64, 8, 1.0, 3, 3),
        (5, 32, 1.0, None, 1),
    ],
)
def test_total_steps(n_train, batch_size, epochs, max_steps, expected):
    config = TrialConfig.from_dict(
        {
            "model": "m",
            "data": {"train": "t.jsonl"},
            "training": {"batch_size": batch_size, "epochs": epochs, "max_steps": max_steps},
        }
    )
    assert total_steps(config, n_train) == expected


def test_prepare_tokenizes_every_text_once(tiny_model, toy_data):
    prepared = prepare(toy_config(tiny_model, toy_data))
    texts = prepared.cache.texts
    assert len(texts) == len(set(texts))
    needed = (
        {t for ex in prepared.dataset.train for t in (ex.anchor, ex.positive)}
        | set(prepared.val_task.queries)
        | set(prepared.val_task.corpus)
    )
    assert needed <= set(texts)
    assert isinstance(prepared.cache, TokenCache)


def test_cpu_pieces_encode_a_batch_like_the_whole_batch(tiny_model, toy_data):
    from transformers import AutoTokenizer

    from autoembed.training import CPU_PIECE, _embed

    config = toy_config(tiny_model, toy_data)
    texts = [" ".join(WORDS[(i * 7) % 16 : (i * 7) % 16 + 1 + i % 9] * (1 + i % 3)) + f" {i}" for i in range(80)]
    cache = TokenCache.build(AutoTokenizer.from_pretrained(str(tiny_model)), texts, 64)
    model = build_model(config)
    model.eval()  # no dropout, so the two encodings must agree
    idx = [cache.index[t] for t in texts]
    assert len(idx) > 2 * CPU_PIECE and len(set(cache.lengths(idx))) > 5
    pieces = _embed(model, cache, idx, torch.device("cpu"))
    whole = model(cache.features(idx, "cpu"))["sentence_embedding"]
    assert pieces.shape == whole.shape
    assert torch.allclose(pieces, whole, atol=1e-5)  # same rows, same order: only the padding differs
    # and the gradients through the pieces are the whole batch's
    direction = torch.randn(whole.shape, generator=torch.Generator().manual_seed(0))
    params = [p for p in model.parameters() if p.requires_grad]
    via_pieces = torch.autograd.grad((pieces * direction).sum(), params, allow_unused=True)
    via_whole = torch.autograd.grad((whole * direction).sum(), params, allow_unused=True)
    compared = 0
    for a, b in zip(via_pieces, via_whole, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-4)
            compared += 1
    assert compared > 10


def test_the_preparation_key_is_the_same_for_relative_and_absolute_paths(tiny_model, toy_data, monkeypatch):
    """The search prepares in the driver with the user's paths; Ray workers get them absolute: one key."""
    from autoembed.raytune import absolute_paths
    from autoembed.training import prepare_key

    monkeypatch.chdir(Path(toy_data["train"]).parent)
    config = toy_config(tiny_model, toy_data).replace(**{"data.train": "train.jsonl", "data.val": "val.jsonl", "data.corpus": "corpus.jsonl"})
    assert absolute_paths(config).data.train != config.data.train
    assert prepare_key(absolute_paths(config)) == prepare_key(config)
    assert prepare_key(config.replace(**{"data.val": "train.jsonl"})) != prepare_key(config)
