# SPDX-License-Identifier: GPL-2.0
# The two commands for a new user (see README.md):
#   make        set up, expand the series, build the patched kernel, boot it
#               and show the feature's test results
#   make check  every test and check of the series, the kernel and userspace
.PHONY: all check setup expand export rebase mutants host-kernel clean

all:
	@scripts/main.sh

check:
	@scripts/check.sh

setup:
	@scripts/setup.sh

# patches/ -> work/linux (FORCE=1 discards work/linux's own commits)
expand: setup
	@scripts/expand.sh

# work/linux -> patches/
export:
	@scripts/export.sh

# Move the series and the pin (base-version) to the newest Debian 6.12
rebase:
	@scripts/rebase.sh

# Build and boot every mutant of tests/mutants/: killed N of M (not in make check)
mutants: expand
	@scripts/mutants.sh $(ONLY)

# Debian packages of base + series from Debian's config (hours; not in CI)
host-kernel: expand
	@scripts/host-kernel.sh

clean:
	rm -rf build
