#!/usr/bin/env bash
# The GPU session's one prepared check. Before it, on the development machine: bash scripts/gpu_prepare.sh
# A device command may run 10 minutes at most, and the whole check takes longer (about 3 min of tests, 8-10 of
# benchmark on an H200, by estimate), so a session runs it as two commands on the same warm machine:
#   run(command="GPU_CHECK_SKIP_BENCH=1 bash scripts/gpu_check.sh", carry=[".whl", ".gpudata"], timeout_s=420)
#   run(command="GPU_CHECK_SKIP_TESTS=1 bash scripts/gpu_check.sh", carry=[".whl", ".gpudata"], timeout_s=600)
# (GPU_CHECK_LAYOUTS=1x1.0,4x0.25 or GPU_CHECK_STEPS=100 shorten the second if time is short.)
# Installs the carried wheels into a folder on PYTHONPATH (the GPU machine has no registry), builds a random
# all-MiniLM-L6-v2-shaped model, runs the gpu-marked tests and benchmarks/gpu_slices.py. Logs and JSON go to $OUT.
#   GPU_CHECK_STEPS (200), GPU_CHECK_LAYOUTS (1x1.0,4x0.25,8x0.125), GPU_CHECK_SKIP_TESTS=1, GPU_CHECK_SKIP_BENCH=1
# --dry-run: the same steps on a CPU machine with what is installed (no wheels), tiny sizes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXX)}
mkdir -p "$OUT"
dry=0; [ "${1:-}" = "--dry-run" ] && dry=1
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
echo "== $(date -u +%FT%TZ) gpu_check on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), dry-run=$dry"
status=0
if [ "$dry" = 0 ]; then
  nvidia-smi || true
  if ls .whl/*.whl >/dev/null 2>&1; then
    SITE=/tmp/gpu_check_site  # kept while the machine stays warm: the second command skips the install
    if [ ! -f "$SITE/.installed" ]; then
      rm -rf "$SITE"
      python -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl || { echo "wheel install failed"; exit 1; }
      touch "$SITE/.installed"
    fi
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "no .whl/: run scripts/gpu_prepare.sh here first and carry .whl" ; export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python - <<'PY' || status=1
import torch, optuna, ray, autoembed
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("optuna", optuna.__version__, "ray", ray.__version__, "autoembed from", autoembed.__file__)
PY
data=.gpudata/icd10
if [ ! -f "$data/train.jsonl" ]; then
  echo "no $data/train.jsonl (scripts/gpu_prepare.sh builds it); using the benchmark's toy data"; data=""
fi
if [ "${GPU_CHECK_SKIP_TESTS:-0}" != 1 ]; then
  echo "== pytest -m gpu"
  if [ "$dry" = 0 ]; then
    timeout 900 python -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py -rs --junitxml="$OUT/pytest_gpu.xml" || status=1
  else
    timeout 900 python -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py -rs || status=1  # all skip without CUDA
  fi
fi
if [ "${GPU_CHECK_SKIP_BENCH:-0}" != 1 ]; then
  echo "== benchmarks/gpu_slices.py"
  if [ "$dry" = 0 ]; then
    model_args=()
    if [ -n "$data" ]; then
      python benchmarks/make_model.py "$data" "$OUT/minilm-random" > "$OUT/make_model.json" && model_args=(--model "$OUT/minilm-random" --data "$data")
      cat "$OUT/make_model.json"
    fi
    timeout 1200 python benchmarks/gpu_slices.py "${model_args[@]}" --steps "${GPU_CHECK_STEPS:-200}" \
      --layouts "${GPU_CHECK_LAYOUTS:-1x1.0,4x0.25,8x0.125}" --timeout 240 --out "$OUT/gpu_slices.json" || status=1
    rm -rf "$OUT/minilm-random"  # weights do not need to come back
  else
    timeout 1200 python benchmarks/gpu_slices.py --dry-run --layouts "${GPU_CHECK_LAYOUTS:-1x1.0,2x0.5}" \
      --out "$OUT/gpu_slices.json" || status=1
  fi
fi
echo "== done, status $status; files in $OUT"
exit $status
