#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""generate.py TREE OUT: write OUT/NN-name.patch for each mutant below, as a
diff against TREE (a checkout of the series tip, e.g. work/linux). Each is
one small, named mistake; its header says why it is wrong and which test
is expected to kill it. Rerun it when the series' code moves."""
import os, subprocess, sys

TREE = sys.argv[1]
OUT = sys.argv[2]
RS = "arch/x86/kvm/svm/sev_rs.rs"
SEVC = "arch/x86/kvm/svm/sev.c"
X86 = "arch/x86/kvm/x86.c"

M = [
 # name, file, old, new, why it is wrong / what should kill it
 ("validate-rdmsr-needs-rax-rdx", RS,
  "            SVM_EXIT_MSR => has(RCX),\n",
  "            SVM_EXIT_MSR => has(RCX | RAX | RDX),\n",
  "RDMSR (SW_EXITINFO1 0) needs RCX only; a Linux guest's #VC handler marks only RCX valid. Killed by the validation differential's SW_EXITINFO1 0 inputs."),
 ("validate-ghcb-usage-eq-1", RS,
  "        if req.ghcb_usage() != 0 {\n",
  "        if req.ghcb_usage() == 1 {\n",
  "Every GHCB usage but 0 is invalid. Killed by GHCB usage 2 and 0x80000000."),
 ("validate-snp-any-vmsa-feature", RS,
  "        features & bindings::SEV_RS_SNP_ACTIVE != 0 && es_active && active\n",
  "        features != 0 && es_active && active\n",
  "An SEV-ES VM with DebugSwap would reach SNP-only handlers. Killed by the DebugSwap VM state."),
 ("validate-snp-ignores-es-state", RS,
  "        features & bindings::SEV_RS_SNP_ACTIVE != 0 && es_active && active\n",
  "        features & bindings::SEV_RS_SNP_ACTIVE != 0\n",
  "sev_snp_guest() is false unless the VM is an SEV-ES and an SEV VM. Killed by the 'SNP, not SEV-ES' and 'SNP, not SEV' VM states."),
 ("validate-string-io-no-scratch", RS,
  "                if info1 & u64::from(bindings::SVM_IOIO_STR_MASK) != 0 {\n                    has(SW_SCRATCH)\n",
  "                if info1 & u64::from(bindings::SVM_IOIO_STR_MASK) != 0 {\n                    Ok(())\n",
  "String I/O needs SW_SCRATCH. Killed by the validation differential."),
 ("validate-cpuid-no-xcr0", RS,
  "            SVM_EXIT_CPUID if req.rax() == 0xd => has(RAX | RCX | XCR0),\n",
  "            SVM_EXIT_CPUID if req.rax() == 0xd => has(RAX | RCX),\n",
  "CPUID leaf 0xd needs XCR0. Killed by the validation differential (RAX 0xd inputs)."),
 ("validate-exitinfo2-optional", RS,
  "        if valid & EXIT != EXIT {\n",
  "        if valid & (EXIT & !SW_EXIT_INFO_2) != EXIT & !SW_EXIT_INFO_2 {\n",
  "SW_EXITINFO2 is mandatory for every exit. Killed by the validation differential."),
 ("validate-guest-request-same-page", RS,
  "                if page_aligned(req_gpa) && page_aligned(resp_gpa) && req_gpa != resp_gpa {\n",
  "                if page_aligned(req_gpa) && page_aligned(resp_gpa) {\n",
  "Request and response pages must differ. Killed by the validation and whole-path differentials."),
 ("begin-rax-rbx-not-checked", RS,
  "        if !req.certs_valid || !page_aligned(req.data_gpa) {\n",
  "        if !page_aligned(req.data_gpa) {\n",
  "An attestation request without valid RAX/RBX gets 'invalid input' in the base. Killed by the whole-path differential."),
 ("begin-no-empty-table", RS,
  "            empty_table: (table && req.data_npages != 0).then_some(req.data_gpa),\n",
  "            empty_table: None,\n",
  "KVM writes the empty certificate table before the exit, as the base does. Killed by the whole-path differential and exit_fields."),
 ("begin-exit-for-every-message", RS,
  "        if u32::from(msg_type) != bindings::msg_type_SNP_MSG_REPORT_REQ {\n",
  "        if u32::from(msg_type) == u32::MAX {\n",
  "Only attestation report requests come with certificates; others go to the firmware. Killed by the whole-path differential (opted-in VMs exit only where the base calls the firmware for a report)."),
 ("complete-invalid-len-not-larger", RS,
  "                if !rules.more_pages || reply.data_npages > guest_npages {\n",
  "                if !rules.more_pages || reply.data_npages >= guest_npages {\n",
  "INVALID_LEN needs a page count larger than the guest's. Killed by the reply table and the hostile VMM."),
 ("complete-any-flags", RS,
  "        if u32::from(reply.flags) & !rules.flags != 0 {\n",
  "        if false {\n",
  "flags is 0 or NOTIFY_DONE, anything else fails KVM_RUN. Killed by the reply table and the hostile VMM."),
 ("complete-busy-undefined", RS,
  "            ret if ret == rules.busy => fail(VMM_ERR_BUSY, None),\n",
  "",
  "BUSY (EAGAIN for KVM_EXIT_SNP_REQ_CERTS) is a defined answer. Killed by both reply tables."),
 ("complete-no-done-status", RS,
  "    // The request can no longer reach the firmware, whatever happens next.\n    run.set_done();\n",
  "    // The request can no longer reach the firmware, whatever happens next.\n",
  "status DONE once KVM has acted on the answer (the lock rule). Killed by the reply table and the KVM_RUN-path cases."),
 ("complete-refuse-drops-request", RS,
  "        protocol::Complete::Refuse => {\n            // SAFETY: `vcpu` is valid; the request stays pending.\n            unsafe { bindings::snp_ext_guest_req_await_user(vcpu, abi.exit()) };\n",
  "        protocol::Complete::Refuse => {\n",
  "A refused answer leaves the request pending (completion reinstalled). Killed by the reply table's refused rows."),
 ("complete-firmware-failure-success", RS,
  "            if ret < 0 {\n                // KVM_RUN fails;",
  "            if ret < -4095 {\n                // KVM_RUN fails;",
  "After a failed firmware path the guest gets GENERIC's answer, not SW_EXITINFO2 0. Killed by run_fails_in_firmware_path and the whole-path differential."),
 ("exit-ret-not-written", RS,
  "                        addr_of_mut!((*rc).data_npages).write_volatile(data_npages);\n                        addr_of_mut!((*rc).ret).write_volatile(0);\n",
  "                        addr_of_mut!((*rc).data_npages).write_volatile(data_npages);\n",
  "KVM writes ret 0 at the exit, so a stale ret is never acted on. Killed by exit_fields."),
 ("done-exit-keeps-flags", RS,
  "            unsafe { addr_of_mut!((*self.req_certs()).flags).write_volatile(0) };\n",
  "            unsafe { addr_of_mut!((*self.req_certs()).flags).write_volatile(1) };\n",
  "The DONE exit has flags 0. Killed by the reply table."),
 ("complete-rereads-flags", RS,
  "    if protocol::notify_done(&reply) {\n",
  "    if protocol::notify_done(&run.reply()) {\n",
  "kvm_run is read once: the answer acted on is the one read first. Killed by reply_read_once."),
 ("glue-validation-calls-c", SEVC,
  "		reason = sev_es_vmgexit_check_rust(svm);\n",
  "		reason = sev_es_vmgexit_check(svm);\n",
  "With the option on, production validation is the Rust port. Killed by the validation differential (the C checks are stubbed in production calls)."),
 ("glue-dispatch-reverted", SEVC,
  "			ret = snp_begin_ext_guest_req(vcpu);\n",
  "			ret = snp_handle_ext_guest_req(svm, control->exit_info_1,\n\t\t\t\t\t\t       control->exit_info_2);\n",
  "With the option on, SNP Extended Guest Requests go to the Rust path. Killed by the whole-path differential (no exit) and the KVM_RUN-path cases."),
 ("glue-supported-mask-bit0", SEVC,
  "	return BIT_ULL(KVM_USER_VMGEXIT_REQ_CERTS);\n",
  "	return BIT_ULL(0);\n",
  "The supported mask is (1 << KVM_USER_VMGEXIT_REQ_CERTS). Killed by supported_types."),
 ("glue-wrong-request-page", SEVC,
  "	return snp_handle_guest_req(svm, svm->vmcb->control.exit_info_1,\n				    svm->vmcb->control.exit_info_2);\n}\n\nvoid snp_ext_guest_req_invalid",
  "	return snp_handle_guest_req(svm, svm->vmcb->control.exit_info_2,\n				    svm->vmcb->control.exit_info_2);\n}\n\nvoid snp_ext_guest_req_invalid",
  "KVM passes the guest's request page to the firmware. Killed by the whole-path differential (the firmware double records the pages); on hardware, by the SNP selftest's firmware path."),
 ("glue-user-certs-ignores-mask", SEVC,
  "	if (kvm->arch.user_vmgexit_types & BIT_ULL(KVM_USER_VMGEXIT_REQ_CERTS))\n		return SNP_CERTS_EXIT_VMGEXIT;\n",
  "	if (!(kvm->arch.user_vmgexit_types & BIT_ULL(KVM_USER_VMGEXIT_REQ_CERTS)))\n		return SNP_CERTS_EXIT_VMGEXIT;\n",
  "Only VMs that enabled KVM_USER_VMGEXIT_REQ_CERTS exit. Killed by the whole-path differential."),
 ("cap-check-extension-wrong-mask", X86,
  "		r = kvm_caps.supported_user_vmgexit_types;\n",
  "		r = kvm_caps.supported_user_vmgexit_types | BIT_ULL(2);\n",
  "KVM_CHECK_EXTENSION reports only the types KVM can exit for. Killed by vmgexit_cap_test."),
 # KVM_EXIT_SNP_REQ_CERTS (patches 12 to 14).
 ("req-certs-empty-table-before-exit", RS,
  "        empty_table: false,\n",
  "        empty_table: true,\n",
  "With KVM_EXIT_SNP_REQ_CERTS KVM leaves the guest's buffer to userspace, as upstream's C does. Killed by the KVM_EXIT_SNP_REQ_CERTS differential and req_certs_exit_fields."),
 ("req-certs-enospc-needs-more-pages", RS,
  "        more_pages: false,\n",
  "        more_pages: true,\n",
  "Upstream's ENOSPC takes any page count. Killed by the KVM_EXIT_SNP_REQ_CERTS reply table and differential."),
 ("req-certs-generic-is-seed-code", RS,
  "        error_code: bindings::SEV_RS_VMM_ERR_GENERIC,\n",
  "        error_code: uapi::KVM_USER_VMGEXIT_REQ_CERTS_ERROR_GENERIC,\n",
  "EIO gives the guest upstream's generic VMM error ~0U. Killed by the KVM_EXIT_SNP_REQ_CERTS reply table and differential."),
 ("req-certs-exit-ret-not-written", RS,
  "                        addr_of_mut!((*rc).npages).write_volatile(data_npages);\n                        addr_of_mut!((*rc).ret).write_volatile(0);\n",
  "                        addr_of_mut!((*rc).npages).write_volatile(data_npages);\n",
  "'ret' is always 0 on exit (api.rst). Killed by req_certs_exit_fields and the KVM_EXIT_SNP_REQ_CERTS differential."),
 ("req-certs-completion-seed-rules", RS,
  "    unsafe { complete(vcpu, protocol::Abi::ReqCerts) }\n",
  "    unsafe { complete(vcpu, protocol::Abi::Vmgexit) }\n",
  "KVM_EXIT_SNP_REQ_CERTS's completion reads and decodes that exit's reply. Killed by the KVM_EXIT_SNP_REQ_CERTS reply table and differential."),
 ("req-certs-enable-beside-vmgexit", SEVC,
  "	if (kvm->arch.user_vmgexit_types & BIT_ULL(KVM_USER_VMGEXIT_REQ_CERTS))\n		return -EBUSY;\n",
  "",
  "A VM enables one interface for certificates. Killed by req_certs_enable."),
 ("req-certs-enable-after-vcpus", SEVC,
  "	if (!IS_ENABLED(CONFIG_KVM_AMD_SEV_RUST) || kvm->created_vcpus ||\n",
  "	if (!IS_ENABLED(CONFIG_KVM_AMD_SEV_RUST) ||\n",
  "Upstream refuses the opt-in once a vCPU exists. Killed by req_certs_enable."),
 ("req-certs-attribute-always", SEVC,
  "		*val = !!kvm_caps.supported_user_vmgexit_types;\n",
  "		*val = 1;\n",
  "The attribute reads 1 only where the exit exists. Killed by req_certs_enable and vmgexit_cap_test (no SEV-SNP in the test guest)."),
 ("req-certs-refuse-installs-other-completion", RS,
  "            unsafe { bindings::snp_ext_guest_req_await_user(vcpu, abi.exit()) };\n            return NEG_EINVAL;\n",
  "            unsafe { bindings::snp_ext_guest_req_await_user(vcpu, protocol::Abi::Vmgexit.exit()) };\n            return NEG_EINVAL;\n",
  "A refused reply leaves the same exit's request pending. Killed by the KVM_EXIT_SNP_REQ_CERTS differential (it compares the completion installed) and reply table."),
 ("req-certs-writes-status", RS,
  "        pub(crate) fn set_done(&self) {\n            if self.abi != Abi::Vmgexit {\n                return;\n            }\n",
  "        pub(crate) fn set_done(&self) {\n",
  "KVM_EXIT_SNP_REQ_CERTS has no 'status': KVM writes nothing else into kvm_run. Killed by the KVM_EXIT_SNP_REQ_CERTS differential (it compares the whole exit union)."),
 ("cap-vmgexit-beside-req-certs", X86,
  "			   kvm_x86_call(snp_certs_enabled)(kvm)) {\n",
  "			   false) {\n",
  "KVM_CAP_EXIT_VMGEXIT refuses KVM_USER_VMGEXIT_REQ_CERTS after KVM_SEV_SNP_ENABLE_REQ_CERTS. Only the capability selftest on an SEV-SNP host can kill it (expected to survive here)."),
]

def run(*a, **k):
    return subprocess.run(a, cwd=TREE, check=True, capture_output=True, text=True, **k)

os.makedirs(OUT, exist_ok=True)
for f in os.listdir(OUT):
    if f.endswith(".patch"):
        os.unlink(os.path.join(OUT, f))
for i, (name, path, old, new, why) in enumerate(M, 1):
    p = os.path.join(TREE, path)
    src = open(p).read()
    if src.count(old) != 1:
        sys.exit(f"{name}: the text to mutate occurs {src.count(old)} times in {path}")
    open(p, "w").write(src.replace(old, new))
    diff = run("git", "diff", "--", path).stdout
    run("git", "checkout", "--", path)
    with open(os.path.join(OUT, f"{i:02d}-{name}.patch"), "w") as f:
        f.write(f"Mutant: {name}\n\n{why}\n\n{diff}")
print(f"{len(M)} mutants written to {OUT}")
