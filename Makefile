# KVMI harness - thin entry point; the work is done by scripts/*.
# See README.md.
SHELL := /bin/bash
S := scripts

.PHONY: help packages tree export check matrix matrix-bisect config kernel selftests test run modules bench profile shell results clean distclean

help:
	@echo "make tree | export | check | matrix | matrix-bisect | test | run | bench | profile | shell | kernel | selftests | results | clean | distclean"
	@echo "(CFG=debug|release for kernel/selftests/config/results; see README.md)"

packages:
	@$(S)/packages.sh

tree: packages
	@$(S)/tree.sh

export:
	@$(S)/export.sh

# checkpatch on each patch, then the build matrix on the whole series; both
# always run, either failing fails the target.
check: tree
	@rc=0; $(S)/check.sh || rc=1; $(S)/matrix.sh series || rc=1; exit $$rc

# Build matrix (scripts/matrix.sh): the whole series in configs y, m, off and
# Debian's; matrix-bisect: every patch in y, m and off (slow; not in check/CI).
matrix: tree
	@$(S)/matrix.sh series

matrix-bisect: tree
	@$(S)/matrix.sh bisect

# CFG=debug|release for the piecewise targets below (default debug).
CFG ?= debug
config: tree
	@$(S)/config.sh $(CFG)

kernel: tree
	@$(S)/build-kernel.sh $(CFG)

selftests: kernel
	@$(S)/build-selftests.sh $(CFG)

test:
	@$(S)/pipeline.sh test debug

# Our QEMU's introspection cases (kvmi_qemu) alone on the debug kernel
# (make test runs them too, with everything else).
.PHONY: test-qemu
test-qemu:
	@TESTS=kvmi_qemu DISTRO=0 $(S)/pipeline.sh test debug

run:
	@$(S)/pipeline.sh run release

# kvm, kvm-amd, kvm-intel, kvmgt for Debian's own 6.12 kernel + the .deb
# (build/modules/<release>/, build/deb/; make test builds them too).
modules: tree
	@$(S)/modules.sh && $(S)/package.sh

# kvmi_bench on the release kernel: table + build/bench/kvmi_bench.png.
bench:
	@$(S)/bench.sh

# Where an event's round trip goes: kvmi_bench -t on a kernel with tracing
# (build/obj-trace, a cold build the first time), cut by scripts/profile.py.
profile:
	@$(S)/profile.sh

# kvmi_stress alone, long, in the debug kernel (log: build/logs/stress-debug.log).
# Longer than -t 600: raise TEST_TIMEOUT (per test) and BOOT_TIMEOUT too.
STRESS_ARGS ?= -l -t 600 -n 1000000
.PHONY: stress
stress:
	@TESTS=kvmi_stress TEST_ARGS_kvmi_stress="$(STRESS_ARGS)" $(S)/pipeline.sh stress debug

shell:
	@$(S)/shell.sh

# Re-parse the last boot log of MODE/CFG (default test/debug).
MODE ?= test
results:
	@/usr/bin/python3 $(S)/results.py build/logs/$(MODE)-$(CFG).log build/initramfs-$(MODE)-$(CFG)/tests/list \
		$$(cat build/selftests/$(CFG)/.build-failed 2>/dev/null)

clean:
	@$(S)/clean.sh clean

distclean:
	@$(S)/clean.sh distclean
