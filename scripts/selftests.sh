#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# selftests.sh SRC OUT TEST...
# Install SRC's uapi headers into OUT/usr and build the named KVM selftests
# (paths relative to tools/testing/selftests/kvm) statically into OUT, so
# the busybox initramfs can run them.
set -euo pipefail
. "$(dirname "$0")/common.sh"

src=$(realpath "$1") out=$(realpath -m "$2")
shift 2
mkdir -p "$out"
make -s -C "$src" O="$out/hdr-build" headers_install INSTALL_HDR_PATH="$out/usr" >/dev/null
targets=()
for t in "$@"; do targets+=("$out/$t"); done
make -C "$src/tools/testing/selftests/kvm" -j"$JOBS" OUTPUT="$out" \
	CC="gcc -static" INSTALL_HDR_PATH="$out/usr" \
	KHDR_INCLUDES="-isystem $out/usr/include" "${targets[@]}"
