#!/usr/bin/env bash
# Creates the Python peers of the index bench (benches/ann_peers.py: hnswlib and faiss)
# in the ignored folder .venv-ann/ and prints its python. Idempotent: an existing venv
# whose peers import is kept.
#   bash tools/ann_venv.sh     # then: cargo bench --bench index (finds .venv-ann/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
V=${ANN_VENV:-.venv-ann}
if [ -x "$V/bin/python" ] && "$V/bin/python" -c "import numpy, hnswlib, faiss" 2>/dev/null; then
  echo "$V/bin/python"
  exit 0
fi
python3 -m venv "$V"
"$V/bin/pip" install --quiet --upgrade pip
"$V/bin/pip" install --quiet numpy hnswlib faiss-cpu
"$V/bin/python" -c 'import hnswlib, faiss, numpy; print("faiss", faiss.__version__, "numpy", numpy.__version__)' >&2
echo "$V/bin/python"
