#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Install everything the project needs on Debian 12. Idempotent: when all is
# present it only checks and returns within seconds.
set -euo pipefail
. "$(dirname "$0")/common.sh"

APT_PACKAGES=(
	rustc-web rust-web-src rust-web-clippy rustfmt-web
	clang-19 lld-19 llvm-19 libclang-19-dev
	qemu-system-x86 busybox-static python3-sphinx python3-sphinx-rtd-theme
	python3-yaml python3-ply python3-git python3-venv build-essential flex bison bc libelf-dev libssl-dev cpio kmod
	dwarves rsync xz-utils git
	debhelper
)
[ "$(id -u)" = 0 ] && SUDO= || SUDO=sudo
apt_install() {
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
		--allow-downgrades "$@"
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$p")
done
apt_updated=
if [ ${#missing[@]} -gt 0 ]; then
	log "installing Debian packages: ${missing[*]}"
	$SUDO apt-get update -q
	apt_updated=1
	apt_install "${missing[@]}"
fi

# The base: linux-source-6.12 and linux-config-6.12 (Debian's config of the
# same kernel) at the pinned version, base-version, when the archive still
# has it; else, or with BASE=newest, the newest 6.12 the archive serves, with
# a note. An installed base of the wanted version is left as it is.
BASE_PACKAGES=(linux-source-6.12 linux-config-6.12)
installed_base() { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null | sed -n 's/^install ok installed //p'; }
base_ok() {
	local p
	for p in "${BASE_PACKAGES[@]}"; do [ "$(installed_base "$p")" = "$1" ] || return 1; done
}
in_archive() { apt-cache madison linux-source-6.12 | awk -F' *[|] *' '{ print $2 }' | grep -qxF "$1"; }
if [ "${BASE:-pinned}" = newest ]; then
	[ -n "$apt_updated" ] || $SUDO apt-get update -q
	want=$(apt-cache policy linux-source-6.12 | sed -n 's/^ *Candidate: //p')
	[ -n "$want" ] && [ "$want" != "(none)" ] || die "the archive has no linux-source-6.12"
	[ "$want" = "$TESTED_BASE_VERSION" ] ||
		echo "NOTE: BASE=newest: using linux-source-6.12 $want, not the pinned $TESTED_BASE_VERSION"
elif base_ok "$TESTED_BASE_VERSION"; then
	want=$TESTED_BASE_VERSION
else
	if ! in_archive "$TESTED_BASE_VERSION" && [ -z "$apt_updated" ]; then
		$SUDO apt-get update -q
	fi
	if in_archive "$TESTED_BASE_VERSION"; then
		want=$TESTED_BASE_VERSION
		echo "base: installing the pinned linux-source-6.12 $want"
	else
		want=$(apt-cache policy linux-source-6.12 | sed -n 's/^ *Candidate: //p')
		[ -n "$want" ] && [ "$want" != "(none)" ] || die "the archive has no linux-source-6.12"
		echo "NOTE: the archive no longer has the pinned linux-source-6.12 $TESTED_BASE_VERSION: using the newest, $want ('make rebase' moves the series and the pin)"
	fi
fi
if ! base_ok "$want"; then
	log "installing linux-source-6.12 and linux-config-6.12 $want"
	apt_install "${BASE_PACKAGES[@]/%/=$want}"
fi

# bindgen-cli and cargo-fuzz come from crates.io, so a cargo is needed. A
# fresh Debian 12 has none: then Debian's cargo-web, which matches rustc-web,
# is installed and used (rustup's cargo, when present, is used as it is).
if ! command -v cargo >/dev/null; then
	log "no cargo in PATH: installing Debian's cargo-web"
	apt_install cargo-web || { $SUDO apt-get update -q && apt_install cargo-web; }
	command -v cargo >/dev/null || die "cargo-web is installed but no cargo is in PATH"
fi
if ! "$BINDGEN" --version 2>/dev/null | grep -qx "bindgen $BINDGEN_VERSION"; then
	log "installing bindgen-cli $BINDGEN_VERSION with $(cargo --version) (a few minutes)"
	cargo install --locked --root "$CARGO_HOME" "bindgen-cli@$BINDGEN_VERSION"
fi

# The emulator that counts the production path (scripts/production-path.py),
# at pinned versions, in a virtual environment of Debian's Python.
if ! [ "$("$VENV/bin/pip" freeze 2>/dev/null | grep -E '^(unicorn|pyelftools)==' | sort)" = \
	"$(printf '%s\n' "${PY_PACKAGES[@]}" | sort)" ]; then
	log "installing ${PY_PACKAGES[*]} from PyPI into ${VENV#"$TOP"/}"
	/usr/bin/python3 -m venv "$VENV"
	"$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

for tool in /usr/bin/rustc /usr/bin/rustfmt /usr/bin/clippy-driver \
	    /usr/lib/llvm-19/bin/clang /usr/lib/llvm-19/bin/ld.lld \
	    /usr/bin/qemu-system-x86_64 /bin/busybox "$BASE_TARBALL" \
	    "$RUST_LIB_SRC/core/src/lib.rs"; do
	[ -e "$tool" ] || die "set-up incomplete: $tool is missing"
done

# The userspace workspace's own tools (cargo-fuzz).
"$TOP/userspace/setup.sh"
