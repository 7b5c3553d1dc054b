#!/usr/bin/env bash
# Catalog-size bench (not a test): what a catalog's row count costs `embed` and
# `catalog stats`, with the embedding work held fixed.
#
#   cargo build --release
#   bash tools/bench-embed-rows.sh [ROWS] [SHARDS]      # default: 1000000 100
#
# Writes a manifest of ROWS rows (unique ids, images and labels reused from a 10,000-item
# synthetic catalog, 64 px), then runs under GNU time: `catalog stats` on it, and
# `embed --shard 0/SHARDS --attrs colour` (the tiny untrained ASEN, batch 32), which
# reads every row but embeds only ~ROWS/SHARDS items. Peak RSS minus the same at a small
# ROWS is what a catalog row costs. Env: TAILOR (binary, default target/release/tailor),
# DIR (work directory, default /tmp/tailor-rows-bench; ~140 MB of manifest per 1M rows).
set -euo pipefail
cd "$(dirname "$0")/.."
TAILOR=${TAILOR:-$PWD/target/release/tailor}
DIR=${DIR:-/tmp/tailor-rows-bench}
ROWS=${1:-1000000}
SHARDS=${2:-100}
mkdir -p "$DIR"
echo "embed rows bench; load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
base="$DIR/catalog-10000"
[ -f "$base/manifest.csv" ] || "$TAILOR" synth -q --out "$base" --items 10000 --size 64 --seed 1 >/dev/null
model="$DIR/model-64.safetensors"
[ -f "$model" ] || "$TAILOR" model init --arch asen --backbone tiny --input-size 64 \
    --catalog "$base" --out "$model" --seed 1 >/dev/null
cat="$DIR/rows-$ROWS"
mkdir -p "$cat"
if [ ! -f "$cat/manifest.csv" ]; then
    python3 - "$base" "$cat" "$ROWS" <<'PY'
import os, shutil, sys
base, cat, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(os.path.join(base, "manifest.csv")).read().splitlines()
head, body = lines[0], lines[1:]
with open(os.path.join(cat, "manifest.csv"), "w") as out:
    out.write(head + "\n")
    for i in range(rows):
        cells = body[i % len(body)].split(",")
        cells[0] = f"row-{i:09d}"
        cells[1] = os.path.join(os.path.abspath(base), cells[1])
        out.write(",".join(cells) + "\n")
shutil.copy(os.path.join(base, "schema.json"), cat)
PY
fi
/usr/bin/time -f "catalog stats, $ROWS rows: %e s, peak RSS %M KB" -o "$DIR/stats-time.txt" \
    "$TAILOR" catalog stats --json "$cat" >/dev/null
cat "$DIR/stats-time.txt"
rm -rf "$DIR/set-$ROWS" "$DIR"/set-"$ROWS".*
/usr/bin/time -f "embed --shard 0/$SHARDS, $ROWS rows: %e s, peak RSS %M KB" -o "$DIR/embed-time.txt" \
    "$TAILOR" embed -q --json --model "$model" --catalog "$cat" --out "$DIR/set-$ROWS" \
    --shard "0/$SHARDS" --batch 32 --attrs colour >"$DIR/embed-summary.json"
cat "$DIR/embed-time.txt"
python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"  embedded {s['embedded']} items, {s['items_per_second']:.0f} items/s\")" "$DIR/embed-summary.json"
