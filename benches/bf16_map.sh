#!/usr/bin/env bash
# bf16 against f32 end to end (issue 15): trains a tiny ASEN as tools/quickstart.sh does,
# embeds the synthetic catalog with --precision f32 and bf16, prints each test MAP and the
# difference in points, then runs the accuracy bench (cosines, recall@10 of bf16 queries in
# an f32 index) with the trained model. Needs a CPU with AVX512-BF16.
#   bash benches/bf16_map.sh [ITEMS]
set -euo pipefail
cd "$(dirname "$0")/.."
ITEMS=${1:-2000}
cargo build --release --quiet
T=${CARGO_TARGET_DIR:-target}/release/tailor
W=${BENCH_DIR:-$(mktemp -d)}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
$T synth -q --out "$W/catalog" --items "$ITEMS" --size 64 --seed 2 > /dev/null
$T train -q --catalog "$W/catalog" --arch asen --out "$W/asen.safetensors" \
  --backbone-init fixtures/trunks/tiny-64-pretrained.safetensors --freeze-backbone \
  --epochs 4 --triplets-per-epoch 4000 --lr 1e-3 --seed 1 > /dev/null
for p in f32 bf16; do
  rm -rf "$W/index-$p"
  $T embed -q --json --precision $p --model "$W/asen.safetensors" --catalog "$W/catalog" --out "$W/index-$p" > "$W/embed-$p.json"
  $T eval map -q --json --index "$W/index-$p" --catalog "$W/catalog" --split test > "$W/map-$p.json"
done
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
m = {p: json.load(open(f"{w}/map-{p}.json")) for p in ("f32", "bf16")}
for p in ("f32", "bf16"):
    e = json.load(open(f"{w}/embed-{p}.json"))
    per = ", ".join(f"{a['name']} {100*a['map']:.2f}" for a in m[p]["attributes"])
    print(f"{p:>4}: test MAP {100*m[p]['map']:.3f} (random {100*m[p]['random_map']:.2f}); {per}; "
          f"embed {e['items_per_second']:.1f} items/s")
print(f"bf16 - f32 = {100*(m['bf16']['map'] - m['f32']['map']):+.3f} MAP points")
PY
TAILOR_ACC_TINY_MODEL="$W/asen.safetensors" cargo bench --quiet --bench bf16_accuracy
