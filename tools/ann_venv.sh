#!/usr/bin/env bash
# Creates the Python peers of the index bench (benches/ann_peers.py: hnswlib, faiss and
# usearch, versions pinned) in the ignored folder .venv-ann/ and prints its python.
# Idempotent: an existing venv whose pinned peers import is kept.
#   bash tools/ann_venv.sh     # then: cargo bench --bench index (finds .venv-ann/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
V=${ANN_VENV:-.venv-ann}
PINS=(numpy==2.4.6 hnswlib==0.8.0 faiss-cpu==1.15.1 usearch==2.26.6)
if [ -x "$V/bin/python" ] && "$V/bin/python" -c "
import numpy, hnswlib, faiss, usearch, sys
sys.exit(0 if (numpy.__version__, faiss.__version__, usearch.__version__) == ('2.4.6', '1.15.1', '2.26.6') else 1)" 2>/dev/null; then
  echo "$V/bin/python"
  exit 0
fi
python3 -m venv "$V"
"$V/bin/pip" install --quiet --upgrade pip
"$V/bin/pip" install --quiet "${PINS[@]}"
"$V/bin/python" -c 'import hnswlib, faiss, numpy, usearch; print("faiss", faiss.__version__, "numpy", numpy.__version__, "usearch", usearch.__version__)' >&2
echo "$V/bin/python"
