#!/usr/bin/env bash
# The CUDA device check, in two halves.
#
#   tools/device-check.sh pack       (here, with Rust) build the `--features cuda` test
#                                    binary and `tailor` (tools/cuda-toolkit.sh), strip and
#                                    gzip them into target/device-pack/ (carried to the
#                                    device machine with the working tree and fixtures/)
#   tools/device-check.sh run        (on the GPU machine: no Rust, no network) run the
#                                    device tests, then measure tailor beside PyTorch;
#                                    results in $OUT (or target/device-check/)
#   tools/device-check.sh --dry-run  check this script's own logic anywhere: the pack, the
#                                    commands it would run, the report from sample lines
#
# `run` expects the NVIDIA driver, python3 with torch (for the PyTorch side) and the CUDA
# libraries the binaries link (libcublas, libcublasLt, libcurand, libnvrtc, libcudart: the
# nvidia-* pip packages; when LD_LIBRARY_PATH lacks them it looks for them next to torch).
# Budget: the whole `run` is meant to fit in one 10-minute call; every step has a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
pack=$repo/target/device-pack
out=${OUT:-$repo/target/device-check}

log() { printf '[device-check %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

do_pack() {
    tools/cuda-toolkit.sh install
    eval "$(tools/cuda-toolkit.sh env)"
    local cargo_args=(--locked --release --features cuda --target-dir target/cuda)
    cargo build "${cargo_args[@]}" --bin tailor
    local test_bin
    test_bin=$(cargo test "${cargo_args[@]}" --test device --no-run --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*"' | grep '/device-' | tail -1 | cut -d'"' -f4)
    [[ -n $test_bin ]] || { log "no device test binary"; exit 1; }
    rm -rf "$pack"
    mkdir -p "$pack"
    strip -o "$pack/tailor" target/cuda/release/tailor
    strip -o "$pack/device-tests" "$test_bin"
    gzip -9 "$pack/tailor" "$pack/device-tests"
    ls -l "$pack" >&2
    no_gpu_smoke_test target/cuda/release/tailor
    log "carry target/device-pack (with the working tree) and run: tools/device-check.sh run"
}

# The CUDA build on a machine without a GPU (the libcuda stub answers CUDA_ERROR_NO_DEVICE
# to everything): a clear error with exit status 2, no panic.
no_gpu_smoke_test() {
    local bin=$1 err rc=0
    err=$(LD_LIBRARY_PATH=$repo/.cuda/stubs:$repo/.cuda/pip/nvidia/cu13/lib \
        "$bin" model init --arch asen --backbone tiny --catalog fixtures/synth-small \
        --out "$(mktemp -d)/m.safetensors" --device cuda:1 2>&1) || rc=$?
    if [[ $rc != 2 || $err != *"CUDA cannot start"* || $err == *panicked* ]]; then
        log "no-GPU smoke test failed (exit $rc): $err"
        exit 1
    fi
    log "no-GPU smoke test: $err"
}

# Adds the CUDA libraries of the pip packages (next to torch) to LD_LIBRARY_PATH when the
# loader cannot already find libcublas.
find_libraries() {
    if ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.13' ||
        [[ ${LD_LIBRARY_PATH:-} == *cublas* || ${LD_LIBRARY_PATH:-} == *cu13* ]]; then
        return 0
    fi
    local dirs
    dirs=$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
libs = set()
for r in roots:
    for so in glob.glob(os.path.join(r, "nvidia", "**", "lib*.so*"), recursive=True):
        libs.add(os.path.dirname(so))
print(":".join(sorted(libs)))
PY
)
    if [[ -n $dirs ]]; then
        export LD_LIBRARY_PATH=$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        log "LD_LIBRARY_PATH += $dirs"
    fi
}

# Turns the JSON lines of both sides into a markdown table with tailor/PyTorch ratios.
report() {
    python3 - "$@" <<'PY'
import json, sys
rows = []
for path in sys.argv[1:]:
    try:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
def best(what, batch, pred):
    c = [r for r in rows if r.get("impl") == "pytorch" and r.get("what") == what
         and r.get("batch") == batch and pred(r["mode"])]
    key = "images_per_s" if what == "embed" else "triplets_per_s"
    return max(c, key=lambda r: r[key]) if c else None
print("| what | impl | mode | batch | rate | vs PyTorch best (same precision) |")
print("|---|---|---|---|---|---|")
for r in rows:
    if r.get("what") not in ("embed", "train"):
        continue
    key = "images_per_s" if r["what"] == "embed" else "triplets_per_s"
    unit = "images/s" if r["what"] == "embed" else "triplets/s"
    ratio = ""
    if r["impl"] == "tailor":
        reduced = r["mode"].upper() != "F32"
        ref = best(r["what"], r["batch"], lambda m: m.startswith("fp32") != reduced)
        if ref:
            ratio = "%.2fx (%s)" % (r[key] / ref[key], ref["mode"])
    print("| %s | %s | %s | %d | %.1f %s | %s |" % (r["what"], r["impl"], r["mode"], r["batch"], r[key], unit, ratio))
others = [r for r in rows if r.get("what") not in ("embed", "train")]
for r in others:
    print("\n" + json.dumps(r))
PY
}

# Runs a step under a timeout, its output into $out/NAME.log; a failure is recorded and
# the next step still runs (one device call must bring back everything it can).
failures=0
step() {
    local name=$1 limit=$2
    shift 2
    log "$name (timeout ${limit}s): $*"
    if [[ ${dry_run:-0} == 1 ]]; then
        return 0
    fi
    local rc=0
    timeout "$limit" "$@" >"$out/$name.log" 2>&1 || rc=$?
    tail -n 40 "$out/$name.log" >&2
    if ((rc != 0)); then
        log "$name FAILED (exit $rc)"
        failures=$((failures + 1))
    fi
}

do_run() {
    mkdir -p "$out"
    local bin=$out/bin
    mkdir -p "$bin"
    for f in tailor device-tests; do
        [[ -f $pack/$f.gz ]] || { log "missing $pack/$f.gz: run 'tools/device-check.sh pack' first"; exit 1; }
        if [[ ${dry_run:-0} == 1 ]]; then
            gzip -t "$pack/$f.gz"
        else
            gzip -dc "$pack/$f.gz" >"$bin/$f"
            chmod +x "$bin/$f"
        fi
    done
    if [[ ${dry_run:-0} != 1 ]]; then
        find_libraries
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/gpu.txt" 2>&1 || true
        cat "$out/gpu.txt" >&2
        if ldd "$bin/device-tests" | grep 'not found' >&2; then
            log "libraries missing (above): set LD_LIBRARY_PATH to the nvidia-* packages' lib folders"
            exit 1
        fi
    fi
    export TAILOR_ROOT=$repo TAILOR_BIN=$bin/tailor TAILOR_DEVICE=${TAILOR_DEVICE:-cuda}
    export TAILOR_DEVICE_BATCHES=${TAILOR_DEVICE_BATCHES:-64,256}
    export TAILOR_DEVICE_ITERS=${TAILOR_DEVICE_ITERS:-10} TAILOR_TRAIN_STEPS=${TAILOR_TRAIN_STEPS:-10}
    # Checks first (parity, training, embed), then the measurements.
    step tests 180 "$bin/device-tests" --ignored --test-threads=1 --nocapture \
        gpu_parity gpu_training gpu_embed
    step tailor-bench 180 "$bin/device-tests" --ignored --exact gpu_throughput --nocapture
    step torch-bench 180 python3 tools/torch_device_bench.py
    if [[ ${dry_run:-0} == 1 ]]; then
        # Canned inputs that test the report's arithmetic; they are not measurements.
        log "DRY RUN: the table below is made from canned numbers, not measurements"
        printf '%s\n' \
            '{"impl":"tailor","what":"embed","mode":"F32","batch":64,"images_per_s":100.0}' \
            '{"impl":"tailor","what":"embed","mode":"BF16","batch":64,"images_per_s":300.0}' \
            '{"impl":"tailor","what":"train","mode":"F32","batch":32,"triplets_per_s":20.0}' \
            >"$out/tailor-bench.log"
        printf '%s\n' \
            '{"impl":"pytorch","what":"embed","mode":"fp32","batch":64,"images_per_s":80.0}' \
            '{"impl":"pytorch","what":"embed","mode":"fp32-channels-last","batch":64,"images_per_s":125.0}' \
            '{"impl":"pytorch","what":"embed","mode":"bf16-autocast-channels-last","batch":64,"images_per_s":400.0}' \
            '{"impl":"pytorch","what":"train","mode":"fp32-channels-last","batch":32,"triplets_per_s":25.0}' \
            >"$out/torch-bench.log"
    fi
    report "$out/tests.log" "$out/tailor-bench.log" "$out/torch-bench.log" | tee "$out/report.md" >&2
    log "done: $failures failed step(s); logs and report.md in $out"
    return "$((failures > 0))"
}

case ${1:-} in
pack) do_pack ;;
run) do_run ;;
--dry-run)
    dry_run=1
    out=$(mktemp -d)
    if [[ ! -d $pack ]]; then
        # A stand-in pack, so the dry run checks the run logic without a CUDA build.
        pack=$out/pack
        mkdir -p "$pack"
        printf 'stand-in\n' | gzip >"$pack/tailor.gz"
        printf 'stand-in\n' | gzip >"$pack/device-tests.gz"
    fi
    python3 -c "import ast, sys; ast.parse(open(sys.argv[1]).read())" tools/torch_device_bench.py
    do_run
    grep -q '0.80x (fp32-channels-last)' "$out/report.md"
    grep -q '0.75x (bf16-autocast-channels-last)' "$out/report.md"
    log "dry run OK"
    ;;
*)
    echo "usage: $0 pack|run|--dry-run" >&2
    exit 2
    ;;
esac
