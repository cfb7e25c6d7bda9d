#!/usr/bin/env bash
# Idempotent installs for userspace/check.sh. Safe to run many times.
#   - cargo-fuzz (pinned) for the parser fuzz target;
#   - bindgen-cli (pinned) only if --with-bindgen is given (needs libclang-19-dev);
#   - cargo-mutants (pinned) only if --with-mutants is given (scripts/mutants.sh).
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
BINDGEN_VERSION=0.73.2
CARGO_MUTANTS_VERSION=27.1.0
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

want_bindgen=0
want_mutants=0
for a in "$@"; do
    case "$a" in
        --with-bindgen) want_bindgen=1 ;;
        --with-mutants) want_mutants=1 ;;
        *) echo "setup.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done

have_version() { # tool version
    [ -x "$CARGO_BIN/$1" ] && "$CARGO_BIN/$1" --version 2>/dev/null | grep -q "$2"
}

if have_version cargo-fuzz "$CARGO_FUZZ_VERSION"; then
    echo "setup: cargo-fuzz $CARGO_FUZZ_VERSION already installed"
else
    echo "setup: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked -j 2 "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

if [ "$want_bindgen" = 1 ]; then
    if have_version bindgen "$BINDGEN_VERSION"; then
        echo "setup: bindgen $BINDGEN_VERSION already installed"
    else
        echo "setup: installing bindgen-cli $BINDGEN_VERSION"
        LIBCLANG_PATH="${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}" \
            cargo install --locked -j 2 "bindgen-cli@$BINDGEN_VERSION"
    fi
fi

if [ "$want_mutants" = 1 ]; then
    # Run as a cargo subcommand, cargo-mutants takes "mutants" first.
    if [ -x "$CARGO_BIN/cargo-mutants" ] &&
        "$CARGO_BIN/cargo-mutants" mutants --version 2>/dev/null | grep -q "$CARGO_MUTANTS_VERSION"; then
        echo "setup: cargo-mutants $CARGO_MUTANTS_VERSION already installed"
    else
        echo "setup: installing cargo-mutants $CARGO_MUTANTS_VERSION"
        cargo install --locked -j "${CARGO_BUILD_JOBS:-2}" "cargo-mutants@$CARGO_MUTANTS_VERSION"
    fi
fi
