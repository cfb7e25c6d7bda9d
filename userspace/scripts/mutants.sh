#!/usr/bin/env bash
# userspace/scripts/mutants.sh [CARGO-MUTANTS ARGS...]
#
# Mutation testing of the modules a guest's answer depends on (table,
# vmgexit, store, verify: the list, the tests run and the explained
# survivors are in .cargo/mutants.toml) with cargo-mutants, pinned and
# installed by `./setup.sh --with-mutants`. Prints cargo-mutants' own
# summary, then one line
#
#   userspace mutants: caught C of M viable (kill rate P%), unviable U, timeouts T, missed S
#
# and the missed mutants, if any. Exit status 0 when none was missed (a
# timeout counts as caught, as cargo-mutants counts it), 2 when some were,
# 1 on any other failure.
#
# Extra arguments go to cargo mutants, e.g. `--iterate` (only what the last
# run did not catch), `-F REGEX` (only matching mutants), `-f GLOB` (one file).
# Knobs: MUTANTS_JOBS (mutants tested at once, default 2), MUTANTS_BUILD_JOBS
# (compilers running at once across them, default 1, so a kernel build on
# the same cores keeps the rest). Results: userspace/mutants.out/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! "$CARGO_BIN/cargo-mutants" mutants --version >/dev/null 2>&1; then
    echo "mutants.sh: cargo-mutants is not installed (./setup.sh --with-mutants)" >&2
    exit 1
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The test chains' RSA-4096 keys, made once and reused by every mutant's run
# (tests/support/mod.rs): key generation is not what is being tested.
export SNP_CERTS_TEST_KEY_CACHE="${SNP_CERTS_TEST_KEY_CACHE:-$here/target/mutants-test-keys}"

start=$(date +%s)
rc=0
cargo mutants \
    --jobs "${MUTANTS_JOBS:-2}" \
    --jobserver-tasks "${MUTANTS_BUILD_JOBS:-1}" \
    --colors never \
    "$@" || rc=$?
secs=$(( $(date +%s) - start ))
# cargo-mutants: 0 all caught, 2 some missed, 3 some timed out, 4 baseline
# failed; anything else is a failure of its own.
case "$rc" in
    0 | 2 | 3) ;;
    *) echo "mutants.sh: cargo mutants failed (exit $rc)" >&2; exit 1 ;;
esac

out=mutants.out
count() { # file
    if [ -f "$out/$1" ]; then grep -c . "$out/$1" || true; else echo 0; fi
}
caught=$(count caught.txt)
missed=$(count missed.txt)
timeouts=$(count timeout.txt)
unviable=$(count unviable.txt)
viable=$(( caught + missed + timeouts ))
killed=$(( caught + timeouts ))
if [ "$viable" -gt 0 ]; then
    rate=$(awk -v k="$killed" -v v="$viable" 'BEGIN { printf "%.1f", 100 * k / v }')
else
    rate="n/a"
fi
prev=$(count previously_caught.txt)
echo
if [ "$prev" -gt 0 ]; then
    echo "(--iterate: the figures below are this run's; $prev mutants caught or unviable before were skipped)"
fi
echo "userspace mutants: caught $killed of $viable viable (kill rate $rate%), unviable $unviable, timeouts $timeouts, missed $missed ($(( secs / 60 )) min $(( secs % 60 )) s)"
if [ "$missed" -gt 0 ]; then
    echo "missed:"
    sed 's/^/  /' "$out/missed.txt"
    exit 2
fi
