#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# "make": set up, expand patches/, build the patched test kernel and the
# selftests, boot it in QEMU and print the test results.
set -euo pipefail
. "$(dirname "$0")/common.sh"

build_series() {
	local log=$BUILD/logs/build-main.log
	build_logged "the patched kernel" "$log" "$BUILD/test" "${TEST_CONFIG[@]}"
	echo "built $(git -C "$BUILD/src" log -1 --format='%h %s') (log: $log)"
}

stage setup "$TOP/scripts/setup.sh"
stage expand "$TOP/scripts/expand.sh"
src_at series
stage build build_series
stage boot boot_series
