#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# initramfs.sh OUT.cpio.gz SELFTEST_DIR [TEST...]
# Build the guest's initramfs: busybox-static, tests/guest/init, and the
# given selftest binaries (paths relative to SELFTEST_DIR, kept as such).
set -euo pipefail
. "$(dirname "$0")/common.sh"

out=$(realpath -m "$1") selftests=$2
shift 2
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,selftests}
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
	[ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
install -m 0755 "$TOP/tests/guest/init" "$root/init"
: > "$root/selftests/list"
for t in "$@"; do
	[ -x "$selftests/$t" ] || die "selftest $t was not built in $selftests"
	mkdir -p "$root/selftests/$(dirname "$t")"
	cp "$selftests/$t" "$root/selftests/$t"
	echo "$t" >> "$root/selftests/list"
done
(cd "$root" && find . | sort | cpio --quiet -o -H newc -R 0:0 | gzip -1) > "$out"
