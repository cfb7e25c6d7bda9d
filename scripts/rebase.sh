#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# "make rebase": move the series onto the newest linux-source-6.12 that
# Debian serves: install it, expand patches/ onto it (git am -3), export
# patches/ again and write the new version into base-version. Then run
# "make check" and commit patches/ and base-version together.
set -euo pipefail
. "$(dirname "$0")/common.sh"

if [ -d "$WORK/.git" ]; then
	[ -z "$(git -C "$WORK" status --porcelain)" ] &&
	[ "$(git -C "$WORK" rev-parse HEAD)" = "$(git -C "$WORK" config series.head)" ] ||
		die "work/linux has changes that are not in patches/: 'make export' (or 'make expand FORCE=1') first"
fi
old=$TESTED_BASE_VERSION
BASE=newest "$TOP/scripts/setup.sh"
new=$(dpkg-query -W -f='${Version}' linux-source-6.12)
if [ "$new" = "$old" ]; then
	echo "the series is on $old, the newest linux-source-6.12 the archive serves: nothing to do"
	exit 0
fi
log "moving the series from $old to $new"
"$TOP/scripts/base.sh"
FORCE=1 "$TOP/scripts/expand.sh" ||
	die "patches/ does not apply to $new: resolve in work/linux ('git am --continue'), then 'make export' and write $new into base-version"
echo "$new" > "$TOP/base-version"
"$TOP/scripts/export.sh"
echo "the series is now on $new (base-version); run 'make check', then commit patches/ and base-version"
