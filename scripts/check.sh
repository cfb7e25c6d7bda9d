#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# "make check": every test and check of the series and the userspace crate.
# Each stage prints its time; the first failing stage stops the run.
set -euo pipefail
. "$(dirname "$0")/common.sh"

start=$(date +%s)
mkdir -p "$BUILD/logs"

# Expanding patches/ and exporting again must reproduce patches/: exactly on
# the pinned base, and in content (normalize_patch) on another one, where
# the index lines and hunk positions are the new base's.
roundtrip() {
	local tmp version p
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
	version=$(git -C "$WORK" config series.base-version)
	if [ "$version" = "$TESTED_BASE_VERSION" ]; then
		if ! diff -ru "$PATCHES" "$tmp/out"; then
			rm -rf "$tmp"
			die "expanding and exporting patches/ changes it (diff above)"
		fi
		echo "round trip: $(ls "$tmp/out" | wc -l) files, no difference"
	else
		mkdir "$tmp/a" "$tmp/b"
		for p in "$PATCHES"/*.patch; do normalize_patch "$p" > "$tmp/a/${p##*/}"; done
		for p in "$tmp"/out/*.patch; do normalize_patch "$p" > "$tmp/b/${p##*/}"; done
		if ! diff -ru "$tmp/a" "$tmp/b"; then
			rm -rf "$tmp"
			die "expanding patches/ onto $version and exporting it changes the series' content (diff above)"
		fi
		echo "NOTE: round trip on $version, not the pinned $TESTED_BASE_VERSION: the series' content (messages, files, added and removed lines) is unchanged; index lines and hunk positions are the new base's ('make rebase' moves the pin)"
	fi
	rm -rf "$tmp"
}

# Every patch is signed off by its author, and no placeholder identity is
# left anywhere in patches/ (From, Signed-off-by, MAINTAINERS).
signoffs() {
	local p author bad=0
	if grep -nE '[A-Za-z0-9.-]+@([A-Za-z0-9.-]*\.)?example\.(org|com|net)|@localhost' "$PATCHES"/*.patch; then
		echo "placeholder addresses in patches/ (above)"
		bad=1
	fi
	for p in $(series_patches); do
		# The From: header as git am reads it (it may be folded).
		author=$(python3 -c 'import email, sys
print(" ".join(email.message_from_file(open(sys.argv[1]))["From"].split()))' "$p")
		grep -qxF "Signed-off-by: $author" "$p" ||
			{ echo "$(basename "$p"): no Signed-off-by of its author $author"; bad=1; }
	done
	[ $bad = 0 ] && echo "sign-offs: every patch signed off by its author; no placeholder address"
	return $bad
}

# The series' build rules may pass rustc nothing unstable that 6.12's own
# rust/Makefile does not: no --env-set (rustc has dropped it), and no -Z
# flag beyond rust/Makefile's.
rustc_flags() {
	local added base_z z bad=0
	added=$(git -C "$WORK" diff base series -- '*Makefile*' '*Kbuild*' '*.mk' | grep -E '^\+' || true)
	if grep -n -- '--env-set' <<<"$added"; then
		echo "--env-set in the series' build rules (above): rustc has removed it; pass the variable in rustc's environment"
		bad=1
	fi
	base_z=$(git -C "$WORK" show base:rust/Makefile | grep -oE -- '-Z[A-Za-z0-9_-]+' | sort -u)
	for z in $(grep -oE -- '-Z[A-Za-z0-9_-]+' <<<"$added" | sort -u); do
		grep -qxF -- "$z" <<<"$base_z" ||
			{ echo "$z: a -Z flag that 6.12's rust/Makefile does not use"; bad=1; }
	done
	[ $bad = 0 ] && echo "rustc flags: no --env-set, no -Z flag beyond 6.12's rust/Makefile"
	return $bad
}

# The KVM_RUN completion step that sev_rs_test.c copies is still x86.c's.
kvm_run_copy() {
	git -C "$WORK" show series:arch/x86/kvm/x86.c | python3 "$TOP/scripts/check-kvm-run-copy.py"
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

# Build results are cached in build/cache/KEY/ (build_key in common.sh: the
# source tree at that commit, the config fragments, the toolchain and the
# build scripts): "warnings" holds the distinct warnings the build printed,
# and the directory exists only if the build succeeded. A build tree OUT
# that holds the output of the build KEY has OUT.key = KEY.
CACHE=$BUILD/cache
cached() { [ -f "$CACHE/$1/warnings" ]; }
holds() { [ "$(cat "$1.key" 2>/dev/null)" = "$2" ]; }

# build_rev WHAT REV KEY LOG: check REV out and build the test kernel in
# build/test, then cache the result under KEY.
build_rev() {
	src_at "$2"
	build_logged "$1" "$4" "$BUILD/test" "${TEST_CONFIG[@]}"
	mkdir -p "$CACHE/$3"
	warnings "$4" > "$CACHE/$3/warnings"
	echo "$3" > "$BUILD/test.key"
}

# new_warnings KEY: the warnings of build KEY that the base does not have.
new_warnings() { comm -23 "$CACHE/$1/warnings" "$BUILD/warnings-base"; }

# Build the test kernel at the base and after each patch (incrementally):
# every patch must build on its own and add no compiler warning. Along the
# way keep what later stages compare against: the base kernel, selftests,
# headers and documentation warnings. A build whose key is cached is not
# repeated (its warnings are checked again); build/src is moved only for a
# build that runs, because every file a checkout rewrites is rebuilt later.
walk() {
	local rev n=0 changed log key skey dkey kernel_rev=base kernel_key
	key=$(build_key base "${TEST_CONFIG[@]}")
	if cached "$key" && [ -f "$BUILD/bzImage-base" ] && holds "$BUILD/bzImage-base" "$key"; then
		echo "base: reused build $key (warnings, bzImage-base)"
	else
		log=$BUILD/logs/build-base.log
		build_rev "the base" base "$key" "$log"
		cp "$BUILD/test/arch/x86/boot/bzImage" "$BUILD/bzImage-base"
		echo "$key" > "$BUILD/bzImage-base.key"
	fi
	touch "$BUILD/warnings-base"
	# An incremental base build shows only some of the base's warnings, so
	# keep those of earlier runs as well.
	sort -u "$CACHE/$key/warnings" "$BUILD/warnings-base" > "$BUILD/warnings-base.new"
	mv "$BUILD/warnings-base.new" "$BUILD/warnings-base"
	kernel_key=$key
	skey=$(build_key base "$TOP/scripts/selftests.sh" "$TOP/tests/selftests.list" <(gcc --version))
	if [ -d "$BUILD/selftests-base" ] && holds "$BUILD/selftests-base" "$skey"; then
		echo "base selftests: reused build $skey"
	else
		src_at base
		rm -f "$BUILD/selftests-base.key"
		"$TOP/scripts/selftests.sh" "$BUILD/src" "$BUILD/selftests-base" $(tests_of selftests base) \
			> "$BUILD/logs/selftests-base.log" 2>&1 || die "base selftests do not build"
		echo "$skey" > "$BUILD/selftests-base.key"
	fi
	docs base
	echo "base: built ($(wc -l < "$BUILD/warnings-base") distinct warnings known in the base itself)"
	for rev in $(git -C "$WORK" rev-list --reverse base..series); do
		n=$((n + 1))
		changed=$(git -C "$WORK" diff-tree --no-commit-id --name-only -r "$rev")
		if ! grep -qvE '^(Documentation|tools)/|^MAINTAINERS$' <<<"$changed"; then
			echo "patch $n: touches only Documentation/, tools/ or MAINTAINERS: no kernel rebuild"
			continue
		fi
		key=$(build_key "$rev" "${TEST_CONFIG[@]}")
		kernel_rev=$rev kernel_key=$key
		if cached "$key"; then
			what="reused build $key"
		else
			what="built"
			build_rev "patch $n ($(git -C "$WORK" log -1 --format=%s "$rev"))" "$rev" "$key" \
				"$BUILD/logs/build-$n.log"
		fi
		if new=$(new_warnings "$key") && [ -n "$new" ]; then
			echo "$new"
			die "patch $n adds build warnings (log: $BUILD/logs/build-$n.log)"
		fi
		echo "patch $n: $what, no new warning: $(git -C "$WORK" log -1 --format=%s "$rev")"
	done
	# Later stages use build/src at the tip of the series and build/test
	# holding the series kernel (the last patch that touches the kernel).
	src_at series
	if holds "$BUILD/test" "$kernel_key"; then
		echo "series kernel: build/test holds build $kernel_key, reused"
	else
		build_rev "the series kernel" series "$kernel_key" "$BUILD/logs/build-series.log"
		if new=$(new_warnings "$kernel_key") && [ -n "$new" ]; then
			echo "$new"
			die "the series adds build warnings (log: $BUILD/logs/build-series.log)"
		fi
		echo "series kernel: built in build/test, no new warning"
	fi
	docs series
}

# htmldocs of Documentation/virt: the series may add no warning. The
# warnings of a tree are cached by its key (sphinx version included).
docs() {
	local log=$BUILD/logs/docs-$1.log key
	key=docs-$(build_key "$1" <(sphinx-build --version) <(declare -f docs))
	if cached "$key"; then
		echo "htmldocs ($1): reused result $key"
	else
		src_at "$1"
		"${KMAKE[@]}" -C "$BUILD/src" O="$BUILD/docs" SPHINXDIRS=virt htmldocs > "$log" 2>&1 ||
			{ tail -20 "$log"; die "htmldocs failed at $1 (log: $log)"; }
		mkdir -p "$CACHE/$key"
		{ grep -E 'WARNING|ERROR' "$log" || true; } | sed -E "s|$BUILD/src/||; s/:[0-9]+:/:/" | sort > "$CACHE/$key/warnings"
	fi
	cp "$CACHE/$key/warnings" "$BUILD/logs/docs-warnings-$1"
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
no_panic_in() {
	local obj undef
	for obj in "$@"; do
		[ -f "$obj" ] || die "$obj was not built"
		undef=$(llvm-nm -u "$obj")
		# Raw (mangled) and demangled names, so either spelling matches.
		if grep -Ei "$PANIC_SYMBOLS" <<<"$undef"$'\n'"$(llvm-nm -u -C "$obj")"; then
			die "${obj#"$BUILD"/} references a panic path"
		fi
		echo "${obj#"$BUILD"/}: no panic path; calls only $(awk '{print $2}' <<<"$undef" | xargs)"
	done
}
no_panic() {
	no_panic_in "$BUILD/test/arch/x86/kvm/svm/sev_rs.o" "$BUILD/module/arch/x86/kvm/svm/sev_rs.o"
}

# Debian's amd64 config of the base version with configs/distro.config
# (LLVM, Rust, the series' option). For CI, every module but the KVM/SEV
# stack (which distro.config turns on again) is dropped, and only what the
# series' KVM code needs is built: prepare (the Rust crates among it) and
# arch/x86/kvm/.
DEBIAN_CONFIG=/usr/src/linux-config-6.12/config.amd64_none_amd64.xz
# distro_build WHAT SRC OUT LOG KEY [FRAGMENT...]: build SRC into OUT with
# configs/distro.config and the FRAGMENTs, cache the warnings (source paths
# removed) under KEY.
distro_build() {
	BASE_CONFIG=$BUILD/distro-ci.config "$TOP/scripts/build.sh" "$2" "$3" \
		"$TOP/configs/distro.config" "${@:6}" -- prepare arch/x86/kvm/ > "$4" 2>&1 ||
		{ tail -40 "$4"; die "$1 does not build with the distro config (log: $4)"; }
	mkdir -p "$CACHE/$5"
	warnings "$4" | sed "s|$2/||g" | sort -u > "$CACHE/$5/warnings"
	echo "$5" > "$3.key"
}
distro() {
	local bkey skey new
	xzcat "$DEBIAN_CONFIG" | sed -E 's/^(CONFIG_[A-Za-z0-9_]+)=m$/# \1 is not set/' > "$BUILD/distro-ci.config"
	bkey=distro-$(build_key base "$BUILD/distro-ci.config" "$TOP/configs/distro.config")
	skey=distro-$(build_key series "$BUILD/distro-ci.config" "$TOP/configs/distro.config")
	if cached "$bkey" && holds "$BUILD/distro-base" "$bkey"; then
		echo "distro config, base: build/distro-base holds build $bkey, reused"
	else
		# From the pristine base tree (build/base), so that build/src
		# stays at the series and nothing of it is rebuilt.
		distro_build "the base" "$BASE_DIR" "$BUILD/distro-base" "$BUILD/logs/build-distro-base.log" "$bkey"
		echo "distro config, base: built"
	fi
	if cached "$skey" && holds "$BUILD/distro" "$skey"; then
		echo "distro config, series: build/distro holds build $skey, reused"
	else
		distro_build "the series" "$BUILD/src" "$BUILD/distro" "$BUILD/logs/build-distro.log" "$skey"
		echo "distro config, series: built"
	fi
	if new=$(comm -23 "$CACHE/$skey/warnings" "$CACHE/$bkey/warnings") && [ -n "$new" ]; then
		echo "$new"
		die "the series adds warnings under the distro config (log: $BUILD/logs/build-distro.log)"
	fi
	echo "distro config: prepare and arch/x86/kvm/ build, no new warning ($(wc -l < "$CACHE/$skey/warnings") with the series, $(wc -l < "$CACHE/$bkey/warnings") in the base)"
	no_panic_in "$BUILD/distro/arch/x86/kvm/svm/sev_rs.o"
}

# The series with its option off under the distro config (the C checks
# where production runs them), in a copy of build/distro so that only what
# the option touches is rebuilt; then the instructions of a valid VMGEXIT
# from sev_handle_vmgexit() to the dispatch in the option-on, option-off
# and base kvm-amd.o, counted in an emulator (scripts/production-path.py).
production() {
	local key off=$BUILD/distro-off
	printf '# CONFIG_KVM_AMD_SEV_RUST is not set\n' > "$BUILD/option-off.config"
	key=distro-off-$(build_key series "$BUILD/distro-ci.config" "$TOP/configs/distro.config" "$BUILD/option-off.config")
	if cached "$key" && holds "$off" "$key"; then
		echo "distro config, option off: build/distro-off holds build $key, reused"
	else
		rm -rf "$off"
		cp -a "$BUILD/distro" "$off"
		# Not built with the option off: leave no stale copy behind.
		rm -f "$off"/arch/x86/kvm/svm/{sev_rs.o,.sev_rs.o.cmd}
		distro_build "the series with its option off" "$BUILD/src" "$off" \
			"$BUILD/logs/build-distro-off.log" "$key" "$BUILD/option-off.config"
		echo "distro config, option off: built"
	fi
	! llvm-nm "$off/arch/x86/kvm/svm/sev.o" | grep -w sev_es_vmgexit_check_rust ||
		die "build/distro-off: sev.o calls the Rust checks with the option off"
	[ -x "$VENV/bin/python" ] || die "no $VENV: run scripts/setup.sh"
	"$VENV/bin/python" "$TOP/scripts/production-path.py" "C=$off:$BUILD/src" \
		"Rust=$BUILD/distro:$BUILD/src" "base=$BUILD/distro-base:$BASE_DIR" |
		tee "$BUILD/logs/production"
}

# The test kernel with KASAN, UBSAN, lockdep, might-sleep checks and KFENCE
# (configs/debug.config), at the tip of the series.
debug_build() {
	build_logged "the debug config" "$BUILD/logs/build-debug.log" "$BUILD/debug" \
		"${TEST_CONFIG[@]}" "$TOP/configs/debug.config"
	echo "debug config: built with $(grep -oE '^CONFIG_(KASAN_GENERIC|UBSAN|PROVE_LOCKING|DEBUG_ATOMIC_SLEEP|KFENCE)=y' "$BUILD/debug/.config" | sed 's/=y//; s/CONFIG_//' | xargs)"
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

# The bench measures C, Rust and an empty run through one indirect call in
# each noinline runner of sev_rs_test.c: fail if a runner calls a check (or
# the empty stub) directly, or has other than one indirect call site, in
# the object the bench boots.
BENCH_RUNNERS=(sev_rs_bench_run sev_rs_bench_valid_run)
call_form() {
	local obj=$1 f dis n
	for f in "${BENCH_RUNNERS[@]}"; do
		dis=$(llvm-objdump -dr --no-show-raw-insn --disassemble-symbols="$f" "$obj" 2>&1)
		grep -q "<$f>:" <<<"$dis" || { echo "$f: not a function of ${obj#"$BUILD"/} (inlined?)"; return 1; }
		# call *REG / call *MEM, or the retpoline thunk that stands for one.
		n=$(grep -cE 'call[lq]?[[:space:]]+\*|R_X86_64_[A-Z0-9]+[[:space:]]+__x86_indirect_(call_)?thunk' <<<"$dis" || true)
		if [ "$n" != 1 ] || grep -E 'R_X86_64_[A-Z0-9]+[[:space:]]+(sev_es_vmgexit_check(_rust)?|sev_rs_bench_nothing)' <<<"$dis"; then
			echo "$dis"
			echo "$f: the measured call is not one indirect call site shared by C, Rust and the empty run"
			return 1
		fi
	done
	echo "call form: same (${BENCH_RUNNERS[*]}: one indirect call each, for C, Rust and the empty run)"
}

# The Rust validation against the C one, in a boot where time counts
# instructions (QEMU -icount shift=0, one CPU): printed, not asserted.
bench() {
	call_form "$BUILD/test/arch/x86/kvm/svm/sev.o"
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
stage signoffs signoffs
stage rustc-flags rustc_flags
stage kvm-run-copy kvm_run_copy
stage checkpatch checkpatch
stage bisect-builds walk
stage distro distro
stage production production
stage module-clippy-rustfmt module_clippy
stage no-panic no_panic
stage size-delta size_delta
stage selftests-build "$TOP/scripts/selftests.sh" "$BUILD/src" "$BUILD/selftests" $(tests_of selftests series) > "$BUILD/logs/selftests.log"
stage uapi "$TOP/scripts/check-uapi.sh" "$BUILD/selftests-base/usr" "$BUILD/selftests/usr"
stage boot-base boot base "$BUILD/bzImage-base" "$BUILD/selftests-base"
stage boot-series boot series "$BUILD/test/arch/x86/boot/bzImage" "$BUILD/selftests"
stage regression regression
stage debug-build debug_build
stage boot-debug boot debug "$BUILD/debug/arch/x86/boot/bzImage" "$BUILD/selftests"
stage bench bench
if [ -x "$TOP/userspace/check.sh" ]; then
	stage userspace "$TOP/userspace/check.sh" "$BUILD/selftests/usr"
fi
echo "make check: all stages passed in $(( ($(date +%s) - start) / 60 )) min"
python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("kernel: %(passed)d passed, %(failed)d failed, %(skipped)d skipped" % r)' "$BUILD/logs/series.json"
python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("debug kernel (KASAN, UBSAN, lockdep, KFENCE): %(passed)d passed, %(failed)d failed, %(skipped)d skipped" % r)' "$BUILD/logs/debug.json"
grep -hoE 'sev_rs: (validation|whole path|reply table|hostile VMM|snp_req_certs path|snp_req_certs reply table|snp_req_certs hostile VMM): .*' "$BUILD/logs/series/console.log"
grep -ho 'sev_rs: bench: .*' "$BUILD/logs/bench/console.log"
grep '^production:' "$BUILD/logs/production"
sed -nE 's/^ *ok [0-9]+ (.*) # SKIP (.*)/skipped selftest \1: \2/p' "$BUILD/logs/series/selftests.ktap"
read -r on off < "$BUILD/logs/size-delta"
echo "kvm-amd.ko .text: $on bytes with KVM_AMD_SEV_RUST, $off without"
