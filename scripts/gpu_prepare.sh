#!/usr/bin/env bash
# Run on the development machine before a GPU session: what scripts/gpu_check.sh needs and the GPU machine lacks
# (it has torch, transformers, sentence-transformers, typer, rich, pyyaml, pandas, pyarrow, numpy; no registry).
#   .whl/       wheels for CPython 3.12 x86-64, the versions installed here (ray without its Java jars: 64 MiB limit)
#   .gpudata/   the ICD-10 example's data (simple-icd-10-cm is not on the GPU machine)
# Then, in the GPU session: run(command="bash scripts/gpu_check.sh", carry=[".whl", ".gpudata"]).
set -euo pipefail
cd "$(dirname "$0")/.."
packages="optuna alembic mako colorlog sqlalchemy ray tensorboardx jsonschema jsonschema-specifications referencing
rpds-py pydantic pydantic-core annotated-types typing-extensions typing-inspection"
pins=$(python - $packages <<'PY'
import sys
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in sys.argv[1:]))
PY
)
rm -rf .whl && mkdir -p .whl/raw
# shellcheck disable=SC2086
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl/raw $pins
for wheel in .whl/raw/*.whl; do
  case "$(basename "$wheel")" in
    ray-*) python benchmarks/repack_ray.py "$wheel" ".whl/$(basename "$wheel")" ;;
    *) mv "$wheel" .whl/ ;;
  esac
done
rm -rf .whl/raw
rm -rf .gpudata
python -c "from autoembed.examples.icd10 import build_icd10; build_icd10('.gpudata/icd10')"
# the benchmark reads train, val and corpus; the rest would only eat into the 64 MiB
find .gpudata/icd10 -type f ! -name train.jsonl ! -name val.jsonl ! -name corpus.jsonl -delete
du -sh .whl .gpudata
du -cb .whl/* .gpudata/icd10/* | tail -1  # with the tracked tree (under 1 MB), must stay under 64 MiB
