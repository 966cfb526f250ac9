PYTHON ?= python3
# packaging mode of `make dist`: standalone, onefile or onefile-cached
# (packaging/build.sh; figures per mode in docs/OPERATIONS.md)
DIST_MODE ?= onefile-cached
BUILD_PY := build/venv/bin/python

.PHONY: bench bench-quick dist dist-modes smoke bench-startup dist-arm64 dist-armhf \
	qemu-test qemu-test-armhf qemu-budget ci-arm64 termux-check

# Benchmarks (bench/README.md). Peers: pip install -r bench/requirements.txt
bench:
	$(PYTHON) -m bench.run

bench-quick:
	$(PYTHON) -m bench.run --quick

# ---- single binary (packaging/) ----
$(BUILD_PY): packaging/requirements.txt packaging/requirements-runtime.txt
	rm -rf build/venv
	/usr/bin/python3 -m venv build/venv
	build/venv/bin/pip install -q -r packaging/requirements.txt
	touch $@

# dist/mycelium for this machine
dist: $(BUILD_PY)
	PYTHON=$(BUILD_PY) sh packaging/build.sh $(DIST_MODE) dist/$(DIST_MODE)
	ln -sfn $(DIST_MODE)/mycelium dist/mycelium

# every packaging mode, for bench/startup.py to compare
dist-modes: $(BUILD_PY)
	for m in standalone onefile onefile-cached; do \
	  PYTHON=$(BUILD_PY) sh packaging/build.sh $$m dist/$$m || exit 1; done

smoke:
	sh packaging/smoke.sh dist/mycelium

bench-startup:
	$(PYTHON) -m bench.startup --binary dist/mycelium

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

ci-arm64:
	sh qemu/ci-arm64.sh

termux-check:
	sh packaging/termux/build.sh --check
