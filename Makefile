# Set-up, main job and tests of kerasmuon. Each target installs what it needs
# on a fresh Debian 12 or 13 machine and skips what is already done:
#   make train   train a character-level transformer from R, Muon against AdamW
#   make test    pytest on each Keras backend, the distributed runs, then
#                testthat for the R package
#   make test-quick  the same without the multi-device and multi-process runs

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
RLIB := $(ROOT)/.Rlib
STAMPS := $(ROOT)/.setup
RESULTS := $(ROOT)/results

export RETICULATE_PYTHON := $(VENV)/bin/python
export R_LIBS_USER := $(RLIB)
export TF_CPP_MIN_LOG_LEVEL := 2
export KERAS_BACKEND ?= tensorflow

DEBIAN_PACKAGES := r-base-dev r-cran-reticulate r-cran-testthat r-cran-roxygen2 \
  r-cran-knitr r-cran-rmarkdown r-cran-rcmdcheck pandoc qpdf
R_PACKAGES := reticulate testthat roxygen2 knitr rmarkdown rcmdcheck
PACKAGE_SOURCES := DESCRIPTION NAMESPACE $(wildcard R/*.R) $(shell find inst -type f -not -path '*/__pycache__/*')

.PHONY: train test test-quick test-python test-distributed test-r setup document check bench bench-quick clean

train: $(STAMPS)/package
	mkdir -p $(RESULTS)
	Rscript inst/scripts/train-char-transformer.R $(RESULTS)

test: test-python test-distributed test-r

# The quick command skips the tests that start several processes or devices:
# pytest's `distributed` marker, and testthat tests that call
# skip_if_quick().
test-quick: test-python
	KERASMUON_QUICK_TESTS=true Rscript tools/run-testthat.R

# Each Keras backend runs the whole suite in a process of its own, because
# Keras picks its backend once per process. The distributed tests start
# processes with the backend each one needs, so they run once.
BACKENDS := tensorflow jax torch

test-python: $(STAMPS)/python
	@cd python && for backend in $(BACKENDS); do \
	  echo "pytest on the $$backend backend"; \
	  KERAS_BACKEND=$$backend $(VENV)/bin/python -m pytest -p no:cacheprovider -m "not distributed" || exit 1; \
	done

test-distributed: $(STAMPS)/python
	@echo "pytest: tf.distribute and keras.distribution runs"
	cd python && $(VENV)/bin/python -m pytest -p no:cacheprovider -m distributed

test-r: $(STAMPS)/package
	Rscript tools/run-testthat.R

setup: $(STAMPS)/package

# The benchmarks: a quick run that exercises every benchmark at a small size,
# and the full run behind the published table in bench/results/.
bench-quick: $(STAMPS)/python
	$(VENV)/bin/python bench/run.py --mode quick --out $(RESULTS)/bench-quick

# The full run also refreshes the figure that the vignette "Training with
# Muon from R" shows, because a vignette can only include files under
# vignettes/.
bench: $(STAMPS)/python
	$(VENV)/bin/python bench/run.py --mode full --out bench/results
	mkdir -p vignettes/figures
	cp bench/results/time-to-quality-char_transformer.png vignettes/figures/

document: $(STAMPS)/debian
	Rscript -e 'roxygen2::roxygenise()'

# Debian's R packages, installed only when one of them is missing; CRAN is
# not reachable from these machines.
$(STAMPS)/debian:
	mkdir -p $(STAMPS)
	if ! { command -v pandoc && command -v qpdf && \
	       Rscript -e 'quit(status = !all(sapply(commandArgs(TRUE), requireNamespace, quietly = TRUE)))' \
	         $(R_PACKAGES); } >/dev/null 2>&1; then \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$sudo apt-get update -q; \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $(DEBIAN_PACKAGES); \
	fi
	touch $@

# A virtual environment inside the checkout. reticulate before 1.39 cannot
# exchange arrays with numpy 2, so numpy is pinned below 2 there.
$(STAMPS)/python: python/requirements.txt $(STAMPS)/debian
	[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	numpy=$$(Rscript -e 'cat(if (packageVersion("reticulate") < "1.39") "numpy<2" else "numpy>=2")'); \
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  -r python/requirements.txt "$$numpy"
	touch $@

$(STAMPS)/package: $(PACKAGE_SOURCES) $(STAMPS)/python
	mkdir -p $(RLIB)
	R CMD INSTALL --no-test-load --library=$(RLIB) . > $(STAMPS)/install.log 2>&1 \
	  || { cat $(STAMPS)/install.log; exit 1; }
	touch $@

clean:
	rm -rf $(VENV) $(RLIB) $(STAMPS) $(RESULTS)

# R CMD build, then R CMD check --as-cran in check/. The build starts from a
# copy of the files git tracks or would track, because R CMD build copies
# the whole folder, .venv included, before it applies .Rbuildignore.
#
# These machines reach only package registries, so the check contacts no
# other host: it runs in a network namespace of its own where unshare is
# allowed, with the time-server check off and an empty local repository in
# place of CRAN. --no-manual skips the PDF manual, which needs LaTeX.
NO_NETWORK := $(shell unshare --net true 2>/dev/null && echo unshare --net)
CHECK_ENV := _R_CHECK_SYSTEM_CLOCK_=FALSE _R_CHECK_CRAN_INCOMING_REMOTE_=FALSE \
  R_PROFILE_USER=$(ROOT)/check/Rprofile

check: $(STAMPS)/package
	rm -rf check && mkdir -p check/source check/repository/src/contrib
	touch check/repository/src/contrib/PACKAGES
	echo 'options(repos = c(CRAN = "file://$(ROOT)/check/repository"))' > check/Rprofile
	git ls-files -z --cached --others --exclude-standard \
	  | xargs -0 tar -cf - | tar -xf - -C check/source
	cd check && $(NO_NETWORK) env $(CHECK_ENV) R CMD build source && \
	  $(NO_NETWORK) env $(CHECK_ENV) R CMD check --as-cran --no-manual kerasmuon_*.tar.gz
