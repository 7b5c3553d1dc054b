#!/usr/bin/env bash
# Scale bench (not a test): one `tailor embed` of a synthetic catalog at two sizes, to
# show that throughput holds and memory does not grow with the catalog.
#
#   cargo build --release
#   bash tools/bench-embed-scale.sh [SIZES...]      # default: 10000 100000
#
# For each size: synthesise the catalog (64 px PNGs), then time `embed` with the tiny
# untrained ASEN at 64 px (all 7 attributes unless EXTRA says otherwise, batch 32) under
# GNU time. Prints items/s,
# the embed stages, peak RSS, and the peak of the anonymous part (heap, sampled). Env: TAILOR (binary, default target/release/tailor),
# DIR (work directory, default /tmp/tailor-embed-bench; needs ~1.2 GB per 100,000 items),
# EXTRA (more embed flags, e.g. `--attrs colour` to build one graph instead of seven).
set -euo pipefail
cd "$(dirname "$0")/.."
TAILOR=${TAILOR:-$PWD/target/release/tailor}
DIR=${DIR:-/tmp/tailor-embed-bench}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 100000)
mkdir -p "$DIR"
echo "embed scale bench; load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
for n in "${SIZES[@]}"; do
    cat="$DIR/catalog-$n"
    if [ ! -f "$cat/manifest.csv" ]; then
        "$TAILOR" synth -q --out "$cat" --items "$n" --size 64 --seed 1 >/dev/null
    fi
    model="$DIR/model-64.safetensors"
    [ -f "$model" ] || "$TAILOR" model init --arch asen --backbone tiny --input-size 64 \
        --catalog "$cat" --out "$model" --seed 1 >/dev/null
    rm -rf "$DIR/index-$n" "$DIR/index-$n.embed-work"
    /usr/bin/time -f "TIME %e s wall, peak RSS %M KB" -o "$DIR/time-$n.txt" \
        "$TAILOR" embed -q --json --model "$model" --catalog "$cat" --out "$DIR/index-$n" \
        --batch 32 ${EXTRA:-} >"$DIR/summary-$n.json" &
    timer=$!
    # Peak RSS counts the pages of mapped files too (page cache the kernel may drop);
    # sample the process's anonymous memory (heap) on its own, every 0.1 s.
    anon=0
    while kill -0 "$timer" 2>/dev/null; do
        child=$(pgrep -P "$timer" || true)
        if [ -n "$child" ]; then
            a=$(awk '/^RssAnon/ {print $2}' "/proc/$child/status" 2>/dev/null || true)
            [ -n "$a" ] && [ "$a" -gt "$anon" ] && anon=$a
        fi
        sleep 0.1
    done
    wait "$timer"
    python3 - "$n" "$DIR/summary-$n.json" "$DIR/time-$n.txt" "$anon" <<'EOF'
import json, sys
n, summary, timing = sys.argv[1], json.load(open(sys.argv[2])), open(sys.argv[3]).read().strip()
anon_kb = int(sys.argv[4])
st = summary["stage_seconds"]
rss_kb = int(timing.split("peak RSS ")[1].split()[0])
print(f"{int(n):>7} items: {summary['items_per_second']:.0f} items/s over {summary['seconds']:.1f} s "
      f"(decode {st['decode']:.1f}, preprocess {st['preprocess']:.1f}, model {st['model']:.1f}, "
      f"write {st['write']:.1f}, graph {st['graph']:.1f} s); peak RSS {rss_kb / 1024:.0f} MB "
      f"(anonymous memory at most {anon_kb / 1024:.0f} MB, sampled)")
EOF
done
