# Everything runs from .venv, created and filled on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DOCS_STAMP  := $(VENV)/.installed-docs
BENCH_STAMP := $(VENV)/.installed-bench
DEMO   := demo/run-$(shell date +%Y%m%d-%H%M%S)
MANPAGE ?= pmigrate.1

.PHONY: demo test man bench bench-peers bench-plots clean

# pmigrate and what its tests need (the test extra)
$(STAMP): pyproject.toml
	@# a dangling .venv link (a clone made on another machine) gives way to a real venv
	test -x $(BIN)/python || { rm -f $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# the docs and bench extras, on top of the test one
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[docs]'
	touch $@

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH sh bench/demo.sh $(DEMO)

test: $(STAMP)
	$(BIN)/python -m pytest

man: $(DOCS_STAMP)
	COLUMNS=1000 $(BIN)/argparse-manpage --module pmigrate.cli --function man_parser \
	  --prog pmigrate --project-name pmigrate --author "the pmigrate authors" \
	  --description "migrate a Plik deployment between metadata and data backends" \
	  --include docs/man-extra.txt \
	  --output $(MANPAGE) \
	  --manual-title "pmigrate manual" --version "$$($(BIN)/python -c 'import pmigrate;print(pmigrate.__version__)')"
	@echo "wrote $(MANPAGE); read it with: man -l $(MANPAGE)"

# The reference run of bench/results/README.md: small scale, minutes rather than hours.
bench: $(BENCH_STAMP)
	$(BIN)/python bench/bench_metadata.py --files 50000 --rounds 2
	for w in 1 2 4; do $(BIN)/python bench/bench_blobs.py --scale 0.05 --rounds 2 --workers $$w || exit 1; done
	for w in 1 2 4; do $(BIN)/python bench/bench_cloud.py --rounds 2 --workers $$w || exit 1; done
	$(BIN)/python bench/bench_verify.py --files 150 --mib 96 --rounds 2 --workers 2
	$(BIN)/python bench/bench_fakedb.py --files 50000 --runs 2
	$(BIN)/python bench/plots.py

# pmigrate against rclone (defaults and fastest), cp and pgloader, case by case (bench/results/README.md#peers).
bench-peers: $(BENCH_STAMP)
	$(BIN)/python bench/bench_peers.py --case all --scale 1 --rounds 3 --metadata-files 100000

bench-plots: $(BENCH_STAMP)
	$(BIN)/python bench/plots.py

clean:
	rm -rf $(VENV) build *.egg-info demo pmigrate.1
