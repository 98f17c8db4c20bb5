# Set-up and entry points. `make demo` and `make test` install what they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Debian packages for the toolchains and emulators the suite drives (installed only when run as root).
APT_PACKAGES := build-essential clang llvm lld libclang-rt-14-dev gcc-arm-none-eabi libnewlib-arm-none-eabi \
	qemu-system-arm binutils-arm-none-eabi gcc-aarch64-linux-gnu libc6-dev-arm64-cross openocd \
	qemu-user openssh-server openssh-client mmdebstrap \
	arduino-builder arduino-core-avr gcc-avr avr-libc simavr libsimavr-dev qemu-system-misc avrdude
PYTEST_ARGS ?=

.PHONY: all venv system-deps demo test lint clean

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# apt-get only when root and something is missing; a developer without root gets skips that say why.
system-deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		fi; \
	else echo "not root: skipping Debian packages ($(APT_PACKAGES)); tests that need them will skip"; fi

demo: venv system-deps
	$(VENV)/bin/utvm demo

test: venv system-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
