#!/usr/bin/env bash
# Development stand-in for the series' `make headers_install` output, for use
# until the kernel pipeline has expanded the series (then use its headers).
#
#   scripts/dev-headers.sh OUTDIR
#
# Takes include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h from
# /usr/src/linux-source-6.12.tar.xz (Debian's linux-source-6.12, the series'
# base version) and adds the series' uapi hunks, as the series has them:
#
#  - the seed's KVM_EXIT_VMGEXIT: KVM_EXIT_VMGEXIT 40, struct kvm_user_vmgexit
#    (with its explicit padding) before struct kvm_run, the `vmgexit` member of
#    the kvm_run exit union, KVM_CAP_EXIT_VMGEXIT 1024 (api.rst: a number of
#    this interface only, far above mainline's sequence);
#  - mainline 7.0's KVM_EXIT_SNP_REQ_CERTS beside it: KVM_EXIT_SNP_REQ_CERTS 43,
#    struct kvm_exit_snp_req_certs and the `snp_req_certs` union member (linux/
#    kvm.h); KVM_X86_SEV_SNP_REQ_CERTS 2 in the KVM_X86_GRP_SEV group and
#    KVM_SEV_SNP_ENABLE_REQ_CERTS after KVM_SEV_SNP_LAUNCH_FINISH in enum
#    sev_cmd_id (asm/kvm.h);
#
# runs the kernel's own scripts/headers_install.sh on both and writes
# OUTDIR/include/linux/kvm.h and OUTDIR/include/asm/kvm.h, with the 6.12 uapi
# headers they include that the system's linux-libc-dev may lack or have older
# (linux/const.h, linux/bits.h, linux/stddef.h); linux/types.h, linux/ioctl.h
# and asm-generic/ come from the system. The two kvm.h files are byte for byte
# those of the series' headers_install (compare with diff); check.sh checks the
# bindings against this stand-in when it is given no HEADER_DIR.
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
    linux-source-6.12/include/uapi/linux/const.h \
    linux-source-6.12/include/uapi/linux/bits.h \
    linux-source-6.12/include/uapi/linux/stddef.h \
    linux-source-6.12/arch/x86/include/uapi/asm/kvm.h \
    linux-source-6.12/scripts/headers_install.sh \
    linux-source-6.12/scripts/unifdef.c
src="$work/linux-source-6.12"
python3 - "$src/include/uapi/linux/kvm.h" "$src/arch/x86/include/uapi/asm/kvm.h" <<'PY'
import sys

def once(s, old, new):
    if s.count(old) != 1:
        sys.exit("dev-headers: anchor not found exactly once: %r" % old)
    return s.replace(old, new)

def after(s, anchor, text):
    return once(s, anchor, anchor + text)

def before(s, anchor, text):
    return once(s, anchor, text + anchor)

# include/uapi/linux/kvm.h
p = sys.argv[1]
s = open(p).read()
s = after(s, "#define KVM_EXIT_MEMORY_FAULT     39\n",
          "#define KVM_EXIT_VMGEXIT          40\n"
          "/* Mainline's number: 41 and 42 are taken there (KVM_EXIT_ARM_SEA, _LDST64B). */\n"
          "#define KVM_EXIT_SNP_REQ_CERTS    43\n")
s = before(s, "/*\n * struct kvm_run can be modified by userspace at any time,", """\
/* KVM_EXIT_VMGEXIT */
struct kvm_user_vmgexit {
#define KVM_USER_VMGEXIT_REQ_CERTS\t\t1
\t__u32 type; /* KVM_USER_VMGEXIT_* type */
\t__u32 pad;
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
\t\t\t__u8 pad[2];
\t\t} req_certs;
\t};
};

/* KVM_EXIT_SNP_REQ_CERTS */
struct kvm_exit_snp_req_certs {
\t__u64 gpa;
\t__u64 npages;
\t__u64 ret;
};

""")
s = after(s, "\t\t} memory_fault;\n",
          "\t\t/* KVM_EXIT_VMGEXIT */\n"
          "\t\tstruct kvm_user_vmgexit vmgexit;\n"
          "\t\t/* KVM_EXIT_SNP_REQ_CERTS */\n"
          "\t\tstruct kvm_exit_snp_req_certs snp_req_certs;\n")
s = after(s, "#define KVM_CAP_X86_GUEST_MODE 238\n",
          "/* Not in mainline's sequence: see KVM_CAP_EXIT_VMGEXIT in api.rst */\n"
          "#define KVM_CAP_EXIT_VMGEXIT 1024\n")
open(p, "w").write(s)

# arch/x86/include/uapi/asm/kvm.h
p = sys.argv[2]
s = open(p).read()
s = after(s, "#  define KVM_X86_SEV_VMSA_FEATURES\t0\n",
          "/* 1 is mainline's KVM_X86_SNP_POLICY_BITS, which 6.12 does not have. */\n"
          "#  define KVM_X86_SEV_SNP_REQ_CERTS\t2\n")
s = after(s, "\tKVM_SEV_SNP_LAUNCH_FINISH,\n", "\tKVM_SEV_SNP_ENABLE_REQ_CERTS,\n")
open(p, "w").write(s)
PY
cc -O1 -o "$src/scripts/unifdef" "$src/scripts/unifdef.c"
mkdir -p "$out/include/linux" "$out/include/asm"
dest="$(cd "$out" && pwd)/include"
install_one() { # uapi source (relative to $src), destination (relative to $dest)
    (cd "$src" && bash scripts/headers_install.sh "$1" "$dest/$2")
}
install_one include/uapi/linux/kvm.h linux/kvm.h
install_one arch/x86/include/uapi/asm/kvm.h asm/kvm.h
for h in const.h bits.h stddef.h; do
    install_one "include/uapi/linux/$h" "linux/$h"
done
echo "dev-headers: wrote $out/include/linux/kvm.h, $out/include/asm/kvm.h (and linux/const.h, bits.h, stddef.h)"
