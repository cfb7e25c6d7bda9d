#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# "make": set up, expand patches/, build the patched test kernel and the
# selftests, boot it in QEMU and print the test results.
set -euo pipefail
. "$(dirname "$0")/common.sh"

stage setup "$TOP/scripts/setup.sh"
stage expand "$TOP/scripts/expand.sh"
src_at series
stage build "$TOP/scripts/build.sh" "$BUILD/src" "$BUILD/test" "${TEST_CONFIG[@]}"
stage boot boot_series
