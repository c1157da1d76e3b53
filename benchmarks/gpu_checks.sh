#!/usr/bin/env bash
# The checks that need a GPU, as one prepared run for a short device session (CI has no GPU).
#
#   benchmarks/gpu_checks.sh OUT_DIR [more `benchmarks.speed cifar` flags for step 3]
#
# In order of value, each bounded by its own timeout so that one slow part cannot eat the others'
# time (at most 9.5 minutes in all, under the device tool's 10 minutes per command):
#   1. the CUDA-only tests (skipped everywhere else), with their skip reasons;
#   2. where one env's step goes on the GPU: `benchmarks.speed cifar --profile` (kernels, phases),
#      channels_last off and on, cudnn.benchmark off and on; traces under OUT_DIR/traces;
#   3. the aggregate speed of 4 envs on full CIFAR-10 epochs (issue: >= 10 host epochs/s):
#      processes against threads, channels_last off and on, cudnn.benchmark on.
# Random CIFAR-format images of the real size (speed does not depend on the pixels). Everything
# is printed and saved under OUT_DIR (cifar_profile.jsonl, cifar_speed.jsonl, *.txt).
set -u
out=${1:?usage: benchmarks/gpu_checks.sh OUT_DIR [more benchmarks.speed cifar flags]}
shift
mkdir -p "$out"
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=.
py=${PYTHON:-python}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  git rev-parse --short HEAD 2>/dev/null; } 2>&1 | tee "$out/machine.txt"

cuda_tests=(tests/env/test_env_device.py tests/nn/test_isolation_violations.py)
for f in tests/nn/test_cuda_graphs.py; do [ -f "$f" ] && cuda_tests+=("$f"); done
if "$py" -c "import stable_baselines3" 2>/dev/null; then cuda_tests+=(tests/agents/test_vec_env.py); fi
echo "== 1. CUDA tests: ${cuda_tests[*]}"
timeout 150 "$py" -m pytest -q -rs -p no:cacheprovider "${cuda_tests[@]}" 2>&1 | tail -25 \
  | tee "$out/cuda_tests.txt"

echo "== 2. profile of one env's step"
timeout 120 "$py" -m benchmarks.speed cifar --fake-data --device cuda --batch-size 512 \
  --policy grow --steps 3 --profile --channels-last off,on --cudnn-benchmark off,on \
  --trace-dir "$out/traces" --out "$out" 2>&1 | tee "$out/profile.txt"

echo "== 3. speed of 4 envs"
timeout 300 "$py" -m benchmarks.speed cifar --fake-data --device cuda --envs 4 \
  --batch-size 512 --policy wait,grow --layout processes,threads --channels-last off,on \
  --cudnn-benchmark on --steps 6 --out "$out" "$@" 2>&1 | tee "$out/speed.txt"
