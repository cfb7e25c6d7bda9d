// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace check of the KVM_EXIT_VMGEXIT uapi: compiled against the
 * series' "make headers_install" output as plain C, it pins the layout of
 * struct kvm_user_vmgexit and its place in struct kvm_run to the values of
 * the SNP host series, and uses every macro the way a VMM would.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <linux/kvm.h>

#define CHECK_EQ(expr, want) _Static_assert((expr) == (want), #expr " == " #want)

CHECK_EQ(sizeof(struct kvm_user_vmgexit), 32);
CHECK_EQ(offsetof(struct kvm_user_vmgexit, type), 0);
CHECK_EQ(offsetof(struct kvm_user_vmgexit, pad), 4);
CHECK_EQ(offsetof(struct kvm_user_vmgexit, req_certs.data_gpa), 8);
CHECK_EQ(offsetof(struct kvm_user_vmgexit, req_certs.data_npages), 16);
CHECK_EQ(offsetof(struct kvm_user_vmgexit, req_certs.ret), 24);
CHECK_EQ(offsetof(struct kvm_user_vmgexit, req_certs.flags), 28);
CHECK_EQ(offsetof(struct kvm_user_vmgexit, req_certs.status), 29);
CHECK_EQ(offsetof(struct kvm_user_vmgexit, req_certs.pad), 30);
CHECK_EQ(sizeof(((struct kvm_user_vmgexit *)0)->req_certs.pad), 2);
CHECK_EQ(sizeof(((struct kvm_user_vmgexit *)0)->req_certs.ret), 4);
CHECK_EQ(sizeof(((struct kvm_user_vmgexit *)0)->req_certs.flags), 1);
CHECK_EQ(sizeof(((struct kvm_user_vmgexit *)0)->req_certs.status), 1);
CHECK_EQ(offsetof(struct kvm_run, vmgexit), 32);
CHECK_EQ(offsetof(struct kvm_run, vmgexit), offsetof(struct kvm_run, hw));
CHECK_EQ(sizeof(struct kvm_run), 2352);
CHECK_EQ(KVM_EXIT_VMGEXIT, 40);
CHECK_EQ(KVM_CAP_EXIT_VMGEXIT, 1024);
CHECK_EQ(KVM_USER_VMGEXIT_REQ_CERTS, 1);
CHECK_EQ(KVM_USER_VMGEXIT_REQ_CERTS_ERROR_INVALID_LEN, 1);
CHECK_EQ(KVM_USER_VMGEXIT_REQ_CERTS_ERROR_BUSY, 2);
CHECK_EQ(KVM_USER_VMGEXIT_REQ_CERTS_ERROR_GENERIC, 0x80000000u);
CHECK_EQ(KVM_USER_VMGEXIT_REQ_CERTS_FLAGS_NOTIFY_DONE, 1);
CHECK_EQ(KVM_USER_VMGEXIT_REQ_CERTS_STATUS_PENDING, 0);
CHECK_EQ(KVM_USER_VMGEXIT_REQ_CERTS_STATUS_DONE, 1);

/* A VMM's answer to a pending request, as it would write it into kvm_run. */
static void answer(struct kvm_run *run, __u64 have_pages, __u64 need_pages)
{
	if (run->exit_reason != KVM_EXIT_VMGEXIT ||
	    run->vmgexit.type != KVM_USER_VMGEXIT_REQ_CERTS ||
	    run->vmgexit.req_certs.status != KVM_USER_VMGEXIT_REQ_CERTS_STATUS_PENDING)
		return;	/* e.g. the DONE exit: KVM reads no answer */
	if (have_pages < need_pages) {
		run->vmgexit.req_certs.data_npages = need_pages;
		run->vmgexit.req_certs.ret = KVM_USER_VMGEXIT_REQ_CERTS_ERROR_INVALID_LEN;
		return;
	}
	run->vmgexit.req_certs.ret = 0;
	run->vmgexit.req_certs.flags |= KVM_USER_VMGEXIT_REQ_CERTS_FLAGS_NOTIFY_DONE;
}

int main(void)
{
	static struct kvm_run run;
	int failures = 0;

	run.exit_reason = KVM_EXIT_VMGEXIT;
	run.vmgexit.type = KVM_USER_VMGEXIT_REQ_CERTS;
	run.vmgexit.req_certs.data_gpa = 0x100000;
	run.vmgexit.req_certs.data_npages = 1;
	run.vmgexit.req_certs.status = KVM_USER_VMGEXIT_REQ_CERTS_STATUS_PENDING;

	answer(&run, 1, 3);
	failures += run.vmgexit.req_certs.ret != KVM_USER_VMGEXIT_REQ_CERTS_ERROR_INVALID_LEN;
	failures += run.vmgexit.req_certs.data_npages != 3;

	answer(&run, 4, 3);
	failures += run.vmgexit.req_certs.ret != 0;
	failures += !(run.vmgexit.req_certs.flags & KVM_USER_VMGEXIT_REQ_CERTS_FLAGS_NOTIFY_DONE);

	run.vmgexit.req_certs.status = KVM_USER_VMGEXIT_REQ_CERTS_STATUS_DONE;
	answer(&run, 4, 3);
	failures += run.vmgexit.req_certs.ret != 0;

	/* The bytes a VMM reads and writes are where the ABI says. */
	run.vmgexit.req_certs.ret = KVM_USER_VMGEXIT_REQ_CERTS_ERROR_GENERIC;
	{
		unsigned char *p = (unsigned char *)&run;
		__u32 ret;

		memcpy(&ret, p + 32 + 24, sizeof(ret));
		failures += ret != KVM_USER_VMGEXIT_REQ_CERTS_ERROR_GENERIC;
		failures += p[32 + 29] != KVM_USER_VMGEXIT_REQ_CERTS_STATUS_DONE;
		failures += p[32 + 28] != KVM_USER_VMGEXIT_REQ_CERTS_FLAGS_NOTIFY_DONE;
	}
	/* Unused here, but every macro must expand in userspace C. */
	failures += KVM_USER_VMGEXIT_REQ_CERTS_ERROR_BUSY == 0;

	printf("vmgexit uapi layout: %s\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
