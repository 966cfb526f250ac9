PYTHON ?= python3

.PHONY: bench bench-quick

# Benchmarks (bench/README.md). Peers: pip install -r bench/requirements.txt
bench:
	$(PYTHON) -m bench.run

bench-quick:
	$(PYTHON) -m bench.run --quick
