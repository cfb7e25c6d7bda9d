#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# build.sh SRC OUT FRAGMENT... [-- MAKE_ARGS...]
# Configure OUT as tinyconfig + the fragments, check that every option the
# fragments set (and SRC defines) took effect, then build incrementally.
# With BASE_CONFIG=FILE in the environment, FILE (a distribution's config)
# takes tinyconfig's place.
set -euo pipefail
. "$(dirname "$0")/common.sh"

src=$(realpath "$1") out=$(realpath -m "$2")
shift 2
fragments=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do fragments+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(bzImage)

mkdir -p "$out"
if [ -n "${BASE_CONFIG:-}" ]; then
	cp "$BASE_CONFIG" "$out/.config"
else
	"${KMAKE[@]}" -s -C "$src" O="$out" tinyconfig >/dev/null
fi
"$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "${fragments[@]}" >/dev/null
"${KMAKE[@]}" -s -C "$src" O="$out" olddefconfig

kconfig_syms=$(cat $(find "$src" -name 'Kconfig*' -not -path '*/Documentation/*') |
	sed -n 's/^\(menu\)\?config \([A-Z0-9_]*\).*/\2/p' | sort -u)
for frag in "${fragments[@]}"; do
	while IFS= read -r line; do
		case $line in
		CONFIG_*=*) sym=${line%%=*} ;;
		"# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *} ;;
		*) continue ;;
		esac
		want=$line
		# A later fragment may override an earlier one.
		for f in "${fragments[@]}"; do
			w=$(grep -E "^($sym=|# $sym is not set)" "$f" || true)
			[ -n "$w" ] && want=$w
		done
		if ! grep -qx "${sym#CONFIG_}" <<<"$kconfig_syms"; then
			log "note: $sym is not defined by this tree; skipped"
			continue
		fi
		grep -qx -- "$want" "$out/.config" ||
			die "$want did not take effect in $out/.config (dependencies?)"
	done < "$frag"
done

"${KMAKE[@]}" -C "$src" O="$out" "${targets[@]}"
