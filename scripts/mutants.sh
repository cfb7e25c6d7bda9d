#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# "make mutants": build and boot each mutant of tests/mutants/ (one small,
# named mistake in the series' code, as a patch against the series tip)
# and count those the tests kill: a mutant is killed when its test kernel
# does not build or its boot (the kvm_sev_rs KUnit suite and the series'
# selftests) fails. Prints "mutants: killed N of M" and names survivors;
# exits non-zero if one survives.
#
# Each mutant is built incrementally in build/test from build/src at the
# series tip (only the mutated file and the link are redone), and its
# result is cached in build/cache/ under a key of the mutant, the series'
# tree, the configs, the toolchain and the test scripts, as the bisect
# builds are. Afterwards build/test holds the series kernel again.
set -euo pipefail
. "$(dirname "$0")/common.sh"

CACHE=$BUILD/cache
MUTANTS=$TOP/tests/mutants
[ -d "$WORK/.git" ] || "$TOP/scripts/expand.sh"
mkdir -p "$BUILD/logs/mutants"

# The series' selftests (their binaries do not depend on the kernel's code).
"$TOP/scripts/selftests.sh" "$BUILD/src" "$BUILD/selftests" $(tests_of selftests series) \
	> "$BUILD/logs/mutants/selftests.log" 2>&1 ||
	die "building the selftests failed (log: $BUILD/logs/mutants/selftests.log)"
mapfile -t selftests < <(tests_of selftests series)
"$TOP/scripts/initramfs.sh" "$BUILD/initrd-mutants.cpio.gz" "$BUILD/selftests" "${selftests[@]}"
args=(--suite kvm_sev_rs --append kunit.filter_glob=kvm_sev_rs)
for s in "${selftests[@]}"; do args+=(--selftest "$s"); done

series_key=$(build_key series "${TEST_CONFIG[@]}" "$TOP/scripts/run-tests.py" \
	"$TOP/scripts/mutants.sh" "$TOP/tests/selftests-series.list")
src_at series
# build/test changes under the mutants; it holds what it held before at the end.
held=$(cat "$BUILD/test.key" 2>/dev/null || true)
rm -f "$BUILD/test.key"
killed=0 total=0 survivors=()
for m in "$MUTANTS"/*.patch; do
	name=$(basename "$m" .patch)
	if [ $# -gt 0 ]; then
		match=
		for pat in "$@"; do
			# shellcheck disable=SC2053
			[[ $name == $pat ]] && match=1
		done
		[ -n "$match" ] || continue
	fi
	total=$((total + 1))
	key=mutant-$( { echo "$series_key"; cat "$m"; } | sha256sum | cut -c1-20)
	if [ ! -f "$CACHE/$key/result" ]; then
		log "mutant $name"
		git -C "$BUILD/src" apply "$m" || die "$name does not apply to the series tip"
		logdir=$BUILD/logs/mutants/$name
		mkdir -p "$logdir"
		if ! "$TOP/scripts/build.sh" "$BUILD/src" "$BUILD/test" "${TEST_CONFIG[@]}" \
			> "$logdir/build.log" 2>&1; then
			result="killed: does not build"
		elif python3 "$TOP/scripts/run-tests.py" --kernel "$BUILD/test/arch/x86/boot/bzImage" \
			--initrd "$BUILD/initrd-mutants.cpio.gz" --src "$BUILD/src" --logdir "$logdir" \
			--json "$logdir/result.json" --timeout "${BOOT_TIMEOUT:-900}" "${args[@]}" \
			> "$logdir/boot.log" 2>&1; then
			result="SURVIVED"
		else
			result="killed: $(python3 -c 'import json, sys
p = json.load(open(sys.argv[1]))["problems"]
print("; ".join(x.split(": ")[0] if ": " in x else x for x in p[:4]) + (" ..." if len(p) > 4 else ""))' "$logdir/result.json")"
		fi
		git -C "$BUILD/src" checkout -q --force -- .
		mkdir -p "$CACHE/$key"
		echo "$result" > "$CACHE/$key/result"
	fi
	result=$(cat "$CACHE/$key/result")
	echo "$name: $result"
	case $result in
	killed*) killed=$((killed + 1)) ;;
	*) survivors+=("$name") ;;
	esac
done

# Leave build/test holding the series kernel, as make check expects.
"$TOP/scripts/build.sh" "$BUILD/src" "$BUILD/test" "${TEST_CONFIG[@]}" > "$BUILD/logs/mutants/restore.log" 2>&1 ||
	die "rebuilding the series kernel failed (log: $BUILD/logs/mutants/restore.log)"
[ -z "$held" ] || echo "$held" > "$BUILD/test.key"
echo "mutants: killed $killed of $total${survivors[*]:+; survived: ${survivors[*]}}"
[ ${#survivors[@]} -eq 0 ]
