#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Unpack Debian's linux-source-6.12 into build/base (once per package version)
# and check that it is a 6.12 kernel the Rust toolchain can build.
set -euo pipefail
. "$(dirname "$0")/common.sh"

version=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null) ||
	die "linux-source-6.12 is not installed: run scripts/setup.sh"
stamp=$BUILD/base/.version
if [ "$(cat "$stamp" 2>/dev/null)" != "$version" ]; then
	log "unpacking $BASE_TARBALL ($version)"
	rm -rf "$BUILD/base"
	mkdir -p "$BUILD/base"
	tar -xJf "$BASE_TARBALL" -C "$BUILD/base"
	echo "$version" > "$stamp"
fi

kver=$(make -s -C "$BASE_DIR" kernelversion)
case $kver in
6.12.*) ;;
*) die "base is Linux $kver, not 6.12: this series targets 6.12 only" ;;
esac
echo "base: Debian linux-source-6.12 $version (Linux $kver)"
if [ "$version" != "$TESTED_BASE_VERSION" ]; then
	echo "NOTE: the series was tested on $TESTED_BASE_VERSION; $version is applied with git am -3"
fi

if [ ! -e "$BUILD/base/.rustavailable" ]; then
	"${KMAKE[@]}" -C "$BASE_DIR" O="$BUILD/rustavailable" rustavailable ||
		die "the Rust toolchain is not usable for the kernel (see above); run scripts/setup.sh"
	touch "$BUILD/base/.rustavailable"
fi
