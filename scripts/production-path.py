#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Instructions a valid VMGEXIT executes in production code, per exit code.

Runs sev_handle_vmgexit() of kvm-amd as the distro-config build made it
(arch/x86/kvm/kvm-amd.o: every object of the module, linked and processed
by objtool, so static-branch sites are NOPs, as boot leaves them while
their keys are off, and __fentry__ calls are NOPs, as ftrace leaves them)
in Unicorn (QEMU's x86-64 emulator as a library), from its first
instruction to the store of SW_EXITINFO1 = 0 into the GHCB that precedes
the exit-code dispatch, and counts every instruction on the way: calls,
returns and return thunks included. The object is loaded as the module
loader would load it (sections placed, relocations applied); alternatives
keep their original instructions. Each return site is run two ways, as
boot patches it: as a RET (return thunks off; Zen 5) and through SRSO's
safe-RET thunk (the default on Zen 3 and Zen 4: jmp to the thunk, call,
lea, ret). Functions of other modules (kvm_vcpu_map(),
kvm_update_cpuid_runtime(), memset()) return 0 and are not counted: they
must be the same for every build measured, which is checked.

The vCPU, VM, VMCB and GHCB are set up in emulated memory from the offsets
of the very build measured (compiled from its headers with the compiler
command of its sev.o), as an SEV-SNP vCPU whose registered GHCB holds the
VMGEXIT, every field valid: the bench's valid cases. Memory is restored
between runs.

Usage: production-path.py LABEL=BUILD_DIR:SRC_DIR ...
The first pair is the reference (C), the second the one measured (Rust);
a third and further pairs are printed as extra columns.
"""
import bisect
import os
import re
import shlex
import subprocess
import sys
import tempfile

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
import unicorn
from unicorn import x86_const as X

OFFSETS_C = r"""
#include <linux/kvm_host.h>
#include <asm/svm.h>
#include <asm/sev-common.h>
#include "svm.h"

#define OUT(sym, val) asm volatile("\n.ascii \"->" #sym " %0\"" : : "i" ((unsigned long)(val)))
#define GHCB(f) OUT(ghcb_##f, offsetof(struct ghcb, save.f))
#define CODE(c) OUT(code_##c, c)

void offsets(void);
void offsets(void)
{
	OUT(svm_size, sizeof(struct vcpu_svm));
	OUT(svm_vmcb, offsetof(struct vcpu_svm, vmcb));
	OUT(svm_kvm, offsetof(struct vcpu_svm, vcpu.kvm));
	OUT(svm_ghcb_hva, offsetof(struct vcpu_svm, sev_es.ghcb_map) + offsetof(struct kvm_host_map, hva));
	OUT(svm_ghcb_registered_gpa, offsetof(struct vcpu_svm, sev_es.ghcb_registered_gpa));
	OUT(kvm_svm_size, sizeof(struct kvm_svm));
	OUT(kvm_svm_active, offsetof(struct kvm_svm, sev_info.active));
	OUT(kvm_svm_es_active, offsetof(struct kvm_svm, sev_info.es_active));
	OUT(kvm_svm_vmsa_features, offsetof(struct kvm_svm, sev_info.vmsa_features));
	OUT(snp_active, SVM_SEV_FEAT_SNP_ACTIVE);
	OUT(vmcb_size, sizeof(struct vmcb));
	OUT(vmcb_ghcb_gpa, offsetof(struct vmcb, control.ghcb_gpa));
	OUT(ghcb_size, sizeof(struct ghcb));
	OUT(ghcb_usage, offsetof(struct ghcb, ghcb_usage));
	OUT(ghcb_valid_bitmap, offsetof(struct ghcb, save.valid_bitmap));
	GHCB(sw_exit_code); GHCB(sw_exit_info_1); GHCB(sw_exit_info_2);
	GHCB(sw_scratch); GHCB(rax); GHCB(rbx); GHCB(rcx); GHCB(rdx);
	GHCB(cpl); GHCB(xcr0);
	CODE(SVM_EXIT_READ_DR7); CODE(SVM_EXIT_WRITE_DR7); CODE(SVM_EXIT_RDTSC);
	CODE(SVM_EXIT_RDPMC); CODE(SVM_EXIT_CPUID); CODE(SVM_EXIT_INVD);
	CODE(SVM_EXIT_IOIO); CODE(SVM_EXIT_MSR); CODE(SVM_EXIT_VMMCALL);
	CODE(SVM_EXIT_RDTSCP); CODE(SVM_EXIT_WBINVD); CODE(SVM_EXIT_MONITOR);
	CODE(SVM_EXIT_MWAIT); CODE(SVM_VMGEXIT_MMIO_READ);
	CODE(SVM_VMGEXIT_MMIO_WRITE); CODE(SVM_VMGEXIT_NMI_COMPLETE);
	CODE(SVM_VMGEXIT_AP_HLT_LOOP); CODE(SVM_VMGEXIT_AP_JUMP_TABLE);
	CODE(SVM_VMGEXIT_AP_CREATION); CODE(SVM_VMGEXIT_PSC);
	CODE(SVM_VMGEXIT_GUEST_REQUEST); CODE(SVM_VMGEXIT_EXT_GUEST_REQUEST);
	CODE(SVM_VMGEXIT_HV_FEATURES); CODE(SVM_VMGEXIT_TERM_REQUEST);
	CODE(SVM_VMGEXIT_UNSUPPORTED_EVENT);
}
"""

# The fields the checks may need, all marked valid (as the bench's valid
# cases), and the values of the bench's first input: page-aligned, distinct
# request and response pages, RAX 0.
VALID_FIELDS = ("sw_exit_code", "sw_exit_info_1", "sw_exit_info_2", "rax", "rbx",
                "sw_scratch", "rcx", "rdx", "cpl", "xcr0")
INFO1, INFO2, RAX = 0x1000, 0x2000, 0
GHCB_GPA = 0x7654000

CODE_BASE = 0x10000000    # objects, below 2 GiB: R_X86_64_32S must fit
STUB_BASE = 0x0f000000    # one 16-byte stub per function of another module
EXTERN_DATA = 0x0f100000  # 64 zero bytes per variable of another object
DATA_BASE = 0x20000000    # vCPU, VM, VMCB, GHCB, per-CPU area
STACK_TOP = 0x30000000
RETURN_ADDR = 0x0e000000  # sev_handle_vmgexit() returning ends the run
MAX_INSNS = 100000
MODULE = "arch/x86/kvm/kvm-amd.o"
RUST_CHECKS = "sev_es_vmgexit_check_rust"
# SRSO's return thunk as boot installs it on Zen 3/4 (srso_alias_return_thunk):
# call srso_alias_safe_ret; ud2; srso_alias_safe_ret: lea 8(%rsp),%rsp; ret
SRSO_THUNK = b"\xe8\x02\x00\x00\x00\x0f\x0b\x48\x8d\x64\x24\x08\xc3"


def die(msg):
    sys.exit(f"production-path: {msg}")


def offsets(build, src):
    """The offsets and constants of OFFSETS_C, compiled as sev.o was."""
    cmd_file = os.path.join(build, "arch/x86/kvm/svm/.sev.o.cmd")
    with open(cmd_file) as f:
        m = re.search(r"^savedcmd_\S+ := (.*)$", f.read(), re.M)
    if not m:
        die(f"no command line in {cmd_file}")
    args = shlex.split(m.group(1))
    keep, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "-o":
            skip = True
            continue
        if a.startswith("-Wp,-MMD") or a in ("-c",) or a.endswith("/sev.c"):
            continue
        keep.append(a)
    with tempfile.TemporaryDirectory() as tmp:
        c, s = os.path.join(tmp, "offsets.c"), os.path.join(tmp, "offsets.s")
        with open(c, "w") as f:
            f.write(OFFSETS_C)
        kvm = os.path.join(src, "arch/x86/kvm")
        r = subprocess.run(keep + ["-I", os.path.join(kvm, "svm"), "-I", kvm, "-S", "-o", s, c],
                           cwd=build, capture_output=True, text=True)
        if r.returncode:
            die(f"compiling the offsets for {build} failed:\n{r.stderr[-3000:]}")
        with open(s) as f:
            return {k: int(v.lstrip("$"), 0) for k, v in re.findall(r"->(\w+) \$?(-?\w+)", f.read())}


class Image:
    """Relocatable objects loaded into an emulator, as the module loader would."""

    def __init__(self, uc, paths, srso):
        self.uc = uc
        self.srso = srso
        self.next = CODE_BASE
        self.code = []          # (start, end) of executable sections
        self.funcs = []         # (start, end, name) of functions
        self.globals = {}
        self.stubs = {}         # address -> symbol of another object
        self.stub_next = STUB_BASE
        self.extern_data = {}
        self.fentry_sites = []
        uc.mem_map(STUB_BASE, 0x200000)
        objs = [self.load(p) for p in paths]
        # The function of an address, by bisection (the first symbol of
        # those that start at the same address).
        first = {}
        for lo, hi, name in self.funcs:
            first.setdefault(lo, (hi, name))
        self.func_starts = sorted(first)
        self.func_spans = [first[lo] for lo in self.func_starts]
        for elf, placed, syms in objs:
            self.relocate(elf, placed, syms)

    def load(self, path):
        elf = ELFFile(open(path, "rb"))
        placed = {}
        for i, sec in enumerate(elf.iter_sections()):
            if not sec["sh_flags"] & 0x2 or sec["sh_size"] == 0:   # SHF_ALLOC
                continue
            align = max(sec["sh_addralign"], 16)
            addr = (self.next + align - 1) // align * align
            size = sec["sh_size"]
            self.map(addr, size)
            if sec["sh_type"] != "SHT_NOBITS":
                self.uc.mem_write(addr, sec.data())
            placed[i] = addr
            if sec["sh_flags"] & 0x4:                              # SHF_EXECINSTR
                self.code.append((addr, addr + size))
            self.next = addr + size
        symtab = elf.get_section_by_name(".symtab")
        syms = []
        for sym in symtab.iter_symbols():
            shndx = sym["st_shndx"]
            addr = None
            if isinstance(shndx, int) and shndx in placed:
                addr = placed[shndx] + sym["st_value"]
                if sym["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK") and sym.name:
                    self.globals[sym.name] = addr
            syms.append((sym.name, addr))
            if addr is not None and sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"]:
                self.funcs.append((addr, addr + sym["st_size"], sym.name))
        return elf, placed, syms

    def map(self, addr, size):
        start, end = addr & ~0xfff, (addr + size + 0xfff) & ~0xfff
        for page in range(start, end, 0x1000):
            try:
                self.uc.mem_map(page, 0x1000)
            except unicorn.UcError:
                pass    # already mapped by the previous section

    def stub(self, name):
        for addr, n in self.stubs.items():
            if n == name:
                return addr
        addr = self.stub_next
        self.stub_next += 16
        self.stubs[addr] = name
        if name == "__x86_return_thunk":
            code = SRSO_THUNK
        elif name.startswith("__x86_indirect_thunk_"):
            reg = name.rsplit("_", 1)[1]
            regs = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi"]
            code = (b"\xff" + bytes([0xe0 + regs.index(reg)]) if reg in regs else
                    b"\x41\xff" + bytes([0xe0 + int(reg[1:]) - 8]))  # jmp *%reg
        else:
            code = b"\x31\xc0\xc3"                  # xor %eax,%eax; ret
        self.uc.mem_write(addr, code)
        return addr

    def relocate(self, elf, placed, syms):
        for sec in elf.iter_sections():
            if not isinstance(sec, RelocationSection):
                continue
            target = sec["sh_info"]
            if target not in placed:
                continue
            base = placed[target]
            for rel in sec.iter_relocations():
                name, addr = syms[rel["r_info_sym"]]
                if addr is None:
                    addr = self.globals.get(name)
                t = rel["r_info_type"]
                if t == 0:                                  # R_X86_64_NONE
                    continue
                if name == "__x86_return_thunk" and not self.srso:
                    self.patch_return(base + rel["r_offset"], name)
                    continue
                if addr is None and t == 4:                 # a call: PLT32
                    addr = self.stub(name)
                elif addr is None:                          # a variable: zeroes
                    addr = self.extern_data.setdefault(
                        name, EXTERN_DATA + 64 * len(self.extern_data))
                s, a, p = addr, rel["r_addend"], base + rel["r_offset"]
                if name == "__fentry__" and t in (2, 4):
                    # ftrace NOPs every __fentry__ call at boot.
                    self.uc.mem_write(p - 1, b"\x0f\x1f\x44\x00\x00")
                    continue
                if t == 1:                                  # R_X86_64_64
                    self.uc.mem_write(p, ((s + a) & (2**64 - 1)).to_bytes(8, "little"))
                elif t in (2, 4):                           # PC32, PLT32
                    self.uc.mem_write(p, ((s + a - p) & 0xffffffff).to_bytes(4, "little"))
                elif t in (10, 11):                         # 32, 32S
                    self.uc.mem_write(p, ((s + a) & 0xffffffff).to_bytes(4, "little"))
                elif t == 24:                               # PC64
                    self.uc.mem_write(p, ((s + a - p) & (2**64 - 1)).to_bytes(8, "little"))
                else:
                    die(f"relocation type {t} in {sec.name} ({name}) is not handled")

    def patch_return(self, p, name):
        """A return site as boot patches it without return thunks."""
        op = self.uc.mem_read(p - 2, 2)
        if op[1] == 0xe9:                                   # jmp thunk: ret
            self.uc.mem_write(p - 1, b"\xc3\xcc\xcc\xcc\xcc")
        elif op[0] == 0x0f and 0x80 <= op[1] <= 0x8f:       # jcc thunk
            # j!cc over "ret; int3 x3", as the kernel's apply_returns() does
            jncc = 0x70 | ((op[1] & 0xf) ^ 1)
            self.uc.mem_write(p - 2, bytes([jncc, 4, 0xc3, 0xcc, 0xcc, 0xcc]))
        else:
            die(f"a reference to {name} that is not a jump at {p:#x}")

    def in_code(self, addr):
        return any(lo <= addr < hi for lo, hi in self.code)

    def func(self, addr):
        i = bisect.bisect_right(self.func_starts, addr) - 1
        if i >= 0 and addr < self.func_spans[i][0]:
            return self.func_spans[i][1]
        return "?"


class Build:
    """One build's objects, loaded once into an emulator, run per exit code."""

    def __init__(self, build, src, srso):
        self.build = build
        self.off = offsets(build, src)
        self.uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        self.img = Image(self.uc, [os.path.join(build, MODULE)], srso)
        self.entry = self.img.globals.get("sev_handle_vmgexit")
        if self.entry is None:
            die(f"{build}: no sev_handle_vmgexit in {MODULE}")
        self.rust = any(name == RUST_CHECKS for _, _, name in self.img.funcs)
        if self.off["svm_size"] > 0x100000 or self.off["kvm_svm_size"] > 0x100000:
            die("struct vcpu_svm or kvm_svm is larger than its emulated area")
        self.uc.mem_map(DATA_BASE, 0x300000)
        self.uc.mem_map(STACK_TOP - 0x10000, 0x10000)
        self.uc.mem_map(RETURN_ADDR, 0x1000)
        # What the runs may change, restored before each run.
        self.snapshot = [(lo, bytes(self.uc.mem_read(lo, hi - lo + 1)))
                         for lo, hi, _ in self.uc.mem_regions()]
        self.state = {}
        self.per_func = {}      # instructions per function, over every run
        self.externals = set()  # functions of other modules called
        self.uc.hook_add(unicorn.UC_HOOK_CODE, self.on_code)
        self.uc.hook_add(unicorn.UC_HOOK_MEM_WRITE, self.on_write,
                         begin=DATA_BASE, end=DATA_BASE + 0x300000 - 1)

    def on_code(self, uc, addr, size, _):
        if self.img.in_code(addr):
            self.state["n"] += 1
            f = self.img.func(addr)
            self.per_func[f] = self.per_func.get(f, 0) + 1
            self.state["funcs"].add(f)
        elif STUB_BASE <= addr < STUB_BASE + 0x100000:
            name = self.img.stubs[addr & ~0xf]
            if name == "__x86_return_thunk" or name.startswith("__x86_indirect_thunk_"):
                self.state["n"] += 1
                self.per_func[name] = self.per_func.get(name, 0) + 1
            elif name.startswith("sev_"):
                die(f"{self.build}: {name}() is called but not loaded")
            else:
                self.state["calls"].add(name)
        if self.state["n"] > MAX_INSNS:
            self.state["end"] = "runaway"
            uc.emu_stop()

    def on_write(self, uc, access, addr, size, value, _):
        if addr <= self.state["info1"] < addr + size and self.state["end"] is None:
            # 0 precedes the dispatch; anything else is an error answer.
            self.state["end"] = "dispatch" if value == 0 else f"SW_EXITINFO1 {value:#x}"
            uc.emu_stop()

    def run(self, code):
        """Instructions of one valid VMGEXIT with exit code @code."""
        uc, off = self.uc, self.off
        svm, kvm_svm = DATA_BASE, DATA_BASE + 0x100000
        vmcb, ghcb = DATA_BASE + 0x200000, DATA_BASE + 0x201000
        for lo, data in self.snapshot:
            uc.mem_write(lo, data)
        w64 = lambda a, v: uc.mem_write(a, (v & (2**64 - 1)).to_bytes(8, "little"))
        w64(svm + off["svm_vmcb"], vmcb)
        w64(svm + off["svm_kvm"], kvm_svm)
        w64(svm + off["svm_ghcb_hva"], ghcb)                # what kvm_vcpu_map() maps
        w64(svm + off["svm_ghcb_registered_gpa"], GHCB_GPA)
        w64(vmcb + off["vmcb_ghcb_gpa"], GHCB_GPA)
        uc.mem_write(kvm_svm + off["kvm_svm_active"], b"\x01")
        uc.mem_write(kvm_svm + off["kvm_svm_es_active"], b"\x01")
        w64(kvm_svm + off["kvm_svm_vmsa_features"], off["snp_active"])
        uc.mem_write(ghcb + off["ghcb_usage"], bytes(4))
        values = {"sw_exit_code": code, "sw_exit_info_1": INFO1, "sw_exit_info_2": INFO2,
                  "rax": RAX}
        bitmap = 0
        for f in VALID_FIELDS:
            w64(ghcb + off["ghcb_" + f], values.get(f, 0))
            bitmap |= 1 << (off["ghcb_" + f] // 8)
        uc.mem_write(ghcb + off["ghcb_valid_bitmap"], bitmap.to_bytes(16, "little"))
        # Per-CPU variables are addressed from GS base 0, as x86-64's are
        # from the CPU's area: the variables of other objects read zeroes.
        uc.msr_write(0xc0000101, 0)
        rsp = STACK_TOP - 0x100
        w64(rsp, RETURN_ADDR)
        uc.reg_write(X.UC_X86_REG_RSP, rsp)
        uc.reg_write(X.UC_X86_REG_RDI, svm)
        self.state = {"n": 0, "end": None, "calls": set(), "funcs": set(),
                      "info1": ghcb + off["ghcb_sw_exit_info_1"]}
        try:
            uc.emu_start(self.entry, RETURN_ADDR)
        except unicorn.UcError as e:
            die(f"{self.build}: exit {code:#x}: {e} at {uc.reg_read(X.UC_X86_REG_RIP):#x}")
        if self.state["end"] != "dispatch":
            ret = uc.reg_read(X.UC_X86_REG_RAX)
            end = self.state["end"] or f"returned {ret:#x}"
            die(f"{self.build}: exit {code:#x} did not reach the dispatch ({end})")
        if self.rust and RUST_CHECKS not in self.state["funcs"]:
            die(f"{self.build}: exit {code:#x}: the build has {RUST_CHECKS}() "
                "but sev_handle_vmgexit() did not run it")
        self.externals |= self.state["calls"]
        return self.state["n"]


MODES = ((False, "return sites as RET (no return thunk, e.g. Zen 5)"),
         (True, "return sites through SRSO's safe-RET thunk (Zen 3/4 default)"))


def report(builds, srso, what):
    """The table and the production: line for one way of returning."""
    runs = [Build(b, s, srso) for _, b, s in builds]
    codes = sorted(((k[5:], v) for k, v in runs[0].off.items() if k.startswith("code_")),
                   key=lambda kv: kv[1])
    labels = [b[0] for b in builds]
    ref, new = labels[0], labels[1]
    print(f"production path, sev_handle_vmgexit() to the dispatch, {what}:")
    print(f"  {'exit code':40} " + " ".join(f"{l:>7}" for l in labels) +
          f" {new + '-' + ref:>9} {new + '/' + ref:>9}")
    totals = [0] * len(builds)
    for name, code in codes:
        counts = [b.run(code) for b in runs]
        totals = [t + n for t, n in zip(totals, counts)]
        print(f"  {name:29} {code:#10x} " + " ".join(f"{n:7}" for n in counts) +
              f" {counts[1] - counts[0]:+9} {counts[1] / counts[0]:9.3f}")
    print(f"  {'every exit code (sum)':40} " + " ".join(f"{n:7}" for n in totals) +
          f" {totals[1] - totals[0]:+9} {totals[1] / totals[0]:9.3f}")
    for label, b in zip(labels, runs):
        if b.externals != runs[0].externals:
            die(f"{label} calls other functions of other modules than {ref}: "
                f"{sorted(b.externals ^ runs[0].externals)}")
        funcs = sorted(b.per_func.items(), key=lambda kv: -kv[1])
        print(f"  {label}, per function: " +
              ", ".join(f"{f} {n / len(codes):.2f}" for f, n in funcs))
    print(f"  not counted (functions of other modules, returning 0): "
          f"{', '.join(sorted(runs[0].externals))}")
    n = len(codes)
    for label, total in zip(labels[2:], totals[2:]):
        print(f"production: {label} {total / n:.2f} per valid VMGEXIT ({what})")
    print(f"production: {new}/{ref} {totals[1] / totals[0]:.3f} on valid VMGEXITs "
          f"({ref} {totals[0] / n:.2f}, {new} {totals[1] / n:.2f}, "
          f"{new}-{ref} {(totals[1] - totals[0]) / n:+.2f} per VMGEXIT; {what})")


def main():
    builds = []
    for arg in sys.argv[1:]:
        label, _, rest = arg.partition("=")
        build, sep, src = rest.partition(":")
        if not sep:
            die(f"bad argument {arg}")
        builds.append((label, os.path.abspath(build), os.path.abspath(src)))
    if len(builds) < 2:
        die(__doc__)
    for srso, what in MODES:
        report(builds, srso, what)


if __name__ == "__main__":
    main()
