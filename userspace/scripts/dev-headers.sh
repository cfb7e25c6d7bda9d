#!/usr/bin/env bash
# Development stand-in for the series' `make headers_install` output, for use
# until the kernel pipeline has expanded the series (then use its headers).
#
#   scripts/dev-headers.sh OUTDIR
#
# Takes include/uapi/linux/kvm.h from /usr/src/linux-source-6.12.tar.xz (Debian's
# linux-source-6.12), adds the seed's KVM_EXIT_VMGEXIT uapi (struct
# kvm_user_vmgexit before struct kvm_run, KVM_EXIT_VMGEXIT 40, KVM_CAP_EXIT_VMGEXIT
# 1024 (api.rst 7.37: a number of this interface only, far above mainline's
# sequence), the `vmgexit` member of the kvm_run exit union), runs the kernel's own
# scripts/headers_install.sh on it and writes OUTDIR/include/linux/kvm.h
# (asm/ and the other linux/ headers come from the system's linux-libc-dev).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
tarball=/usr/src/linux-source-6.12.tar.xz
if [ ! -f "$tarball" ]; then
    echo "dev-headers: $tarball missing (apt-get install linux-source-6.12)" >&2
    exit 2
fi
out="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -xJf "$tarball" -C "$work" \
    linux-source-6.12/include/uapi/linux/kvm.h \
    linux-source-6.12/scripts/headers_install.sh \
    linux-source-6.12/scripts/unifdef.c
src="$work/linux-source-6.12"
python3 - "$src/include/uapi/linux/kvm.h" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
struct = """/* KVM_EXIT_VMGEXIT */
struct kvm_user_vmgexit {
#define KVM_USER_VMGEXIT_REQ_CERTS\t\t1
\t__u32 type; /* KVM_USER_VMGEXIT_* type */
\tunion {
\t\tstruct {
\t\t\t__u64 data_gpa;
\t\t\t__u64 data_npages;
#define KVM_USER_VMGEXIT_REQ_CERTS_ERROR_INVALID_LEN\t1
#define KVM_USER_VMGEXIT_REQ_CERTS_ERROR_BUSY\t\t2
#define KVM_USER_VMGEXIT_REQ_CERTS_ERROR_GENERIC\t(1U << 31)
\t\t\t__u32 ret;
#define KVM_USER_VMGEXIT_REQ_CERTS_FLAGS_NOTIFY_DONE\t(1 << 0)
\t\t\t__u8 flags;
#define KVM_USER_VMGEXIT_REQ_CERTS_STATUS_PENDING\t0
#define KVM_USER_VMGEXIT_REQ_CERTS_STATUS_DONE\t\t1
\t\t\t__u8 status;
\t\t} req_certs;
\t};
};

"""
def once(old, new):
    global s
    if s.count(old) != 1:
        sys.exit("dev-headers: anchor not found exactly once: %r" % old)
    s = s.replace(old, new)
a = "/* for KVM_RUN, returned by mmap(vcpu_fd, offset=0) */\nstruct kvm_run {"
once(a, struct + a)
a = "#define KVM_EXIT_MEMORY_FAULT     39\n"
once(a, a + "#define KVM_EXIT_VMGEXIT          40\n")
a = "#define KVM_CAP_X86_GUEST_MODE 238\n"
once(a, a + "#define KVM_CAP_EXIT_VMGEXIT 1024\n")
a = "\t\t} memory_fault;\n\t\t/* Fix the size of the union. */"
once(a, "\t\t} memory_fault;\n\t\t/* KVM_EXIT_VMGEXIT */\n\t\tstruct kvm_user_vmgexit vmgexit;\n\t\t/* Fix the size of the union. */")
open(p, "w").write(s)
PY
cc -O1 -o "$src/scripts/unifdef" "$src/scripts/unifdef.c"
mkdir -p "$out/include/linux"
(cd "$src" && bash scripts/headers_install.sh include/uapi/linux/kvm.h "$(cd "$OLDPWD" && cd "$out" && pwd)/include/linux/kvm.h")
echo "dev-headers: wrote $out/include/linux/kvm.h"
