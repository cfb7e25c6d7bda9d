/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The parts of mainline Linux 7.0's uapi that a VMM needs for SEV-SNP
 * certificate requests (KVM_EXIT_SNP_REQ_CERTS), copied from the merged
 * headers: these definitions unchanged, everything else left out. bindgen input for
 * snp-certs/src/kvm7_bindings.rs (userspace/scripts/regen-bindings-7.0.sh).
 *
 * Sources (kvm-x86 "svm" branch, pulled for 7.0):
 *   fa9893fadbc245e179cb17f3c371c67471b5a8a8
 *     KVM: Introduce KVM_EXIT_SNP_REQ_CERTS for SNP certificate-fetching
 *   20c3c4108d58f87c711bf44cb0b498b3ac5af6bf
 *     KVM: SEV: Add KVM_SEV_SNP_ENABLE_REQ_CERTS command
 * The exit number: fa9893fadbc2 took 42; in mainline 7.0 arm64's
 * KVM_EXIT_ARM_LDST64B (f174a9ffcd48, "KVM: arm64: Add exit to userspace on
 * {LD,ST}64B* outside of memslots") holds 42 and KVM_EXIT_SNP_REQ_CERTS is
 * 43, as in the final include/uapi/linux/kvm.h (see userspace/README.md).
 */
#ifndef SNP_CERTS_UAPI_7_0_H
#define SNP_CERTS_UAPI_7_0_H

#include <linux/types.h>

/* include/uapi/linux/kvm.h */

struct kvm_exit_snp_req_certs {
	__u64 gpa;
	__u64 npages;
	__u64 ret;
};

#define KVM_EXIT_INTR             10
#define KVM_EXIT_SNP_REQ_CERTS    43

struct kvm_device_attr {
	__u32	flags;		/* no flags currently defined */
	__u32	group;		/* device-defined */
	__u64	attr;		/* group-defined */
	__u64	addr;		/* userspace address of attr data */
};

/* arch/x86/include/uapi/asm/kvm.h */

#define KVM_X86_GRP_SEV			1
#  define KVM_X86_SEV_VMSA_FEATURES	0
#  define KVM_X86_SNP_POLICY_BITS	1
#  define KVM_X86_SEV_SNP_REQ_CERTS	2

/* enum sev_cmd_id: the SNP members (the earlier ones are left out) */
enum sev_cmd_id {
	/* SNP-specific commands */
	KVM_SEV_SNP_LAUNCH_START = 100,
	KVM_SEV_SNP_LAUNCH_UPDATE,
	KVM_SEV_SNP_LAUNCH_FINISH,
	KVM_SEV_SNP_ENABLE_REQ_CERTS,

	KVM_SEV_NR_MAX,
};

struct kvm_sev_cmd {
	__u32 id;
	__u32 pad0;
	__u64 data;
	__u32 error;
	__u32 sev_fd;
};

#endif
