#!/usr/bin/env bash
# userspace/check.sh [HEADER_DIR]
#
# Checks the snp-certs workspace: rustfmt, clippy -D warnings, cargo test (unit,
# property, CLI, store and exit-handler tests), the concurrency test (readers vs
# SIGKILLed updaters, with its statistics), short fuzz runs of the table parser
# and of the exit handler, and the serve benchmark (ratios printed, never
# asserted). With HEADER_DIR (a `make headers_install` output directory of the
# patched series), also checks that the checked-in bindings (kvm_run with both
# certificate exits, KVM_EXIT_VMGEXIT and mainline 7.0's KVM_EXIT_SNP_REQ_CERTS,
# and the 7.0 opt-in's command and attribute) match what bindgen generates from it;
# without it, the same check against scripts/dev-headers.sh's stand-in (when
# bindgen and Debian's linux-source-6.12 are installed).
#
# Knobs: FUZZ_SECONDS (parser, default 30; 0 skips fuzzing), FUZZ_SECONDS_HANDLER
# (exit handler, default 15), SNP_CERTS_STRESS_ITERS
# (default 300 updates), BENCH_ROUNDS / BENCH_ITERS (default 20 x 5000),
# SKIP_FUZZ_INSTALL=1 (do not try to install cargo-fuzz).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
header_dir="${1:-}"
if [ $# -gt 1 ]; then
    echo "usage: $0 [HEADER_DIR]" >&2
    exit 2
fi
if [ -n "$header_dir" ]; then
    # Resolve relative to the caller's directory, before changing directory.
    header_dir="$(cd "$header_dir" && pwd)"
fi
cd "$here"

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
start=$(date +%s)
step() { printf '\n== [%ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

step "cargo fmt --check"
cargo fmt --all --check
(cd snp-certs/fuzz && cargo fmt --check)

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test (concurrency test runs separately below)"
cargo test --locked -- --skip store_survives_sigkilled_updaters

step "concurrency test: reader processes vs SIGKILLed updater processes"
cargo test --locked --test concurrency -- --nocapture store_survives_sigkilled_updaters

if [ -n "$header_dir" ]; then
    step "bindings check against $header_dir"
    ./setup.sh --with-bindgen >/dev/null # no-op when bindgen 0.73.2 is installed
    scripts/regen-bindings.sh --check "$header_dir"
else
    # No series headers given: check against the development stand-in
    # (scripts/dev-headers.sh, the series' uapi hunks on Debian's 6.12 source),
    # when bindgen and the source are there.
    step "bindings check against scripts/dev-headers.sh (no HEADER_DIR given)"
    bindgen_bin="$(command -v bindgen || echo "${CARGO_HOME:-$HOME/.cargo}/bin/bindgen")"
    if [ ! -x "$bindgen_bin" ]; then
        echo "SKIP bindings: bindgen is not installed (setup.sh --with-bindgen)"
    elif [ ! -f /usr/src/linux-source-6.12.tar.xz ]; then
        echo "SKIP bindings: /usr/src/linux-source-6.12.tar.xz missing (apt-get install linux-source-6.12)"
    else
        dev_hdr="$(mktemp -d)"
        scripts/dev-headers.sh "$dev_hdr"
        rc=0
        scripts/regen-bindings.sh --check "$dev_hdr" || rc=$?
        rm -rf "$dev_hdr"
        [ "$rc" = 0 ] || exit 1
    fi
fi

step "fuzz: table parser (${FUZZ_SECONDS}s), exit handler (${FUZZ_SECONDS_HANDLER:-15}s)"
fuzz_ok=1
if [ "$FUZZ_SECONDS" = 0 ]; then
    echo "SKIP fuzz: FUZZ_SECONDS=0"
    fuzz_ok=0
elif [ "${SKIP_FUZZ_INSTALL:-0}" != 1 ] && ! ./setup.sh; then
    echo "SKIP fuzz: cargo-fuzz could not be installed (see setup.sh output above)"
    fuzz_ok=0
elif ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz" ]; then
    echo "SKIP fuzz: cargo-fuzz is not installed"
    fuzz_ok=0
fi
if [ "$fuzz_ok" = 1 ]; then
    cd "$here/snp-certs/fuzz"
    # cargo-fuzz needs nightly flags (-Zsanitizer); RUSTC_BOOTSTRAP lets the
    # stable toolchain accept them.
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz build -O; then
        echo "SKIP fuzz: the fuzz targets do not build with this toolchain (stable + RUSTC_BOOTSTRAP=1)"
    else
        tmp_fuzz="$(mktemp -d)"
        trap 'rm -rf "$tmp_fuzz"' EXIT
        fuzz_one() { # target seconds
            local target="$1" secs="$2" corpus="$tmp_fuzz/$1" log="$tmp_fuzz/$1.log"
            mkdir -p "$corpus"
            echo "-- fuzz target $target for ${secs}s"
            if RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" "$corpus" "corpus/$target" -- \
                -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
                grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)' "$log" || true
                grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || true
                echo "fuzz $target: no crash in ${secs}s ($(ls "$corpus" | wc -l) new corpus entries, not kept)"
            else
                tail -n 60 "$log"
                echo "FAIL fuzz $target: crash or fuzzer failure (artifact under snp-certs/fuzz/artifacts/$target/)" >&2
                exit 1
            fi
        }
        fuzz_one parse_table "$FUZZ_SECONDS"
        fuzz_one exit_handler "${FUZZ_SECONDS_HANDLER:-15}"
    fi
    cd "$here"
fi

step "benchmark: serving a 16 KiB blob"
cargo run --locked --release --quiet --example serve_bench -- "${BENCH_ROUNDS:-20}" "${BENCH_ITERS:-5000}"

step "all userspace checks passed"
