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

if ! "$HOME/.cargo/bin/bindgen" --version 2>/dev/null | grep -qx "bindgen $BINDGEN_VERSION"; then
	command -v cargo >/dev/null || die "cargo is needed to install bindgen-cli"
	log "installing bindgen-cli $BINDGEN_VERSION (a few minutes)"
	cargo install --locked --root "$HOME/.cargo" "bindgen-cli@$BINDGEN_VERSION"
fi

for tool in /usr/bin/rustc /usr/bin/rustfmt /usr/bin/clippy-driver \
	    /usr/lib/llvm-19/bin/clang /usr/lib/llvm-19/bin/ld.lld \
	    /usr/bin/qemu-system-x86_64 /bin/busybox "$BASE_TARBALL" \
	    "$RUST_LIB_SRC/core/src/lib.rs"; do
	[ -e "$tool" ] || die "set-up incomplete: $tool is missing"
done

# The userspace workspace's own tools (cargo-fuzz).
"$TOP/userspace/setup.sh"
