#!/usr/bin/env bash
# The checks that need a GPU, as one prepared run for a short device session (CI has no GPU).
#
#   benchmarks/gpu_checks.sh OUT_DIR [more `benchmarks.speed cifar` flags for step 3]
#
# In order of value, each bounded by its own timeout so that one slow part cannot eat the others'
# time (at most 8 minutes in all, under the device tool's 10 minutes per command):
#   1. the CUDA-only tests (skipped everywhere else), with their skip reasons;
#   2. the batched engine on digits: K = 1, 64, 1024 against one env (issue: K = 1024 >= 5,000
#      env-steps/s), WAIT and growing, the step's breakdown at K = 64, CUDA bytes per lane;
#      then K = 64, 1024 again with CUDA graphs on (`--vec-kwarg cuda_graphs=true`, off by
#      default until this has run);
#   3. the batched engine on full CIFAR-10 epochs, K = 4 and 8 (issue: >= 10 host epochs/s
#      growing);
#   4. where one env's step goes on the GPU: `benchmarks.speed cifar --profile` (kernels, phases),
#      channels_last off and on, cudnn.benchmark off and on; traces under OUT_DIR/traces;
#   5. the aggregate speed of 4 separate envs on full CIFAR-10 epochs: processes against threads,
#      channels_last off and on, cudnn.benchmark on.
# Random CIFAR-format images of the real size (speed does not depend on the pixels). Everything
# is printed and saved under OUT_DIR (vector*.jsonl, cifar_profile.jsonl, cifar_speed.jsonl, *.txt).
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

cuda_tests=(tests/env/test_env_device.py tests/nn/test_isolation_violations.py
            tests/nn/test_static_shapes.py)
if "$py" -c "import stable_baselines3" 2>/dev/null; then cuda_tests+=(tests/agents/test_vec_env.py); fi
echo "== 1. CUDA tests: ${cuda_tests[*]}"
timeout 80 "$py" -m pytest -q -rs -p no:cacheprovider "${cuda_tests[@]}" 2>&1 | tail -25 \
  | tee "$out/cuda_tests.txt"

echo "== 2. the batched engine on digits"
timeout 100 "$py" -m benchmarks.speed vector --ks 1,64,1024 --repeats 2 --steps 6 \
  --breakdown-ks 64 --torch-threads 1 --env-kwarg device=cuda --out "$out" 2>&1 \
  | tee "$out/vector_digits.txt"
timeout 80 "$py" -m benchmarks.speed vector --ks 64,1024 --repeats 2 --steps 6 \
  --breakdown-ks 64 --torch-threads 1 --env-kwarg device=cuda --vec-kwarg cuda_graphs=true \
  --out "$out/graphs" 2>&1 | tee "$out/vector_digits_graphs.txt"

echo "== 3. the batched engine on CIFAR-10"
fake=$(mktemp -d)
root=$("$py" -c "from esper_env.nn.cifar import write_cifar10_folder as w; \
print(w('$fake', train_per_batch=10_000, n_test=10_000, seed=0))")
timeout 90 "$py" -m benchmarks.speed vector --tasks cifar10 --ks 4,8 --repeats 1 --steps 3 \
  --breakdown-ks 8 --env-kwarg device=cuda --env-kwarg "data_root=$root" \
  --out "$out/cifar_vector" 2>&1 | tee "$out/vector_cifar.txt"
rm -rf "$fake"

echo "== 4. profile of one env's step"
timeout 70 "$py" -m benchmarks.speed cifar --fake-data --device cuda --batch-size 512 \
  --policy grow --steps 3 --profile --channels-last off,on --cudnn-benchmark off,on \
  --trace-dir "$out/traces" --out "$out" 2>&1 | tee "$out/profile.txt"

echo "== 5. speed of 4 envs"
timeout 60 "$py" -m benchmarks.speed cifar --fake-data --device cuda --envs 4 \
  --batch-size 512 --policy wait,grow --layout processes,threads --channels-last off,on \
  --cudnn-benchmark on --steps 4 --out "$out" "$@" 2>&1 | tee "$out/speed.txt"
