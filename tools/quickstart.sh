#!/usr/bin/env bash
# tailor's main job on the bundled synthetic catalog, from a fresh machine: build, generate
# a catalog, train a small ASEN, embed the catalog into a per-attribute index, search it,
# and evaluate it (MAP beside the random baseline). Every step is a plain `tailor` command.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-quickstart}
if [ -z "${TAILOR:-}" ]; then
  cargo build --release --quiet
  TAILOR=target/release/tailor
fi
T=$TAILOR
mkdir -p "$OUT"
set -x
# Seed 2: the bundled pretrained trunk was trained on the seed-1 catalog, so this one is new to it.
$T synth --out "$OUT/catalog" --items 2000 --size 64 --seed 2
$T catalog check "$OUT/catalog"
$T catalog sheet "$OUT/catalog" --out "$OUT/catalog-sheet.png"
# ASEN heads trained on the bundled pretrained tiny trunk (frozen, our stand-in for the
# papers' ImageNet backbone; see fixtures/trunks/README.md), from cached backbone maps.
$T train --catalog "$OUT/catalog" --arch asen --out "$OUT/asen.safetensors" \
  --backbone-init fixtures/trunks/tiny-64-pretrained.safetensors --freeze-backbone \
  --epochs 4 --triplets-per-epoch 4000 --lr 1e-3 --seed 1
$T embed --model "$OUT/asen.safetensors" --catalog "$OUT/catalog" --out "$OUT/index"
$T index info "$OUT/index"
$T search --index "$OUT/index" --attr neckline --item sf-000001 -k 5
$T search --index "$OUT/index" --attr sleeve_length=1 --attr colour=0.5 \
  --image "$OUT/catalog/SynthFashion/images/000002.png" -k 5
$T eval map --index "$OUT/index" --catalog "$OUT/catalog" --split test --ann --ef 64
# Everything above as one static HTML page: MAP table and chart, per-value breakdown,
# retrieval sheets with attention, attention panels, embedding maps.
$T report --index "$OUT/index" --catalog "$OUT/catalog" --out "$OUT/report"
set +x
echo "report: $(cd "$OUT/report" && pwd)/index.html"
