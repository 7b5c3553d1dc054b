#!/usr/bin/env bash
# Installs a CUDA 13.0 build toolchain (nvcc with its nvvm, headers, runtime libraries) from
# PyPI into .cuda/ (ignored by git) and prints the environment a `--features cuda` build
# needs; `eval "$(tools/cuda-toolkit.sh env)"` sets it.
#
#   tools/cuda-toolkit.sh install   pip packages into .cuda/pip, libcuda link stub into .cuda/stubs
#   tools/cuda-toolkit.sh env       the exports (PATH, CUDA_ROOT, LIBRARY_PATH, ...)
#   tools/cuda-toolkit.sh check     install, then `cargo check --features cuda` (target/cuda)
#   tools/cuda-toolkit.sh build     install, then `cargo build --release --features cuda`
#                                   (target/cuda/release/tailor), linked against the real
#                                   runtime libraries and a stub libcuda.so.1
#
# Versions are pinned (CUDA 13.0: the device machines' driver 580 runs PTX from nvcc 13.0,
# not newer; cudarc 0.19.10 knows CUDA up to 13.4, hence CUDARC_CUDA_VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/.cuda
pip_dir=$root/pip
stub_dir=$root/stubs

# One line per package: name==version. Changing a pin changes the marker and reinstalls.
packages=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.0.2.14
    nvidia-curand==10.4.0.35
)

cu=$pip_dir/nvidia/cu13

print_env() {
    cat <<ENV
export CUDA_ROOT=$cu
export CUDA_HOME=$cu
export PATH=$cu/bin:\$PATH
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH=$cu/lib:$stub_dir\${LIBRARY_PATH:+:\$LIBRARY_PATH}
export RUSTFLAGS="\${RUSTFLAGS:-} -L native=$cu/lib -L native=$stub_dir"
ENV
}

install() {
    local marker=$root/installed
    local want
    want=$(printf '%s\n' "${packages[@]}" "libcuda stub 2")
    if [[ -f $marker && $(cat "$marker") == "$want" && -x $cu/bin/nvcc ]]; then
        return 0
    fi
    rm -rf "$pip_dir" "$stub_dir"
    mkdir -p "$pip_dir" "$stub_dir"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$pip_dir" "${packages[@]}"
    # The wheels ship versioned libraries only (libcublas.so.13); the linker wants the
    # unversioned names.
    local lib base
    for lib in "$cu"/lib/lib*.so.*; do
        base=${lib##*/}
        base=${base%%.so.*}.so
        [[ -e $cu/lib/$base ]] || ln -s "${lib##*/}" "$cu/lib/$base"
    done
    make_libcuda_stub
    printf '%s\n' "$want" >"$marker"
}

# libcuda.so.1 is the driver's, not a pip package: link against a stub that has its soname
# and every cu* symbol the build references, so the binary loads the real driver library
# at run time. The symbol list comes from cudarc's driver bindings. Every stub function
# returns CUDA_ERROR_NO_DEVICE (100): a binary that loads the stub instead of a driver
# behaves as on a machine without a GPU (CI checks that message).
make_libcuda_stub() {
    local bindings
    bindings=$(find "${CARGO_HOME:-$HOME/.cargo}"/registry/src -path '*cudarc-0.19.10/src/driver/sys/mod.rs' | head -1)
    if [[ -z $bindings ]]; then
        cargo fetch --locked >/dev/null
        bindings=$(find "${CARGO_HOME:-$HOME/.cargo}"/registry/src -path '*cudarc-0.19.10/src/driver/sys/mod.rs' | head -1)
    fi
    grep -oE '^ +fn cu[A-Za-z0-9_]+\(' "$bindings" | sed -E 's/^ +fn //; s/\($//' | sort -u |
        awk '{print "int " $1 "(void) { return 100; }"}' >"$stub_dir/libcuda.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub_dir/libcuda.so" "$stub_dir/libcuda.c"
    ln -sf libcuda.so "$stub_dir/libcuda.so.1"
}

case ${1:-} in
install) install ;;
env) print_env ;;
check | build)
    install
    eval "$(print_env)"
    if [[ $1 == check ]]; then
        cargo check --locked --features cuda --all-targets --target-dir target/cuda
    else
        cargo build --locked --release --features cuda --target-dir target/cuda
    fi
    ;;
*)
    echo "usage: $0 install|env|check|build" >&2
    exit 2
    ;;
esac
