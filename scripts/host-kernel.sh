#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# "make host-kernel": installable Debian packages (make bindeb-pkg) of the
# base plus the series, from Debian's full amd64 config for 6.12 with
# configs/distro.config (LLVM, Rust, the series' option; the reasons are
# there) and configs/host.config (the release name). Not part of
# "make check": every module of Debian's config is built, which takes hours
# on 2 cores. Do not run it while "make check" runs in the same clone: both
# use build/src.
set -euo pipefail
. "$(dirname "$0")/common.sh"

DEBIAN_CONFIG=/usr/src/linux-config-6.12/config.amd64_none_amd64.xz
out=$BUILD/host-kernel
[ -f "$DEBIAN_CONFIG" ] || die "$DEBIAN_CONFIG is missing (make setup installs linux-config-6.12)"
src_at series
mkdir -p "$out"
xzcat "$DEBIAN_CONFIG" > "$out/debian.config"
start=$(date +%s)
log "building Debian packages of the series ($(git -C "$BUILD/src" log -1 --format=%s)) in $out/obj; log: $out/build.log"
# bindeb-pkg writes the packages next to the build directory, into $out.
# LOCALVERSION= keeps the "+" of an untagged git tree out of the release.
BASE_CONFIG=$out/debian.config "$TOP/scripts/build.sh" "$BUILD/src" "$out/obj" \
	"$TOP/configs/distro.config" "$TOP/configs/host.config" -- LOCALVERSION= bindeb-pkg \
	> "$out/build.log" 2>&1 ||
	{ tail -40 "$out/build.log"; die "bindeb-pkg failed (log: $out/build.log)"; }
log "built in $(( ($(date +%s) - start) / 60 )) min:"
ls -1 "$out"/*.deb
