#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Export the work tree's series (base..series) back to patches/ as
# git format-patch output with a cover letter regenerated from the branch
# description. Output is reproducible: zero commit ids, no version signature,
# and the cover letter dated like the series' last commit. Every patch ends
# with the exporter's Signed-off-by (git's user.name and user.email), which
# certifies it under the DCO: only a real person may export.
#   export.sh            write patches/
#   export.sh --to DIR   write DIR instead
#   export.sh --compare  succeed only if exporting would change nothing
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ -d "$WORK/.git" ] || die "no work tree: run 'make expand' first"

case ${1:-} in
--compare)
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	format_series "$WORK" "$tmp/p"
	diff -r -q "$tmp/p" "$PATCHES" >/dev/null 2>&1
	;;
--to)
	format_series "$WORK" "$2"
	;;
"")
	[ -z "$(git -C "$WORK" status --porcelain)" ] ||
		die "work/linux has uncommitted changes: commit them first"
	name=$(git -C "$TOP" config user.name) && email=$(git -C "$TOP" config user.email) ||
		die "set git's user.name and user.email: the sign-off of every patch is yours"
	if grep -qiE '@(localhost|[^ ]*example\.(org|com|net))$' <<<"$email"; then
		die "user.email $email is a placeholder: nobody can certify a sign-off with it"
	fi
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	format_series "$WORK" "$tmp/p" "$name <$email>"
	mkdir -p "$PATCHES"
	rm -f "$PATCHES"/*.patch
	cp "$tmp"/p/*.patch "$PATCHES"/
	git -C "$WORK" config series.patches-hash "$(patches_hash)"
	git -C "$WORK" config series.head "$(git -C "$WORK" rev-parse HEAD)"
	ls "$PATCHES"
	;;
*) die "usage: export.sh [--compare | --to DIR]" ;;
esac
