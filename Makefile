PYTHON ?= python3
# packaging mode of `make dist`: packed (default), standalone, onefile, onefile-cached
# (packaging/build.sh; figures per mode in docs/OPERATIONS.md)
DIST_MODE ?= packed
BUILD_PY := build/venv/bin/python

.PHONY: venv bench bench-quick dist dist-modes smoke bench-startup dist-arm64 dist-armhf \
	qemu-test qemu-test-armhf qemu-budget ci-arm64 termux-check deb deb-test deb-vm-test

# Benchmarks (bench/README.md). Peers: pip install -r bench/requirements.txt
bench:
	$(PYTHON) -m bench.run

bench-quick:
	$(PYTHON) -m bench.run --quick

# ---- single binary (packaging/) ----
venv:
	sh packaging/prereqs.sh
	sh packaging/venv.sh

# dist/mycelium for this machine
dist: venv
	PYTHON=$(BUILD_PY) sh packaging/build.sh $(DIST_MODE) dist/$(DIST_MODE)
	ln -sfn $(DIST_MODE)/mycelium dist/mycelium

# every packaging mode, for bench/startup.py to compare
dist-modes: venv
	for m in packed standalone onefile onefile-cached; do \
	  PYTHON=$(BUILD_PY) sh packaging/build.sh $$m dist/$$m || exit 1; done

smoke:
	sh packaging/smoke.sh dist/mycelium

# the records are made with build/venv (it has the agent's dependencies)
bench-startup: venv
	$(BUILD_PY) -m bench.startup --binary dist/mycelium

# ---- Debian packages (packaging/deb/) ----
# make deb [ARCH=amd64|arm64|armhf]: dist/mycelium_VERSION_ARCH.deb from a
# standalone build (made first: natively for this machine's architecture, in
# the cross root for another; root for those)
ARCH ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
HOST_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
deb:
	@if [ "$(ARCH)" = "$(HOST_ARCH)" ]; then \
	  $(MAKE) venv && PYTHON=$(BUILD_PY) sh packaging/build.sh standalone dist/standalone && \
	  sh packaging/deb/build.sh $(ARCH) dist/standalone/mycelium.dist dist; \
	else \
	  MODE=standalone ARCH=$(ARCH) sh cross/build.sh && \
	  sh packaging/deb/build.sh $(ARCH) dist/$(ARCH)/mycelium.dist dist; \
	fi

# install, upgrade, remove, reinstall and purge the packages of `make deb
# ARCH=arm64|armhf`'s build inside a throwaway copy of that cross root (root)
deb-test:
	ARCH=$(ARCH) sh qemu/test-deb.sh

# the amd64 package under a booted systemd in a VM: start, restart on upgrade,
# stop on removal (qemu/test-deb-vm.sh; root; SRC= what the package holds)
deb-vm-test:
	sh qemu/test-deb-vm.sh

# ---- arm64 / armhf (cross/, qemu/; need root) ----
dist-arm64:
	ARCH=arm64 sh cross/build.sh

dist-armhf:
	ARCH=armhf sh cross/build.sh

qemu-test:
	ARCH=arm64 sh qemu/test-user.sh

qemu-test-armhf:
	ARCH=armhf sh qemu/test-user.sh

qemu-budget:
	sh qemu/budget.sh

# power-cut test in a VM (qemu/powercut.sh; root; CUTS=100 SEED= ARCH=amd64|arm64)
.PHONY: powercut
powercut:
	sh qemu/powercut.sh

ci-arm64:
	sh qemu/ci-arm64.sh

termux-check: venv
	shellcheck -x -S warning packaging/*.sh packaging/termux/*.sh packaging/deb/*.sh \
	  packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm cross/*.sh qemu/*.sh
	PYTHON=$(BUILD_PY) sh packaging/termux/build.sh --check
