"""Mined hard negatives: what is mined, how training uses it, and that the search mines once for every trial."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import autoembed.training as training
from autoembed.data import read_corpus, read_examples, retrieval_task
from autoembed.evaluation import TokenCache, encode
from autoembed.mining import BaseEmbeddings, Mined, candidate_depth, mine_hard_negatives, mine_scored, mining_pool
from autoembed.model import load_encoder
from autoembed.search import SearchOptions, run_search
from autoembed.space import SearchSpace
from autoembed.training import prepare, train
from tests.test_training import toy_config, weights


def _mine(tiny_model, toy_data, depth):
    corpus = read_corpus(toy_data["corpus"])
    examples = read_examples(toy_data["train"], corpus)
    pool = mining_pool(examples, corpus)
    encoder = load_encoder(str(tiny_model))
    base = BaseEmbeddings(encoder, encoder.tokenizer, 32)
    return examples, pool, base, mine_hard_negatives(base, examples, pool, depth)


def test_mined_negatives_are_the_base_models_top_ranked_non_answers(tiny_model, toy_data):
    examples, pool, base, mined = _mine(tiny_model, toy_data, 3)
    assert set(mined) == {ex.anchor for ex in examples}
    pool_emb = F.normalize(base(pool), dim=-1)
    for query, negatives in mined.items():
        answers = {ex.positive for ex in examples if ex.anchor == query}
        assert len(negatives) == 3 and not answers & set(negatives) and len(set(negatives)) == 3
        q = F.normalize(base([query]), dim=-1)[0]
        scores = {t: float(pool_emb[i] @ q) for i, t in enumerate(pool)}
        others = sorted((s for t, s in scores.items() if t not in answers), reverse=True)
        # hardest first, and nothing the model ranks higher was skipped
        assert [scores[n] for n in negatives] == sorted((scores[n] for n in negatives), reverse=True)
        assert abs(scores[negatives[0]] - others[0]) < 1e-6 and abs(scores[negatives[-1]] - others[2]) < 1e-6
    assert _mine(tiny_model, toy_data, 3)[-1] == mined  # deterministic


def test_base_embeddings_encode_each_text_once(tiny_model):
    encoder = load_encoder(str(tiny_model))
    base = BaseEmbeddings(encoder, encoder.tokenizer, 32)
    first = base(["fever pain", "heart lung", "fever pain"])
    assert torch.equal(first[0], first[2]) and len(base.rows) == 2
    again = base(["kidney liver", "heart lung"])
    assert len(base.rows) == 3 and torch.equal(again[1], first[1])
    cache = TokenCache.build(encoder.tokenizer, ["kidney liver"], 32)
    assert torch.allclose(again[0], encode(encoder, cache, [0])[0], atol=1e-6)


def test_without_a_corpus_the_training_positives_are_the_pool(tiny_model, toy_data):
    examples = read_examples(toy_data["train"], read_corpus(toy_data["corpus"]))
    pool = mining_pool(examples, None)
    assert pool == list(dict.fromkeys(ex.positive for ex in examples))
    assert len(mining_pool(examples, read_corpus(toy_data["corpus"]))) > len(pool)


def test_training_adds_the_first_n_mined_negatives_to_every_row(tiny_model, toy_data, monkeypatch):
    seen = []
    real = training.compute_loss

    def spy(config, batch):
        seen.append(batch)
        return real(config, batch)

    monkeypatch.setattr(training, "compute_loss", spy)
    config = toy_config(tiny_model, toy_data, **{"data.hard_negatives": 2})
    prepared = prepare(config, mine=3)
    assert prepared.mined == 3 and all(len(v) == 3 for v in prepared.negatives.values())
    with_negatives = train(config, prepared=prepared)
    assert len(seen) == 4
    for batch in seen:
        assert batch.negatives.shape[0] == 2 * batch.anchors.shape[0]
        assert torch.equal(batch.neg_owner, torch.arange(batch.anchors.shape[0]).repeat_interleave(2))
        texts = prepared.cache.texts
        for row, owner in enumerate(batch.neg_owner.tolist()):
            anchor = texts[int(batch.anchor_ids[owner])]
            assert texts[int(batch.negative_ids[row])] in prepared.negatives[anchor][:2]
    seen.clear()
    without = train(config.replace(**{"data.hard_negatives": 0}), prepared=prepared)
    assert all(batch.negatives is None for batch in seen)
    a, b = weights(with_negatives.model), weights(without.model)
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the negatives changed the gradients
    # a shared preparation that mined too few is not reused: training mines what it needs, the same negatives
    again = weights(train(config, prepared=prepare(config.replace(**{"data.hard_negatives": 0}))).model)
    assert all(torch.equal(a[k], again[k]) for k in a)


def test_search_mines_once_as_deep_as_the_space_reaches(tiny_model, toy_data, tmp_path, monkeypatch):
    space = tmp_path / "space.yaml"
    space.write_text(
        "metric: mrr@10\nparams:\n  hard_negatives: {type: categorical, choices: [0, 1, 2]}\n"
        "fixed: {training.max_steps: 2, training.batch_size: 8, data.max_seq_length: 16}\n"
        "pruner: {type: none}\nsampler: {type: random}\n"
    )
    assert SearchSpace.from_yaml_file(space).largest("data.hard_negatives") == 2
    depths = []
    real = training.mine_scored

    def counting(*args, **kwargs):
        depths.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "mine_scored", counting)
    options = SearchOptions(
        study="m", model=str(tiny_model), train=str(toy_data["train"]), val=str(toy_data["val"]), corpus=str(toy_data["corpus"]),
        space=str(space), trials=4, storage=f"sqlite:///{tmp_path}/m.db", executor="inline", cpus_per_trial=1, seed=1,
    )
    result = run_search(options)
    assert result.counts["COMPLETE"] == 4
    assert depths == [2]


def test_hard_distractors_put_each_validation_querys_nearest_documents_in_the_sample(tiny_model, toy_data):
    corpus = read_corpus(toy_data["corpus"])
    val = read_examples(toy_data["val"], corpus)
    encoder = load_encoder(str(tiny_model))
    base = BaseEmbeddings(encoder, encoder.tokenizer, 32)
    plain = retrieval_task(val, corpus, max_queries=4, max_corpus=9, seed=0)
    hard = retrieval_task(val, corpus, max_queries=4, max_corpus=9, seed=0, distractors=1, nearest=base.nearest)
    assert plain.queries == hard.queries and len(hard.corpus) == len(plain.corpus) == 9
    answers = {corpus[ex.doc_id] for ex in val if ex.anchor in hard.queries}
    others = [t for t in corpus.values() if t not in answers]
    for row in base.nearest(hard.queries, others, 1):
        assert others[row[0]] in hard.corpus  # each query's nearest wrong document is in the sample
    # the rest is the seeded random fill; without distractors the sample is what it always was
    assert retrieval_task(val, corpus, max_queries=4, max_corpus=9, seed=0, distractors=0, nearest=base.nearest) == plain
    # nothing but the answers when they fill max_corpus
    tight = retrieval_task(val, corpus, max_queries=4, max_corpus=1, seed=0, distractors=3, nearest=base.nearest)
    assert set(tight.corpus) == answers


def test_prepare_samples_validation_with_hard_distractors(tiny_model, toy_data):
    config = toy_config(tiny_model, toy_data, **{"evaluation.max_queries": 4, "evaluation.max_corpus": 9, "evaluation.hard_distractors": 2})
    prepared = prepare(config)
    plain = prepare(config.replace(**{"evaluation.hard_distractors": 0}))
    assert prepared.val_task.queries == plain.val_task.queries
    assert prepared.val_task.corpus != plain.val_task.corpus and len(prepared.val_task.corpus) == 9
    assert set(prepared.val_task.corpus) <= set(prepared.cache.texts)
    assert prepared.key != plain.key


def test_positive_aware_filter_drops_candidates_near_or_above_the_positive():
    mined = Mined(
        negatives={"q": ("a", "b", "c", "d")},
        scores={"q": (0.95, 0.85, 0.7, 0.5)},
        positive={"q": 0.9},
    )
    assert mined.select(2) == {"q": ("a", "b")}  # off: the hardest, as before
    assert mined.select(2, max_score_ratio=0.9) == {"q": ("c", "d")}  # 0.95 and 0.85 > 0.81
    assert mined.select(2, max_score_ratio=0.95) == {"q": ("b", "c")}  # 0.85 < 0.855 stays
    assert mined.select(2, max_score_ratio=1.0) == {"q": ("b", "c")}  # only the one above the positive goes
    assert mined.select(3, margin=0.1) == {"q": ("c", "d")}  # within 0.1 of 0.9 goes, and fewer than 3 remain
    assert mined.select(1, max_score_ratio=1.0, margin=0.1) == {"q": ("c",)}  # both: the stricter wins
    assert mined.select(0, margin=0.1) == {}


def test_mined_scores_are_base_cosines_and_training_uses_only_what_passes(tiny_model, toy_data, monkeypatch):
    corpus = read_corpus(toy_data["corpus"])
    examples = read_examples(toy_data["train"], corpus)
    pool = mining_pool(examples, corpus)
    encoder = load_encoder(str(tiny_model))
    base = BaseEmbeddings(encoder, encoder.tokenizer, 32)
    mined = mine_scored(base, examples, pool, 1)
    query = examples[0].anchor
    assert len(mined.negatives[query]) == candidate_depth(1)
    q = F.normalize(base([query]), dim=-1)[0]
    for text, score in zip(mined.negatives[query], mined.scores[query], strict=True):
        assert abs(float(F.normalize(base([text]), dim=-1)[0] @ q) - score) < 1e-5
    best_positive = max(float(F.normalize(base([ex.positive]), dim=-1)[0] @ q) for ex in examples if ex.anchor == query)
    assert abs(mined.positive[query] - best_positive) < 1e-5

    seen = []
    real = training.compute_loss
    monkeypatch.setattr(training, "compute_loss", lambda config, batch: seen.append(batch) or real(config, batch))
    ratio = 0.98  # on this random tiny model the hardest candidate scores 0.97 to 1.02 x the positive
    config = toy_config(tiny_model, toy_data, **{"data.hard_negatives": 1, "data.mining_max_score_ratio": ratio})
    prepared = prepare(config)
    train(config, prepared=prepared)
    texts, m = prepared.cache.texts, prepared.mining
    used = 0
    for batch in seen:
        if batch.neg_owner is None:  # every row's candidates were filtered out
            continue
        for row, owner in enumerate(batch.neg_owner.tolist()):
            anchor, negative = texts[int(batch.anchor_ids[owner])], texts[int(batch.negative_ids[row])]
            score = m.scores[anchor][m.negatives[anchor].index(negative)]
            assert score <= ratio * m.positive[anchor] + 1e-9
            used += 1
    dropped = sum(len(prepared.mining.negatives[ex.anchor][:1]) - len(m.select(1, max_score_ratio=ratio)[ex.anchor]) for ex in examples)
    assert used > 0 and dropped > 0  # the filter both kept and dropped some on this data
