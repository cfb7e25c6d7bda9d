#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""KUnit cannot run KVM_RUN on a fabricated vCPU, so sev_rs_test.c's
sev_rs_complete() copies the step of kvm_arch_vcpu_ioctl_run() that runs
complete_userspace_io, and its KVM_RUN-path cases assume that immediate_exit
is checked after it. Read x86.c (stdin) and fail if it no longer does
exactly that, so the copy cannot silently diverge from production."""
import re
import sys

STEP = (
    "\tif (unlikely(vcpu->arch.complete_userspace_io)) {\n"
    "\t\tint (*cui)(struct kvm_vcpu *) = vcpu->arch.complete_userspace_io;\n"
    "\t\tvcpu->arch.complete_userspace_io = NULL;\n"
    "\t\tr = cui(vcpu);\n"
    "\t\tif (r <= 0)\n"
    "\t\t\tgoto out;\n"
    "\t} else {\n"
)
IMMEDIATE_EXIT = "\tif (!vcpu->wants_to_run) {\n"

src = sys.stdin.read()
m = re.search(r"^int kvm_arch_vcpu_ioctl_run\(struct kvm_vcpu \*vcpu\)\n\{\n(.*?)^\}\n",
              src, re.S | re.M)
body = m.group(1) if m else ""
at = body.find(STEP)
if at < 0 or body.count("complete_userspace_io") != 3 or body.find(IMMEDIATE_EXIT, at) < 0:
    sys.exit("kvm_arch_vcpu_ioctl_run() no longer runs complete_userspace_io the way "
             "sev_rs_complete() in arch/x86/kvm/svm/sev_rs_test.c copies it: "
             "update the copy and this check")
print("KVM_RUN completion step: x86.c runs complete_userspace_io as sev_rs_complete() "
      "copies it, then checks immediate_exit")
