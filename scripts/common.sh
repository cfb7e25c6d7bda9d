# SPDX-License-Identifier: GPL-2.0
# Shared paths and tool settings, sourced by every script in scripts/.
# shellcheck shell=bash

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$TOP/build            # everything generated (ignored by git)
WORK=$TOP/work/linux        # the expanded series: base commit + one commit a patch
PATCHES=$TOP/patches
BASE_TARBALL=/usr/src/linux-source-6.12.tar.xz
BASE_DIR=$BUILD/base/linux-source-6.12
# The Debian version of linux-source-6.12 the series is tested on (the pin):
# named once, in base-version; "make rebase" moves it.
TESTED_BASE_VERSION=$(cat "$TOP/base-version")
BINDGEN_VERSION=0.73.2
RUST_LIB_SRC=/usr/src/rustc-1.96.0/library
JOBS=${JOBS:-$(( $(nproc) + 1 ))}

# cargo installs bindgen-cli and cargo-fuzz here (rustup's default too).
export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export PATH=/usr/lib/llvm-19/bin:$CARGO_HOME/bin:$PATH
export LIBCLANG_PATH=/usr/lib/llvm-19/lib

BINDGEN=$CARGO_HOME/bin/bindgen

# Python packages from PyPI (setup.sh), for scripts/production-path.py.
VENV=$BUILD/venv
PY_PACKAGES=(unicorn==2.1.4 pyelftools==0.32)

# Debian's rustc-web/clippy/rustfmt are one matched toolchain; rustup's
# binaries earlier in PATH belong to another rustc and must not be used for
# the kernel.
KMAKE=(make -j"$JOBS" LLVM=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
       RUSTFMT=/usr/bin/rustfmt CLIPPY_DRIVER=/usr/bin/clippy-driver
       BINDGEN="$BINDGEN" RUST_LIB_SRC="$RUST_LIB_SRC")

# Fixed identity and dates make the work tree's commits reproducible.
# Authors and sign-offs come from the patches themselves, and "make export"
# adds the exporter's sign-off (export.sh).
export GIT_COMMITTER_NAME="series" GIT_COMMITTER_EMAIL="series@localhost"
BASE_DATE="2000-01-01T00:00:00Z"

log() { printf '>>> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# stage NAME CMD...: run CMD and print how long it took, for the CI log.
stage() {
	local name=$1 start rc=0
	shift
	start=$(date +%s)
	log "stage $name: start"
	# A subshell outside any "||" context, so that "set -e" holds inside
	# the stage's functions too.
	set +e
	(set -e; "$@")
	rc=$?
	set -e
	log "stage $name: $( [ $rc = 0 ] && echo ok || echo "FAILED ($rc)" ) in $(( $(date +%s) - start )) s"
	return $rc
}

# A fingerprint of patches/, to tell whether the work tree is current.
patches_hash() {
	{ cat "$PATCHES"/*.patch 2>/dev/null || true; } | sha256sum | cut -d' ' -f1
}

# The series' patch files in order, without the cover letter.
series_patches() {
	ls "$PATCHES"/[0-9][0-9][0-9][0-9]-*.patch 2>/dev/null | grep -v '/0000-' || true
}

# apply_series REPO: put patches/ on top of the base in REPO (branch series
# checked out at the base): the cover letter becomes the branch description,
# every other patch a commit.
apply_series() {
	local repo=$1 cover version series am_opts=(--committer-date-is-author-date --quiet)
	cover=$(ls "$PATCHES"/0000-*.patch 2>/dev/null || true)
	if [ -n "$cover" ]; then
		git -C "$repo" config branch.series.description \
			"$(python3 "$TOP/scripts/cover.py" read "$cover")"
	fi
	mapfile -t series < <(series_patches)
	version=$(git -C "$repo" config series.base-version)
	if [ "$version" != "$TESTED_BASE_VERSION" ]; then
		am_opts+=(-3)
		echo "NOTE: applying with git am -3 onto $version (tested on $TESTED_BASE_VERSION)" >&2
	fi
	[ ${#series[@]} -eq 0 ] || git -C "$repo" am "${am_opts[@]}" "${series[@]}"
}

# format_series REPO OUT [SIGNER]: REPO's base..series as format-patch
# output in OUT. Reproducible: zero commit ids, no version signature, and
# the cover letter from the last patch's author and date. With SIGNER
# ("Name <email>"), every patch that does not end with SIGNER's
# Signed-off-by gets it (git format-patch --signoff).
format_series() {
	local repo=$1 out=$2 signer=${3:-} name email date signoff=()
	{ read -r name; read -r email; read -r date; } < <(git -C "$repo" log -1 --format='%an%n%ae%n%aI' series)
	if [ -n "$signer" ]; then
		name=${signer% <*} email=${signer##*<} email=${email%>}
		signoff=(--signoff)
	fi
	rm -rf "$out"
	GIT_COMMITTER_NAME=$name GIT_COMMITTER_EMAIL=$email \
	GIT_COMMITTER_DATE=$date git -C "$repo" -c core.abbrev=12 format-patch --quiet \
		--zero-commit --no-signature --cover-letter "${signoff[@]}" \
		--cover-from-description=subject -o "$out" base..series
}

# normalize_patch FILE: FILE as the series' content only: the message and,
# of the diff, the file names and the added and removed lines, without what
# depends on the base (index blob ids, hunk positions, context lines).
normalize_patch() {
	sed -E -e '/^index [0-9a-f]+\.\.[0-9a-f]+/d' -e 's/^@@ -[0-9,]+ \+[0-9,]+ @@.*/@@/' \
		-e '/^diff --git /,$ { /^ /d }' "$1"
}

# src_at REV: check REV (a rev of the work tree: base, series, a sha) out in
# build/src, the tree every build uses. It is a separate repository so that
# builds never disturb work/linux, and it is only ever moved between commits,
# so checkouts rewrite just the files that differ and builds stay
# incremental. Commit ids are reproducible (fixed dates), so a re-expanded
# work tree yields the same ones.
src_at() {
	local src=$BUILD/src sha
	sha=$(git -C "$WORK" rev-parse --verify "$1^{commit}")
	if [ ! -d "$src/.git" ]; then
		# Adopt files already there (from an earlier layout) without
		# rewriting them; a fresh directory is simply checked out.
		rm -f "$src/.git"
		mkdir -p "$src"
		git -C "$src" init -q
	fi
	git -C "$src" fetch -q --no-tags "$WORK" +series:refs/work/series +base:refs/work/base
	if ! git -C "$src" rev-parse -q --verify HEAD >/dev/null; then
		git -C "$src" reset -q "$(cat "$BUILD/src.rev" 2>/dev/null || echo refs/work/base)" -- 2>/dev/null ||
			git -C "$src" reset -q refs/work/base
	fi
	git -C "$src" checkout -q --force --detach "$sha"
	git -C "$src" reset -q --hard
	echo "$sha" > "$BUILD/src.rev"
}

# The lists in tests/, without comments and blank lines.
list() { sed -e 's/#.*//' -e '/^\s*$/d' "$TOP/tests/$1"; }

# Config fragments of the test kernel.
TEST_CONFIG=("$TOP/configs/test.config")

# What a build's result depends on besides its source tree and config
# fragments: the tools (versions) and the scripts that drive them. Any change
# here invalidates every cached build result (see build_key).
toolchain_id() {
	{
		clang --version | head -1
		ld.lld --version
		/usr/bin/rustc --version
		/usr/bin/clippy-driver --version
		"$BINDGEN" --version
		pahole --version
		printf '%s\n' "${KMAKE[@]:1}"   # without -jN, which changes no output
		cat "$TOP/scripts/build.sh" "$TOP/scripts/common.sh"
	} 2>&1
}

# build_key REV FILE...: a key for building REV of the work tree with the
# config fragments (or other inputs) FILE: REV's git tree id (the content of
# the base plus the patch prefix, every file), the files' contents and the
# toolchain. Equal keys mean equal inputs, so a result stored under the key
# (scripts/check.sh, build/cache/) can be reused instead of rebuilt.
build_key() {
	local rev=$1
	shift
	{
		git -C "$WORK" rev-parse --verify "$rev^{tree}"
		for f in "$@"; do echo "== $f"; cat "$f"; done
		toolchain_id
	} | sha256sum | cut -c1-20
}

# build_logged WHAT LOG OUT FRAGMENT... [-- MAKE_ARGS...]: scripts/build.sh
# of build/src into OUT with its output in LOG; on failure show the end of
# the log and stop, naming WHAT.
build_logged() {
	local what=$1 log=$2
	shift 2
	mkdir -p "$(dirname "$log")"
	# OUT.key names the cached build OUT holds (scripts/check.sh); a new
	# build, complete or not, holds something else.
	rm -f "$1.key"
	"$TOP/scripts/build.sh" "$BUILD/src" "$@" > "$log" 2>&1 ||
		{ tail -40 "$log"; die "$what does not build (log: $log)"; }
}

# tests_of KIND base|series: the KVM selftests (KIND selftests) or KUnit
# suites (KIND kunit-suites) of a kernel: tests/KIND.list on both, and
# tests/KIND-series.list, the series' own, on the series.
tests_of() {
	list "$1.list"
	[ "$2" = base ] || list "$1-series.list"
}

# boot NAME BZIMAGE SELFTEST_DIR: boot BZIMAGE with NAME's selftests
# (base or series) from SELFTEST_DIR; results in build/logs/NAME and
# build/logs/NAME.json.
boot() {
	local name=$1 kernel=$2 selftests=$3 args=() tests s
	mapfile -t tests < <(tests_of selftests "$name")
	"$TOP/scripts/initramfs.sh" "$BUILD/initrd-$name.cpio.gz" "$selftests" "${tests[@]}"
	for s in $(tests_of kunit-suites "$name"); do args+=(--suite "$s"); done
	for s in "${tests[@]}"; do args+=(--selftest "$s"); done
	python3 "$TOP/scripts/run-tests.py" --kernel "$kernel" \
		--initrd "$BUILD/initrd-$name.cpio.gz" --src "$BUILD/src" \
		--logdir "$BUILD/logs/$name" --json "$BUILD/logs/$name.json" \
		--timeout "${BOOT_TIMEOUT:-900}" "${args[@]}"
}

# boot_series: build the selftests of the series (build/src at its tip) and
# boot the test kernel with them.
boot_series() {
	"$TOP/scripts/selftests.sh" "$BUILD/src" "$BUILD/selftests" $(tests_of selftests series) > "$BUILD/selftests.log" 2>&1 ||
		{ tail -30 "$BUILD/selftests.log"; die "building the selftests failed (log: $BUILD/selftests.log)"; }
	boot series "$BUILD/test/arch/x86/boot/bzImage" "$BUILD/selftests"
}
