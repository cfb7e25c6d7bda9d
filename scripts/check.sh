#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# "make check": every test and check of the series and the userspace crate.
# Each stage prints its time; the first failing stage stops the run.
set -euo pipefail
. "$(dirname "$0")/common.sh"

start=$(date +%s)
mkdir -p "$BUILD/logs"

# Expanding patches/ and exporting again must reproduce patches/ exactly.
roundtrip() {
	local tmp
	tmp=$(mktemp -d "$BUILD/roundtrip.XXXXXX")
	git clone -q --no-checkout "$WORK" "$tmp/linux"
	git -C "$tmp/linux" config series.base-version "$(git -C "$WORK" config series.base-version)"
	# Only the files the patches touch (and the diff attributes that shape
	# hunk headers) are checked out: git am needs no more, and the whole
	# tree would take minutes to write and delete.
	git -C "$tmp/linux" sparse-checkout set --no-cone /.gitattributes \
		$(for p in $(series_patches); do git apply --numstat "$p"; done |
		  cut -f3 | sed 's|^|/|' | sort -u)
	git -C "$tmp/linux" reset -q --hard base  # branch series, at the base
	apply_series "$tmp/linux"
	format_series "$tmp/linux" "$tmp/out"
	if ! diff -ru "$PATCHES" "$tmp/out"; then
		rm -rf "$tmp"
		die "expanding and exporting patches/ changes it (diff above)"
	fi
	echo "round trip: $(ls "$tmp/out" | wc -l) files, no difference"
	rm -rf "$tmp"
}

# Whether every file that patch $1 adds has a maintainer or supporter in
# MAINTAINERS at the tip of the series (not only "THE REST").
new_files_maintained() {
	local f
	for f in $(git apply --summary "$1" | sed -n 's/^ create mode [0-7]* //p'); do
		(cd "$WORK" && PATH=/usr/bin:$PATH perl scripts/get_maintainer.pl --no-git \
			--no-git-fallback -f "$f") | grep -E '\((maintainer|supporter):' |
			grep -qv 'THE REST' ||
			{ echo "$f: no MAINTAINERS entry covers it"; return 1; }
	done
}

# checkpatch.pl --strict must find nothing in any patch, but for the
# question whether MAINTAINERS needs updating for a new file that an
# existing entry already covers (KVM's selftests, say).
checkpatch() {
	local p out bad=0 findings
	for p in $(series_patches); do
		# Debian's python3 has the modules spdxcheck.py needs (ply, git).
		out=$(cd "$WORK" && PATH=/usr/bin:$PATH scripts/checkpatch.pl --strict --color=never "$p" 2>&1) || true
		echo "$(basename "$p"): $(grep -E '^total:' <<<"$out")"
		findings=$(grep -E '^(ERROR|WARNING|CHECK):' <<<"$out" |
			   grep -vx 'WARNING: added, moved or deleted file(s), does MAINTAINERS need updating?' || true)
		if [ -n "$findings" ] || ! grep -q '^total: 0 errors, [01] warnings, 0 checks' <<<"$out" ||
		   grep -q Traceback <<<"$out" || ! new_files_maintained "$p"; then
			echo "$out"
			bad=1
		fi
	done
	return $bad
}

# Warnings of a build log, without line numbers, for comparison with the base.
warnings() { { grep -E 'warning:' "$1" || true; } | sed -E 's/:[0-9]+:[0-9]+:/:/; s/\+0x[0-9a-f]+//' | sort -u; }

# Build the test kernel at the base and after each patch (incrementally):
# every patch must build on its own and add no compiler warning. Along the
# way keep what later stages compare against: the base kernel, selftests,
# headers and documentation warnings.
walk() {
	local rev n=0 changed log
	src_at base
	log=$BUILD/logs/build-base.log
	build_logged "the base" "$log" "$BUILD/test" "${TEST_CONFIG[@]}"
	touch "$BUILD/warnings-base"
	# An incremental base build shows only some of the base's warnings, so
	# keep those of earlier runs as well.
	warnings "$log" | sort -u - "$BUILD/warnings-base" > "$BUILD/warnings-base.new"
	mv "$BUILD/warnings-base.new" "$BUILD/warnings-base"
	cp "$BUILD/test/arch/x86/boot/bzImage" "$BUILD/bzImage-base"
	"$TOP/scripts/selftests.sh" "$BUILD/src" "$BUILD/selftests-base" $(tests_of selftests base) \
		> "$BUILD/logs/selftests-base.log" 2>&1 || die "base selftests do not build"
	docs base
	echo "base: built ($(wc -l < "$BUILD/warnings-base") distinct warnings known in the base itself)"
	for rev in $(git -C "$WORK" rev-list --reverse base..series); do
		n=$((n + 1))
		src_at "$rev"
		changed=$(git -C "$WORK" diff-tree --no-commit-id --name-only -r "$rev")
		if ! grep -qvE '^(Documentation|tools)/|^MAINTAINERS$' <<<"$changed"; then
			echo "patch $n: touches only Documentation/, tools/ or MAINTAINERS: no kernel rebuild"
			continue
		fi
		log=$BUILD/logs/build-$n.log
		build_logged "patch $n ($(git -C "$WORK" log -1 --format=%s "$rev"))" "$log" \
			"$BUILD/test" "${TEST_CONFIG[@]}"
		if new=$(warnings "$log" | comm -23 - "$BUILD/warnings-base") && [ -n "$new" ]; then
			echo "$new"
			die "patch $n adds build warnings (log: $log)"
		fi
		echo "patch $n: builds, no new warning: $(git -C "$WORK" log -1 --format=%s "$rev")"
	done
	docs series
}

# htmldocs of Documentation/virt: the series may add no warning.
docs() {
	local log=$BUILD/logs/docs-$1.log
	"${KMAKE[@]}" -C "$BUILD/src" O="$BUILD/docs" SPHINXDIRS=virt htmldocs > "$log" 2>&1 ||
		{ tail -20 "$log"; die "htmldocs failed at $1 (log: $log)"; }
	grep -E 'WARNING|ERROR' "$log" | sed -E "s|$BUILD/src/||; s/:[0-9]+:/:/" | sort > "$BUILD/logs/docs-warnings-$1" || true
	if [ "$1" = series ]; then
		if new=$(comm -13 "$BUILD/logs/docs-warnings-base" "$BUILD/logs/docs-warnings-series") && [ -n "$new" ]; then
			echo "$new"
			die "the series adds documentation warnings"
		fi
		echo "htmldocs (virt): no new warning ($(wc -l < "$BUILD/logs/docs-warnings-base") in the base)"
	fi
}

# The series' own Rust must be rustfmt-clean and clippy-clean; the module
# config (KVM and kvm-amd as modules) must build too, so build it with clippy.
module_clippy() {
	local log=$BUILD/logs/build-module.log
	build_logged "the module config" "$log" "$BUILD/module" "${TEST_CONFIG[@]}" \
		"$TOP/configs/module.config" -- CLIPPY=1 bzImage modules
	if grep -E '^(warning|error)' "$log"; then
		die "clippy or rustc warnings (log: $log)"
	fi
	"${KMAKE[@]}" -s -C "$BUILD/src" O="$BUILD/module" rustfmtcheck ||
		die "rustfmtcheck: Rust code is not formatted"
	echo "module config: builds; clippy: no warning; rustfmtcheck: clean"
}

# No guest or VMM input may reach a panic: the Rust objects may not
# reference one (core::panicking, bounds checks, unwrap/expect failures).
PANIC_SYMBOLS='panic|unwrap_failed|expect_failed|slice_.*fail|str_index|overflow'
no_panic() {
	local obj undef
	for obj in "$BUILD/test/arch/x86/kvm/svm/sev_rs.o" "$BUILD/module/arch/x86/kvm/svm/sev_rs.o"; do
		[ -f "$obj" ] || die "$obj was not built"
		undef=$(llvm-nm -u "$obj")
		# Raw (mangled) and demangled names, so either spelling matches.
		if grep -Ei "$PANIC_SYMBOLS" <<<"$undef"$'\n'"$(llvm-nm -u -C "$obj")"; then
			die "${obj#"$BUILD"/} references a panic path"
		fi
		echo "${obj#"$BUILD"/}: no panic path; calls only $(awk '{print $2}' <<<"$undef" | xargs)"
	done
}

# kvm-amd.ko's .text with CONFIG_KVM_AMD_SEV_RUST on (as built) and off,
# in the same tree; the next module build switches it back on.
text_size() { llvm-size -A "$1" | awk '$1 == ".text" { print $2 }'; }
size_delta() {
	local ko=$BUILD/module/arch/x86/kvm/kvm-amd.ko on off
	on=$(text_size "$ko")
	"$BUILD/src/scripts/config" --file "$BUILD/module/.config" -d KVM_AMD_SEV_RUST
	"${KMAKE[@]}" -s -C "$BUILD/src" O="$BUILD/module" olddefconfig
	"${KMAKE[@]}" -C "$BUILD/src" O="$BUILD/module" modules > "$BUILD/logs/build-module-off.log" 2>&1 ||
		die "the module config without KVM_AMD_SEV_RUST does not build (log: $BUILD/logs/build-module-off.log)"
	off=$(text_size "$ko")
	echo "kvm-amd.ko .text: $on bytes with KVM_AMD_SEV_RUST, $off without: $((on - off)) bytes more"
	echo "$on $off" > "$BUILD/logs/size-delta"
}

# The Rust validation against the C one, in a boot where time counts
# instructions (QEMU -icount shift=0, one CPU): printed, not asserted.
bench() {
	"$TOP/scripts/initramfs.sh" "$BUILD/initrd-bench.cpio.gz" "$BUILD/selftests"
	python3 "$TOP/scripts/run-tests.py" --kernel "$BUILD/test/arch/x86/boot/bzImage" \
		--initrd "$BUILD/initrd-bench.cpio.gz" --src "$BUILD/src" \
		--logdir "$BUILD/logs/bench" --json "$BUILD/logs/bench.json" \
		--suite kvm_sev_rs_bench --append kunit.filter_glob=kvm_sev_rs_bench \
		--qemu-arg=-icount --qemu-arg=shift=0 --qemu-arg=-smp --qemu-arg=1 \
		--timeout "${BOOT_TIMEOUT:-900}"
	grep -ho 'sev_rs: bench: .*' "$BUILD/logs/bench/console.log"
}

# The series may not break a selftest that passes on the base.
regression() {
	python3 - "$BUILD/logs/base.json" "$BUILD/logs/series.json" <<'PY'
import json, sys
base, series = (json.load(open(p))["selftests"] for p in sys.argv[1:])
bad = [t for t, s in base.items() if s == "SUCCESS" and series.get(t) != "SUCCESS"]
for t in sorted(base):
    print(f"  {t:28} base: {base[t]:8} series: {series.get(t, 'MISSING')}")
if bad:
    sys.exit(f"regression: {', '.join(bad)} passed on the base but not with the series")
print("selftests: nothing that passes on the base fails with the series")
PY
}

stage setup "$TOP/scripts/setup.sh"
stage expand "$TOP/scripts/expand.sh"
stage roundtrip roundtrip
stage checkpatch checkpatch
stage bisect-builds walk
stage module-clippy-rustfmt module_clippy
stage no-panic no_panic
stage size-delta size_delta
stage selftests-build "$TOP/scripts/selftests.sh" "$BUILD/src" "$BUILD/selftests" $(tests_of selftests series) > "$BUILD/logs/selftests.log"
stage uapi "$TOP/scripts/check-uapi.sh" "$BUILD/selftests-base/usr" "$BUILD/selftests/usr"
stage boot-base boot base "$BUILD/bzImage-base" "$BUILD/selftests-base"
stage boot-series boot series "$BUILD/test/arch/x86/boot/bzImage" "$BUILD/selftests"
stage regression regression
stage bench bench
if [ -x "$TOP/userspace/check.sh" ]; then
	stage userspace "$TOP/userspace/check.sh" "$BUILD/selftests/usr"
fi
echo "make check: all stages passed in $(( ($(date +%s) - start) / 60 )) min"
python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("kernel: %(passed)d passed, %(failed)d failed, %(skipped)d skipped" % r)' "$BUILD/logs/series.json"
grep -hoE 'sev_rs: (validation|whole path|reply table|hostile VMM): .*' "$BUILD/logs/series/console.log"
grep -ho 'sev_rs: bench: .*' "$BUILD/logs/bench/console.log"
sed -nE 's/^ok [0-9]+ (.*) # SKIP (.*)/skipped selftest \1: \2/p' "$BUILD/logs/series/selftests.ktap"
read -r on off < "$BUILD/logs/size-delta"
echo "kvm-amd.ko .text: $on bytes with KVM_AMD_SEV_RUST, $off without"
