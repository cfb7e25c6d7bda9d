#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# check-uapi.sh BASE_HDRS SERIES_HDRS
# The uapi checks, on two "make headers_install" trees:
#  1. tests/uapi/vmgexit_layout.c, built as strict userspace C against the
#     series' headers, pins the kvm_user_vmgexit layout and uses every macro;
#     tests/uapi/req_certs_compat.c runs code built with mainline 7.0's
#     definitions of KVM_EXIT_SNP_REQ_CERTS on the series' kvm_run;
#  2. ABI: every struct in <linux/kvm.h> keeps its size, and every member of
#     struct kvm_run keeps its offset and size (pahole on DWARF). This stands
#     in for scripts/check-uapi.sh, which needs libabigail >= 2.4 (Debian 12
#     ships 2.2).
set -euo pipefail
. "$(dirname "$0")/common.sh"

base=$1 series=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

gcc -std=c11 -Wall -Wextra -Werror -pedantic -isystem "$series/include" \
	-o "$tmp/layout" "$TOP/tests/uapi/vmgexit_layout.c"
"$tmp/layout"

# Mainline 7.0's KVM_EXIT_SNP_REQ_CERTS: a VMM's code built with mainline's
# definitions (and none of the series' headers) against the series' kvm_run.
gcc -std=c11 -Wall -Wextra -Werror -pedantic -c -o "$tmp/mainline.o" \
	"$TOP/tests/uapi/req_certs_mainline.c"
gcc -std=c11 -Wall -Wextra -Werror -pedantic -isystem "$series/include" \
	-o "$tmp/req_certs" "$TOP/tests/uapi/req_certs_compat.c" "$tmp/mainline.o"
"$tmp/req_certs"

echo '#include <linux/kvm.h>' > "$tmp/kvm.c"
for side in base series; do
	dir=${!side}
	gcc -g -fno-eliminate-unused-debug-types -isystem "$dir/include" \
		-c -o "$tmp/$side.o" "$tmp/kvm.c"
	pahole -s "$tmp/$side.o" | awk '{print $1, $2}' | sort > "$tmp/$side.sizes"
	# kvm_run's members as "name offset size", from "type name; /* off size */".
	pahole -C kvm_run "$tmp/$side.o" |
		sed -n 's/^\s*\(.*[^ ]\)\s*;\s*\/\*\s*\([0-9]*\)\s*\([0-9]*\)\s*\*\/.*/\1 @\2 +\3/p' |
		sort > "$tmp/$side.kvm_run"
done
fail=0
if changed=$(comm -23 "$tmp/base.sizes" "$tmp/series.sizes") && [ -n "$changed" ]; then
	echo "uapi ABI: these structs changed size or vanished (base name/size):"
	echo "$changed"
	fail=1
fi
if moved=$(comm -23 "$tmp/base.kvm_run" "$tmp/series.kvm_run") && [ -n "$moved" ]; then
	echo "uapi ABI: these kvm_run members moved or changed:"
	echo "$moved"
	fail=1
fi
[ $fail = 0 ] || exit 1
echo "uapi ABI: $(wc -l < "$tmp/base.sizes") structs keep their size," \
     "$(wc -l < "$tmp/base.kvm_run") kvm_run members keep offset and size;" \
     "new: $(comm -13 "$tmp/base.sizes" "$tmp/series.sizes" | awk '{print $1}' | xargs)," \
     "kvm_run gains: $(comm -13 "$tmp/base.kvm_run" "$tmp/series.kvm_run" | xargs)"
