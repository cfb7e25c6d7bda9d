// SPDX-License-Identifier: GPL-2.0
/*
 * Mainline 7.0's KVM_EXIT_SNP_REQ_CERTS against this series' headers: the
 * numbers and the layout that a VMM built with mainline's headers
 * (req_certs_mainline.c) uses must be the series' own, and that VMM's code
 * must read the series' exit and write an answer where the series reads it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kvm.h>

#include "req_certs_mainline.h"

static int failed;

#define SAME(what, mainline, series) do {					\
	unsigned long long m_ = (mainline), s_ = (series);			\
	if (m_ != s_) {								\
		printf("uapi mainline 7.0: %s: mainline %llu, series %llu\n",	\
		       what, m_, s_);						\
		failed = 1;							\
	}									\
} while (0)

int main(void)
{
	struct mainline_numbers n;
	uint64_t gpa, npages, ret;
	struct kvm_run *run;

	mainline_numbers(&n);
	SAME("KVM_EXIT_SNP_REQ_CERTS", n.exit_snp_req_certs, KVM_EXIT_SNP_REQ_CERTS);
	SAME("KVM_SEV_SNP_ENABLE_REQ_CERTS", n.sev_snp_enable_req_certs,
	     KVM_SEV_SNP_ENABLE_REQ_CERTS);
	SAME("KVM_X86_GRP_SEV", n.grp_sev, KVM_X86_GRP_SEV);
	SAME("KVM_X86_SEV_SNP_REQ_CERTS", n.sev_snp_req_certs, KVM_X86_SEV_SNP_REQ_CERTS);
	SAME("sizeof(struct kvm_exit_snp_req_certs)", n.size,
	     sizeof(struct kvm_exit_snp_req_certs));
	SAME("offsetof(struct kvm_run, snp_req_certs)", n.run_offset,
	     offsetof(struct kvm_run, snp_req_certs));
	SAME("offsetof(gpa)", n.gpa, offsetof(struct kvm_exit_snp_req_certs, gpa));
	SAME("offsetof(npages)", n.npages, offsetof(struct kvm_exit_snp_req_certs, npages));
	SAME("offsetof(ret)", n.ret, offsetof(struct kvm_exit_snp_req_certs, ret));

	/* The series' exit, as KVM writes it, through mainline's code and back. */
	run = calloc(1, sizeof(*run));
	if (!run)
		return 2;
	memset(run, 0xa5, sizeof(*run));
	run->immediate_exit = 0;
	run->exit_reason = KVM_EXIT_SNP_REQ_CERTS;
	run->snp_req_certs.gpa = 0x123000;
	run->snp_req_certs.npages = 4;
	run->snp_req_certs.ret = 0;
	if (mainline_read_exit(run, &gpa, &npages, &ret)) {
		printf("uapi mainline 7.0: mainline's code does not see the exit\n");
		failed = 1;
	} else {
		SAME("exit gpa", gpa, 0x123000);
		SAME("exit npages", npages, 4);
		SAME("exit ret", ret, 0);
	}
	mainline_answer(run, 28 /* ENOSPC */, 9);
	SAME("answer ret", run->snp_req_certs.ret, 28);
	SAME("answer npages", run->snp_req_certs.npages, 9);
	SAME("answer immediate_exit", run->immediate_exit, 1);
	SAME("exit reason kept", run->exit_reason, KVM_EXIT_SNP_REQ_CERTS);
	free(run);

	if (failed)
		return 1;
	printf("uapi mainline 7.0: KVM_EXIT_SNP_REQ_CERTS %u, KVM_SEV_SNP_ENABLE_REQ_CERTS %u, KVM_X86_SEV_SNP_REQ_CERTS %u, struct kvm_exit_snp_req_certs %zu bytes at kvm_run+%zu: same numbers and layout as the series\n",
	       n.exit_snp_req_certs, n.sev_snp_enable_req_certs, n.sev_snp_req_certs, n.size,
	       n.run_offset);
	return 0;
}
