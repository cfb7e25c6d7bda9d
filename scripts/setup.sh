#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Install everything the project needs on Debian 12. Idempotent: when all is
# present it only checks and returns within seconds.
set -euo pipefail
. "$(dirname "$0")/common.sh"

APT_PACKAGES=(
	linux-source-6.12 rustc-web rust-web-src rust-web-clippy rustfmt-web
	clang-19 lld-19 llvm-19 libclang-19-dev
	qemu-system-x86 busybox-static python3-sphinx python3-sphinx-rtd-theme
	python3-yaml python3-ply python3-git build-essential flex bison bc libelf-dev libssl-dev cpio kmod
	dwarves rsync xz-utils git
	linux-config-6.12 debhelper
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing Debian packages: ${missing[*]}"
	[ "$(id -u)" = 0 ] && SUDO= || SUDO=sudo
	$SUDO apt-get update -q
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
		"${missing[@]}"
fi

# bindgen-cli and cargo-fuzz come from crates.io, so a cargo is needed. A
# fresh Debian 12 has none: then Debian's cargo-web, which matches rustc-web,
# is installed and used (rustup's cargo, when present, is used as it is).
if ! command -v cargo >/dev/null; then
	log "no cargo in PATH: installing Debian's cargo-web"
	[ "$(id -u)" = 0 ] && SUDO= || SUDO=sudo
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends cargo-web ||
		{ $SUDO apt-get update -q &&
		  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends cargo-web; }
	command -v cargo >/dev/null || die "cargo-web is installed but no cargo is in PATH"
fi
if ! "$BINDGEN" --version 2>/dev/null | grep -qx "bindgen $BINDGEN_VERSION"; then
	log "installing bindgen-cli $BINDGEN_VERSION with $(cargo --version) (a few minutes)"
	cargo install --locked --root "$CARGO_HOME" "bindgen-cli@$BINDGEN_VERSION"
fi

for tool in /usr/bin/rustc /usr/bin/rustfmt /usr/bin/clippy-driver \
	    /usr/lib/llvm-19/bin/clang /usr/lib/llvm-19/bin/ld.lld \
	    /usr/bin/qemu-system-x86_64 /bin/busybox "$BASE_TARBALL" \
	    "$RUST_LIB_SRC/core/src/lib.rs"; do
	[ -e "$tool" ] || die "set-up incomplete: $tool is missing"
done

# The userspace workspace's own tools (cargo-fuzz).
"$TOP/userspace/setup.sh"
