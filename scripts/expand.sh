#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Expand patches/ into the work tree work/linux: a git repository with one
# commit for the pristine base (tag "base") and one commit per patch on branch
# "series". An existing work tree is kept when it already holds exactly
# patches/; if it holds anything else (new commits, uncommitted edits) this
# refuses, so no work is lost: export it first or pass FORCE=1.
set -euo pipefail
. "$(dirname "$0")/common.sh"

"$TOP/scripts/base.sh"
version=$(cat "$BUILD/base/.version")

patches_hash=$(patches_hash)
if [ -d "$WORK/.git" ] && [ -z "${FORCE:-}" ]; then
	[ -z "$(git -C "$WORK" status --porcelain)" ] ||
		die "work/linux has uncommitted changes: commit and 'make export', or 'make expand FORCE=1' to discard them"
	[ "$(git -C "$WORK" config series.base-version)" = "$version" ] ||
		die "work/linux was expanded on another base version: 'make expand FORCE=1'"
	# Unchanged since the last expansion, or exported since: nothing to do.
	if { [ "$(git -C "$WORK" config series.patches-hash)" = "$patches_hash" ] &&
	     [ "$(git -C "$WORK" rev-parse HEAD)" = "$(git -C "$WORK" config series.head)" ]; } ||
	   "$TOP/scripts/export.sh" --compare; then
		git -C "$WORK" config series.patches-hash "$patches_hash"
		git -C "$WORK" config series.head "$(git -C "$WORK" rev-parse HEAD)"
		exit 0
	fi
	# No commit since the last expansion or export: nothing of the
	# developer's can be lost, so follow patches/ (e.g. after a git pull).
	if [ "$(git -C "$WORK" rev-parse HEAD)" = "$(git -C "$WORK" config series.head)" ]; then
		log "patches/ changed: re-applying it in work/linux"
		git -C "$WORK" reset -q --hard base
		apply_series "$WORK" ||
			die "patches/ does not apply to the base (git am stopped; see above)"
		git -C "$WORK" config series.patches-hash "$patches_hash"
		git -C "$WORK" config series.head "$(git -C "$WORK" rev-parse HEAD)"
		exit 0
	fi
	die "work/linux has commits that are not in patches/: 'make export' to keep them, or 'make expand FORCE=1' to rebuild it from patches/"
fi
rm -rf "$WORK"

log "expanding patches/ onto the base in work/linux"
mkdir -p "$WORK"
rsync -a "$BASE_DIR/" "$WORK/"
cd "$WORK"
# Debian's top-level .gitignore ends with "/*" and "!/debian/", which would
# silently keep every new file out of commits and so out of the patches.
# It also lacks upstream's exceptions to ".*", so the base is added with -f:
# the base commit holds every file of the tarball (.rustfmt.toml included).
sed -i '/^# Debian packaging: ignore everything at the top level/,$d' .gitignore
git init -q -b series
git config series.base-version "$version"
git add -A -f
GIT_AUTHOR_NAME=Debian GIT_AUTHOR_EMAIL=debian-kernel@lists.debian.org \
GIT_AUTHOR_DATE=$BASE_DATE GIT_COMMITTER_DATE=$BASE_DATE \
	git commit -q -m "base: Debian linux-source-6.12 $version"
git tag base

apply_series "$WORK" ||
	die "patches/ does not apply to the base (git am stopped; see above)"
git config series.patches-hash "$patches_hash"
git config series.head "$(git rev-parse HEAD)"
echo "work/linux: base + $(git rev-list --count base..series) patches"
