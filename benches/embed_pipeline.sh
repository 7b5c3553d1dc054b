#!/usr/bin/env bash
# End-to-end figures of `tailor embed` on the synthetic catalog: items/s and seconds per
# stage, for the tiny model at 64 px and ResNet-50 ASEN at 224 px (untrained weights:
# speed does not depend on them). Prints one line per configuration and the share of
# wall time spent outside the model.
#   PRECISION=bf16 bash benches/embed_pipeline.sh [ITEMS_TINY] [ITEMS_R50]   (PRECISION: f32 default, bf16, auto)
set -euo pipefail
cd "$(dirname "$0")/.."
TINY_ITEMS=${1:-5000}
R50_ITEMS=${2:-160}
cargo build --release --quiet
T=${CARGO_TARGET_DIR:-target}/release/tailor
W=${BENCH_DIR:-$(mktemp -d)}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
run() { # name size items backbone batch
  local name=$1 size=$2 items=$3 backbone=$4 batch=$5
  $T synth -q --out "$W/$name-cat" --items "$items" --size "$size" --seed 1 --jpeg > /dev/null
  $T model init --arch asen --backbone "$backbone" --input-size "$size" --catalog "$W/$name-cat" --out "$W/$name.safetensors" > /dev/null
  rm -rf "$W/$name-index"
  $T embed -q --json --precision "${PRECISION:-f32}" --model "$W/$name.safetensors" --catalog "$W/$name-cat" --out "$W/$name-index" --batch "$batch" > "$W/$name.json"
  python3 - "$W/$name.json" "$name" "$size" "$batch" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); st = s["stage_seconds"]
name, size, batch = sys.argv[2], sys.argv[3], sys.argv[4]
wall = s["seconds"]; n = s["embedded"]
model_only = n / st["model"] if st["model"] > 0 else float("nan")
outside = st["decode"] + st["preprocess"] + st["write"]
print(f"{name}: {n} items, {size} px JPEG, batch {batch}, 7 attributes: {s['items_per_second']:.1f} items/s end to end "
      f"(model alone {model_only:.1f} items/s, ratio {s['items_per_second']/model_only:.2f}); "
      f"seconds: decode {st['decode']:.2f}, pre-process {st['preprocess']:.2f}, model {st['model']:.2f}, "
      f"write {st['write']:.2f}, graph {st['graph']:.2f}, wall {wall:.2f}; "
      f"decode+pre-process+write = {100*outside/wall:.1f}% of wall time")
PY
}
run tiny 64 "$TINY_ITEMS" tiny 32
run resnet50 224 "$R50_ITEMS" resnet50 16
