#!/usr/bin/env bash
# Creates the PyPI PyTorch the benches compare against (benches/forward_torch.py) in the
# ignored folder .venv-torch/ and prints its python. Idempotent: an existing venv whose
# torch imports is kept. PyPI's Linux wheel pulls the CUDA runtime packages too (several
# GB); the benches only use its CPU side.
#   bash tools/torch_venv.sh            # then: TAILOR_BENCH_PYTHON=.venv-torch/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
V=${TORCH_VENV:-.venv-torch}
if [ -x "$V/bin/python" ] && "$V/bin/python" -c "import torch, safetensors" 2>/dev/null; then
  echo "$V/bin/python"
  exit 0
fi
python3 -m venv "$V"
"$V/bin/pip" install --quiet --upgrade pip
"$V/bin/pip" install --quiet torch numpy safetensors
"$V/bin/python" -c 'import torch; print("torch", torch.__version__, "cpu capability", torch.backends.cpu.get_cpu_capability())' >&2
echo "$V/bin/python"
