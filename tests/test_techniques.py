"""The optional techniques of issue 15, each by its mechanism: the classification term, progressive unfreezing
and layer-wise learning rates, gradient reversal, PCA and fp16 export, query augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autoembed.adversarial import DomainHead, read_general_texts, reverse_gradient
from autoembed.augment import augment_query
from autoembed.classification import ClassHead, row_class
from autoembed.config import TrialConfig
from autoembed.data import Example, read_examples
from autoembed.errors import AutoembedError
from autoembed.evaluation import encode
from autoembed.export import fit_pca
from autoembed.model import build_model
from autoembed.progressive import UnfreezeSchedule
from autoembed.runs import train_to_folder
from autoembed.training import _optimizer, prepare, train

HEAD = {"architecture.output_dim": 16, "architecture.hidden_dropout": 0.0, "architecture.attention_dropout": 0.0}


def toy_config(tiny_model, toy_data, **dotted) -> TrialConfig:
    base = {
        "model": str(tiny_model),
        "data": {"train": str(toy_data["train"]), "val": str(toy_data["val"]), "corpus": str(toy_data["corpus"])},
        "training": {"batch_size": 8, "max_steps": 4, "backbone_lr": 1e-3, "head_lr": 1e-3, "warmup_ratio": 0.0, "device": "cpu"},
    }
    return TrialConfig.from_dict(base).replace(**dotted)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def moved(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_every_technique_is_off_by_default():
    config = TrialConfig(model="m")
    assert config.loss.classification_weight == 0.0 and config.loss.adversarial_weight == 0.0
    assert config.training.unfreeze_head_pairs == 0 and config.training.unfreeze_layer_pairs == 0
    assert config.training.layer_lr_decay == 1.0
    assert config.data.augment_delete_rate == 0.0 and config.data.augment_swap_rate == 0.0 and config.data.general_texts is None
    assert config.export.pca_variance is None and config.export.dtype == "fp32"


# 1. joint contrastive + classification loss


def test_a_row_class_is_its_label_else_its_doc_id_else_its_positive(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"query": "a", "positive": "b", "label": "J45"}, {"query": "c", "positive": "d", "label": 7}, {"query": "e", "positive": "f"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = read_examples(path)
    assert [ex.category for ex in examples] == ["J45", "7", None]
    assert [row_class(ex) for ex in examples] == ["label:J45", "label:7", "text:f"]
    assert row_class(Example("q", "p", doc_id="d3")) == "doc:d3"


def test_the_classification_term_moves_the_classifier_and_the_encoder_only(tiny_model, toy_data):
    config = toy_config(tiny_model, toy_data, **HEAD)
    model = build_model(config)
    prepared = prepare(config)
    rows = prepared.dataset.train[:8]
    head = ClassHead(prepared.dataset.train, 16, seed=0)
    domain = DomainHead(16, seed=0)
    feats = prepared.cache.features([prepared.cache.index[ex.anchor] for ex in rows])
    pos = prepared.cache.features([prepared.cache.index[ex.positive] for ex in rows])
    loss = head.loss(model(feats)["sentence_embedding"], model(pos)["sentence_embedding"], head.targets(rows, "cpu"), 0.1)
    loss.backward()
    assert head.linear.weight.grad.abs().sum() > 0
    assert model[0].model.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert model[2].linear.weight.grad.abs().sum() > 0  # the projection under the embedding
    assert all(p.grad is None for p in domain.parameters())


def test_training_with_the_classifier_saves_a_plain_model(tiny_model, toy_data, tmp_path):
    from sentence_transformers import SentenceTransformer

    config = toy_config(tiny_model, toy_data, **HEAD)
    plain = train(config)
    joint = train(config.replace(**{"loss.classification_weight": 1.0}))
    assert weights(plain.model).keys() == weights(joint.model).keys()  # the classifier is not part of the model
    assert moved(weights(plain.model), weights(joint.model))  # but it changed what the encoder learned
    train_to_folder(config.replace(**{"loss.classification_weight": 1.0}), tmp_path / "out")
    loaded = SentenceTransformer(str(tmp_path / "out"), device="cpu")
    assert loaded.encode(["fever"]).shape == (1, 16)


def test_labeled_pairs_have_no_class():
    with pytest.raises(AutoembedError, match="^loss.classification_weight: labeled pairs"):
        ClassHead([Example("a", "b", label=1.0)], 4, seed=0)


# 2. progressive fine-tuning


def test_frozen_layers_do_not_move_and_later_unfreeze(tiny_model, toy_data):
    # 8 rows a step: steps 1-2 train the head alone, step 3 opens the top layer, step 4 the layer under it;
    # the embeddings would open at 32 rows, after the run
    config = toy_config(tiny_model, toy_data, **HEAD, **{"training.unfreeze_head_pairs": 16, "training.unfreeze_layer_pairs": 8})
    start = weights(build_model(config))
    two = weights(train(config.replace(**{"training.max_steps": 2})).model)
    three = weights(train(config.replace(**{"training.max_steps": 3})).model)
    four = weights(train(config.replace(**{"training.max_steps": 4})).model)
    layer0, layer1 = "0.model.encoder.layer.0.attention.self.query.weight", "0.model.encoder.layer.1.attention.self.query.weight"
    embeddings = "0.model.embeddings.word_embeddings.weight"
    assert moved(start, two) == {"2.linear.weight", "2.linear.bias"}  # head only
    assert layer1 in moved(start, three) and layer0 not in moved(start, three)
    assert layer0 in moved(start, four) and embeddings not in moved(start, four)


def test_the_schedule_opens_one_unit_at_a_time_and_keeps_freeze_layers(tiny_model, toy_data):
    from autoembed.model import freeze_lowest_layers

    model = build_model(toy_config(tiny_model, toy_data))
    schedule = UnfreezeSchedule(model, head_pairs=10, layer_pairs=5)
    bert = model[0].model

    def trainable() -> tuple[bool, bool, bool]:
        return tuple(any(p.requires_grad for p in m.parameters()) for m in (bert.embeddings, *bert.encoder.layer))

    assert [(schedule.update(n), trainable()) for n in (0, 10, 15, 20)] == [
        (0, (False, False, False)),
        (1, (False, False, True)),
        (2, (False, True, True)),
        (3, (True, True, True)),
    ]
    model = build_model(toy_config(tiny_model, toy_data))
    freeze_lowest_layers(model, 1)
    UnfreezeSchedule(model, head_pairs=0, layer_pairs=0).update(10**6)
    assert not any(p.requires_grad for p in model[0].model.encoder.layer[0].parameters())


def test_layer_lr_decay_gives_lower_layers_lower_rates(tiny_model, toy_data):
    config = toy_config(tiny_model, toy_data, **{"training.backbone_lr": 1e-3, "training.layer_lr_decay": 0.5})
    model = build_model(config)
    lrs = {g["name"]: g["lr"] for g in _optimizer(model, config).param_groups}
    assert lrs["backbone.rest"] == lrs["backbone.layer1"] == pytest.approx(1e-3)
    assert lrs["backbone.layer0"] == pytest.approx(5e-4)
    assert lrs["backbone.embeddings_no_decay"] == pytest.approx(2.5e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: {names[id(p)] for p in g["params"]} for g in _optimizer(model, config).param_groups}
    assert all(".encoder.layer.0." in n for n in groups["backbone.layer0"])


# 3. domain-adversarial


def test_the_gradient_reversal_layer_flips_the_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(3, 4)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.5 * w)


def test_the_domain_head_learns_while_the_encoder_is_pushed_the_other_way():
    x = torch.randn(6, 4, requires_grad=True)
    head = DomainHead(4, seed=0)
    loss = head.loss(x[:3], x[3:], 1.0)
    loss.backward()
    plain = x.detach().clone().requires_grad_(True)
    torch.nn.functional.binary_cross_entropy_with_logits(
        head.mlp(plain).squeeze(-1), torch.tensor([1.0, 1, 1, 0, 0, 0]), reduction="none"
    ).mul(torch.tensor([1 / 6] * 6)).sum().backward()
    assert torch.allclose(x.grad, -plain.grad, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "text", "expect"),
    [
        ("general.txt", "asthma\n\nfever of the knee\n", ["asthma", "fever of the knee"]),
        ("general.jsonl", '{"text": "a"}\n{"text": "b"}\n', ["a", "b"]),
        ("general.jsonl", '{"body": "a"}\n', "general.jsonl:1: text: each row needs"),
        ("general.txt", "only\n", "needs at least 2 texts, got 1"),
    ],
)
def test_general_texts_are_read_from_lines_or_a_text_column(tmp_path, name, text, expect):
    path = tmp_path / name
    path.write_text(text)
    if isinstance(expect, list):
        assert read_general_texts(path) == expect
    else:
        with pytest.raises(AutoembedError, match=expect):
            read_general_texts(path)


def test_adversarial_training_needs_general_texts_and_runs_with_them(tiny_model, toy_data, tmp_path):
    config = toy_config(tiny_model, toy_data, **{"loss.adversarial_weight": 0.5})
    with pytest.raises(AutoembedError, match="^loss.adversarial_weight: needs data.general_texts"):
        train(config)
    general = tmp_path / "general.txt"
    general.write_text("\n".join(["the heart of the city", "a knee in the river", "lung of the earth"] * 4))
    result = train(config.replace(**{"data.general_texts": str(general)}))
    assert result.steps == 4 and moved(weights(build_model(config)), weights(result.model))


# 4. export


def test_pca_keeps_at_least_the_asked_variance_with_the_fewest_components():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 12, generator=gen) * torch.linspace(3.0, 0.1, 12)
    total = x.var(dim=0).sum()
    for asked in (0.5, 0.9, 0.95, 0.999):
        components, mean, kept = fit_pca(x, asked)
        projected = (x - mean) @ components.T
        assert kept >= asked
        assert projected.var(dim=0).sum() / total == pytest.approx(kept, rel=1e-4)
        if components.shape[0] > 1:
            assert projected[:, :-1].var(dim=0).sum() / total < asked  # one component fewer would not do
    assert torch.allclose(components @ components.T, torch.eye(components.shape[0]), atol=1e-5)


def test_fp16_embeddings_stay_within_1e_2_of_fp32(tiny_model, toy_data):
    config = toy_config(tiny_model, toy_data, **HEAD)
    model = train(config).model
    cache = prepare(config).cache
    idx = range(len(cache.texts))
    full = encode(model, cache, idx)
    half = encode(model.half(), cache, idx)
    assert (full - half).abs().max() < 1e-2


def test_export_saves_a_pca_and_fp16_folder_that_loads_anywhere(tiny_model, toy_data, tmp_path):
    from sentence_transformers import SentenceTransformer

    config = toy_config(tiny_model, toy_data, **{"export.pca_variance": 0.9, "export.dtype": "fp16"})
    result = train_to_folder(config, tmp_path / "out")
    record = json.loads(Path(tmp_path / "out" / "metrics.json").read_text())
    pca, fp16 = record["export"]["pca"], record["export"]["fp16"]
    assert pca["variance"] >= 0.9 and pca["input_dim"] == 32 and 1 <= pca["dim"] <= 32
    assert {"recall@10_before", "recall@10_after"} <= set(pca) and {"recall@10_before", "recall@10_after"} <= set(fp16)
    assert pca["recall@10_before"] == result.metrics["recall@10"] and fp16["recall@10_before"] == pca["recall@10_after"]
    loaded = SentenceTransformer(str(tmp_path / "out"), device="cpu")
    assert next(loaded.parameters()).dtype == torch.float16
    assert loaded.encode(["fever of the knee"], convert_to_tensor=True).shape == (1, pca["dim"])
    assert "export:\n  pca_variance: 0.9" in (tmp_path / "out" / "autoembed_config.yaml").read_text()


# 5. augmentation


def test_augmentation_is_seeded_and_only_deletes_or_swaps_words():
    text = "acute pain of the left upper arm with fever"
    same = augment_query(text, delete_rate=0.3, swap_rate=0.2, seed=1, step=5)
    assert same == augment_query(text, delete_rate=0.3, swap_rate=0.2, seed=1, step=5)
    per_step = {augment_query(text, delete_rate=0.3, swap_rate=0.2, seed=1, step=s) for s in range(20)}
    assert len(per_step) > 10
    assert augment_query(text, delete_rate=0.0, swap_rate=0.0, seed=1, step=5) == text
    swapped = augment_query(text, delete_rate=0.0, swap_rate=0.5, seed=1, step=5)
    assert sorted(swapped.split()) == sorted(text.split()) and swapped != text
    deleted = augment_query(text, delete_rate=0.5, swap_rate=0.0, seed=1, step=5).split()
    assert 1 <= len(deleted) < len(text.split()) and all(w in text.split() for w in deleted)
    assert augment_query("fever", delete_rate=0.9, swap_rate=0.9, seed=1, step=0) == "fever"


def test_training_with_augmentation_reproduces_and_differs_from_without(tiny_model, toy_data):
    config = toy_config(tiny_model, toy_data, **HEAD)
    augmented = config.replace(**{"data.augment_delete_rate": 0.3, "data.augment_swap_rate": 0.3})
    a, b, plain = train(augmented), train(augmented), train(config)
    assert not moved(weights(a.model), weights(b.model)) and a.history == b.history
    assert moved(weights(a.model), weights(plain.model))


def test_a_search_space_samples_every_technique_by_its_short_name(tmp_path):
    import optuna

    from autoembed.space import SearchSpace

    path = tmp_path / "space.yaml"
    path.write_text(
        "params:\n"
        "  classification_weight: {type: float, low: 0.1, high: 1.0}\n"
        "  adversarial_weight: {type: float, low: 0.01, high: 0.5, log: true}\n"
        "  unfreeze_head_pairs: {type: int, low: 0, high: 4096, step: 1024}\n"
        "  unfreeze_layer_pairs: {type: int, low: 0, high: 2048, step: 512}\n"
        "  layer_lr_decay: {type: float, low: 0.6, high: 1.0}\n"
        "  augment_delete_rate: {type: float, low: 0.0, high: 0.3}\n"
        "  augment_swap_rate: {type: float, low: 0.0, high: 0.3}\n"
        "fixed:\n"
        "  data.general_texts: general.txt\n"
        "  export.pca_variance: 0.95\n"
    )
    space = SearchSpace.from_yaml_file(path)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    config = space.sample(trial, TrialConfig.from_dict({"model": "m", "data": {"train": "t.jsonl"}}), hidden_size=32)
    for name, value in trial.params.items():
        assert config.get(space.params[name].target) == value
    assert config.export.pca_variance == 0.95 and config.data.general_texts == "general.txt"
