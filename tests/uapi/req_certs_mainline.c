// SPDX-License-Identifier: GPL-2.0
/*
 * A VMM's view of KVM_EXIT_SNP_REQ_CERTS as mainline Linux 7.0 defines it,
 * compiled without this series' headers: the definitions below are
 * mainline's (include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h
 * after commits fa9893fadbc2 "KVM: Introduce KVM_EXIT_SNP_REQ_CERTS for SNP
 * certificate-fetching" and 20c3c4108d58 "KVM: SEV: Add
 * KVM_SEV_SNP_ENABLE_REQ_CERTS command"; the exit is 43 in 7.0, where 41 and
 * 42 are KVM_EXIT_ARM_SEA and KVM_EXIT_ARM_LDST64B), written out for the
 * parts this feature uses. req_certs_compat.c runs this code on a kvm_run
 * laid out by the series' headers.
 */
#include <stddef.h>
#include <stdint.h>

#include "req_certs_mainline.h"

typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;

#define KVM_EXIT_SNP_REQ_CERTS    43

struct kvm_exit_snp_req_certs {
	__u64 gpa;
	__u64 npages;
	__u64 ret;
};

/* x86's struct kvm_run up to the exit union, and the union's member. */
struct kvm_run {
	__u8 request_interrupt_window;
	__u8 immediate_exit;
	__u8 padding1[6];
	__u32 exit_reason;
	__u8 ready_for_interrupt_injection;
	__u8 if_flag;
	__u16 flags;
	__u64 cr8;
	__u64 apic_base;
	union {
		/* KVM_EXIT_SNP_REQ_CERTS */
		struct kvm_exit_snp_req_certs snp_req_certs;
		/* Fix the size of the union. */
		char padding[256];
	};
};

#define KVM_X86_GRP_SEV			1
#  define KVM_X86_SEV_SNP_REQ_CERTS	2

enum sev_cmd_id {
	KVM_SEV_SNP_LAUNCH_START = 100,
	KVM_SEV_SNP_LAUNCH_UPDATE,
	KVM_SEV_SNP_LAUNCH_FINISH,
	KVM_SEV_SNP_ENABLE_REQ_CERTS,
};

void mainline_numbers(struct mainline_numbers *n)
{
	n->exit_snp_req_certs = KVM_EXIT_SNP_REQ_CERTS;
	n->sev_snp_enable_req_certs = KVM_SEV_SNP_ENABLE_REQ_CERTS;
	n->grp_sev = KVM_X86_GRP_SEV;
	n->sev_snp_req_certs = KVM_X86_SEV_SNP_REQ_CERTS;
	n->size = sizeof(struct kvm_exit_snp_req_certs);
	n->run_offset = offsetof(struct kvm_run, snp_req_certs);
	n->gpa = offsetof(struct kvm_exit_snp_req_certs, gpa);
	n->npages = offsetof(struct kvm_exit_snp_req_certs, npages);
	n->ret = offsetof(struct kvm_exit_snp_req_certs, ret);
}

int mainline_read_exit(const void *page, uint64_t *gpa, uint64_t *npages, uint64_t *ret)
{
	const struct kvm_run *run = page;

	if (run->exit_reason != KVM_EXIT_SNP_REQ_CERTS)
		return -1;
	*gpa = run->snp_req_certs.gpa;
	*npages = run->snp_req_certs.npages;
	*ret = run->snp_req_certs.ret;
	return 0;
}

void mainline_answer(void *page, uint64_t ret, uint64_t npages)
{
	struct kvm_run *run = page;

	run->snp_req_certs.ret = ret;
	run->snp_req_certs.npages = npages;
	run->immediate_exit = 1;
}
