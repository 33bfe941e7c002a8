# KVMI harness - thin entry point; the work is done by scripts/*.
# See README.md.
SHELL := /bin/bash
S := scripts

.PHONY: help packages tree export check config kernel selftests test run shell results clean distclean

help:
	@sed -n 's/^## //p' README.md | head -40 || true
	@echo "targets: packages tree export check kernel selftests test run shell results clean distclean"

packages:
	@$(S)/packages.sh

tree: packages
	@$(S)/tree.sh

## make export: regenerate patches/ from build/linux (base..HEAD)
export:
	@$(S)/export.sh

check: tree
	@$(S)/check.sh

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

run:
	@$(S)/pipeline.sh run release

shell:
	@$(S)/shell.sh

# Re-parse the last boot log of MODE/CFG (default test/debug).
MODE ?= test
results:
	@/usr/bin/python3 $(S)/results.py build/logs/$(MODE)-$(CFG).log build/initramfs-$(MODE)-$(CFG)/tests/list

clean:
	@$(S)/clean.sh clean

distclean:
	@$(S)/clean.sh distclean
