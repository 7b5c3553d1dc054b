#!/usr/bin/env bash
# tailor's main job on the bundled synthetic catalog, from a fresh machine:
# build, generate a catalog, check it. Every step is a plain `tailor` command.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-quickstart}
cargo build --release --quiet
T=target/release/tailor
mkdir -p "$OUT"
$T synth --out "$OUT/catalog" --items 2000 --size 64 --seed 1
$T catalog check "$OUT/catalog"
$T catalog stats "$OUT/catalog"
$T catalog sheet "$OUT/catalog" --out "$OUT/catalog-sheet.png"
