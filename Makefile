# sluice: top-level Makefile (GNU make).
#
#   make                 debug build: build/bin/{sluice,sluice-relay,sluice-control}
#   make BUILD=release   optimised build under build/release/
#   make SAN=address,undefined [test]   sanitizer build under build/san/
#   make test            build, run every test
#   make run             start the service locally (project-local Redis under run/)
#   make bench           micro and end-to-end benchmarks -> bench/results/ (E2E_ARGS="--reps 3",
#                        API_ARGS="--reps 5" for the control plane's)
#   make bench-smoke     every benchmark, briefly (CI)
#   make fuzz            libFuzzer targets, FUZZ_SECONDS each (default 30)
#   make format | format-check | lint | clean
#   Each goal first installs what it needs, and only that (deploy/install-deps.sh).
#
# Objects never land beside the sources: everything goes under $(O).

.DEFAULT_GOAL := all
BUILD ?= debug
SAN ?=
ifneq ($(SAN),)
O ?= build/san
else ifeq ($(BUILD),release)
O ?= build/release
else ifeq ($(BUILD),debug)
O ?= build
else
$(error BUILD must be debug or release, not "$(BUILD)")
endif
BIN := $(O)/bin
OBJ := $(O)/obj

# V=1 shows every command; by default one short line per step.
Q := $(if $(V),,@)
CC := gcc
CXX := g++
CLANG := clang
PYTHON := /usr/bin/python3
VERSION := 0.1.0

# --- dependencies -----------------------------------------------------------
# Each goal checks only what it needs: a group of Debian packages named by
# deploy/install-deps.sh (build, unit, integration, bench, run, fuzz, style).
# What is missing is installed there and then (as root; otherwise the script
# prints the apt-get command). The stamp build/deps/GROUP keeps that to once
# per checkout, redone when the script changes; flock serialises the groups a
# parallel make checks at once (apt allows one install at a time).
DEPS := build/deps
$(DEPS)/%: deploy/install-deps.sh
	@mkdir -p $(@D)
	@flock $(DEPS)/.lock sh deploy/install-deps.sh $*
	@touch $@

PKGS_DP := liburing wolfssl libcrypto msgpack hiredis jansson
PKGS_CP := libh2o-evloop libssh2 msgpack hiredis jansson
NO_BUILD_GOALS := clean help deps format format-check lint fresh-test

# $(O)/config.mk is a makefile GNU make rebuilds before reading it, so the
# build's check (compiler, pkg-config libraries) runs before anything compiles.
ifneq ($(filter-out $(NO_BUILD_GOALS),$(or $(MAKECMDGOALS),all)),)
include $(O)/config.mk
endif

$(O)/config.mk: Makefile $(DEPS)/build
	@mkdir -p $(@D)
	@{ echo "DP_CFLAGS := $$(pkg-config --cflags $(PKGS_DP))"; \
	   echo "DP_LIBS := $$(pkg-config --libs $(PKGS_DP))"; \
	   echo "CP_CFLAGS := $$(pkg-config --cflags $(PKGS_CP))"; \
	   echo "CP_LIBS := $$(pkg-config --libs $(PKGS_CP) wolfssl) -lssl -lcrypto -lz -lresolv"; } > $@.tmp
	@mv $@.tmp $@
# The tests' and benchmarks' libraries are looked up when they link, after
# their own group's check.
TEST_LIBS = $(shell pkg-config --libs cmocka)
BENCH_LIBS = $(shell pkg-config --libs benchmark) -lpthread

# --- flags ------------------------------------------------------------------
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wpointer-arith -Wvla
ifeq ($(BUILD),release)
OPT := -O2 -g -DNDEBUG
else
OPT := -O0 -g3
endif
ifneq ($(SAN),)
OPT := -O1 -g -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDSAN := -fsanitize=$(SAN)
endif
INCS := -Icommon -Iproto -I$(O)/gen
CFLAGS_BASE := -std=c17 -D_GNU_SOURCE $(OPT) $(WARN) -MMD -MP $(INCS)
CXXFLAGS_BASE := -std=c++17 -D_GNU_SOURCE $(OPT) -Wall -Wextra -Werror -Wno-missing-field-initializers -MMD -MP $(INCS)
LDFLAGS_BASE := $(LDSAN) -pthread

# --- sources ----------------------------------------------------------------
COMMON_SRC := $(wildcard common/*.c)
PROTO_SRC := $(wildcard proto/*.c)
DP_SRC := $(filter-out dataplane/relay_main.c dataplane/agent_main.c,$(wildcard dataplane/*.c))
# The control plane's layers are folders (http/, api/, ssh/, mgr/, cli/);
# headers are included with their folder ("http/cp_server.h") from -Icontrolplane.
CP_SRC := $(filter-out controlplane/control_main.c,$(wildcard controlplane/*.c controlplane/*/*.c))
obj = $(patsubst %.c,$(OBJ)/%.o,$(1))
COMMON_OBJ := $(call obj,$(COMMON_SRC))
PROTO_OBJ := $(call obj,$(PROTO_SRC))
DP_OBJ := $(call obj,$(DP_SRC))
CP_OBJ := $(call obj,$(CP_SRC))

BINS := $(BIN)/sluice $(BIN)/sluice-relay $(BIN)/sluice-control
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BIN)/tests/%,$(UNIT_SRC))
BENCH_SRC := $(wildcard bench/micro/bm_*.cc)
BENCH_BINS := $(patsubst bench/micro/%.cc,$(BIN)/bench/%,$(BENCH_SRC))

# What each kind of target needs installed before it compiles.
$(call obj,$(UNIT_SRC)): | $(DEPS)/unit
$(patsubst %.cc,$(OBJ)/%.o,$(BENCH_SRC)): | $(DEPS)/bench

.PHONY: fresh-test all test unit integration run bench bench-smoke fuzz format format-check lint clean help deps
all: $(BINS)

deps:
	sh deploy/install-deps.sh

# Version header: rewritten only when its text changes, so a new commit
# rebuilds one object, not the tree.
$(O)/gen/version_gen.h: FORCE
	@mkdir -p $(@D)
	@git_rev=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown); \
	 git diff --quiet HEAD 2>/dev/null || git_rev="$$git_rev-dirty"; \
	 printf '#define SLUICE_VERSION "%s"\n#define SLUICE_GIT "%s"\n' "$(VERSION)" "$$git_rev" > $@.tmp; \
	 cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@
FORCE:
# Keep objects that pattern chains build on the way (tests, benchmarks).
.SECONDARY:
$(OBJ)/common/sl_cli.o: $(O)/gen/version_gen.h

# Per-layer flags: control-plane units see h2o (and its OpenSSL) and never
# wolfSSL; data-plane units see wolfSSL and liburing and never h2o.
$(OBJ)/controlplane/%.o: CFLAGS_LAYER = $(CP_CFLAGS) -Icontrolplane
$(OBJ)/dataplane/%.o: CFLAGS_LAYER = $(DP_CFLAGS) -Idataplane
$(OBJ)/tests/unit/test_cp_%.o: CFLAGS_LAYER = $(CP_CFLAGS) -Icontrolplane
$(OBJ)/tests/unit/test_dp_%.o: CFLAGS_LAYER = $(DP_CFLAGS) -Idataplane
$(OBJ)/tests/unit/test_pr_%.o: CFLAGS_LAYER = $(DP_CFLAGS)
$(OBJ)/bench/micro/bm_tls.o: CFLAGS_LAYER = $(DP_CFLAGS) -Idataplane

$(OBJ)/%.o: %.c | $(O)/gen/version_gen.h
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_BASE) $(CFLAGS_LAYER) -c $< -o $@

$(OBJ)/%.o: %.cc | $(O)/gen/version_gen.h
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CXX     $<")
	$(Q)$(CXX) $(CXXFLAGS_BASE) $(CFLAGS_LAYER) -c $< -o $@

$(BIN)/sluice-relay: $(OBJ)/dataplane/relay_main.o $(DP_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_BASE) $^ $(DP_LIBS) -o $@

$(BIN)/sluice: $(OBJ)/dataplane/agent_main.o $(DP_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_BASE) $^ $(DP_LIBS) -o $@

$(BIN)/sluice-control: $(OBJ)/controlplane/control_main.o $(CP_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_BASE) $^ $(CP_LIBS) -o $@

# Unit tests: test_sl_* link the common layer, test_pr_* add proto,
# test_dp_* the data plane, test_cp_* the control plane.
$(BIN)/tests/test_sl_%: $(OBJ)/tests/unit/test_sl_%.o $(COMMON_OBJ)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_BASE) $^ $(DP_LIBS) $(TEST_LIBS) -o $@
$(BIN)/tests/test_pr_%: $(OBJ)/tests/unit/test_pr_%.o $(PROTO_OBJ) $(COMMON_OBJ)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_BASE) $^ $(DP_LIBS) $(TEST_LIBS) -o $@
$(BIN)/tests/test_dp_%: $(OBJ)/tests/unit/test_dp_%.o $(DP_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_BASE) $^ $(DP_LIBS) $(TEST_LIBS) -o $@
$(BIN)/tests/test_cp_%: $(OBJ)/tests/unit/test_cp_%.o $(CP_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_BASE) $^ $(CP_LIBS) $(TEST_LIBS) -o $@

# Micro-benchmarks: C++ (Google Benchmark) against our C objects; bm_tls
# links the data plane (its TLS settings).
$(BIN)/bench/bm_tls: $(OBJ)/bench/micro/bm_tls.o $(DP_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CXX) $(LDFLAGS_BASE) $^ $(DP_LIBS) $(BENCH_LIBS) -o $@
$(BIN)/bench/bm_%: $(OBJ)/bench/micro/bm_%.o $(PROTO_OBJ) $(COMMON_OBJ)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CXX) $(LDFLAGS_BASE) $^ $(DP_LIBS) $(BENCH_LIBS) -o $@

# --- test -------------------------------------------------------------------
# The unmodified localtunnel client (npm), pinned by tests/lt/package-lock.json,
# for the compatibility test; installed under build/, never vendored.
LT_CLIENT := build/lt/node_modules/localtunnel/bin/lt.js
$(LT_CLIENT): tests/lt/package.json tests/lt/package-lock.json | $(DEPS)/integration
	@mkdir -p build/lt
	@cp tests/lt/package.json tests/lt/package-lock.json build/lt/
	cd build/lt && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# One runner drives both suites and prints the closing "N passed, N failed".
test: $(BINS) $(UNIT_BINS) $(LT_CLIENT) | $(DEPS)/unit $(DEPS)/integration
	$(PYTHON) tests/run.py --bin $(BIN) --suite all

unit: $(UNIT_BINS) | $(DEPS)/unit
	$(PYTHON) tests/run.py --bin $(BIN) --suite unit

integration: $(BINS) $(LT_CLIENT) | $(DEPS)/integration
	$(PYTHON) tests/run.py --bin $(BIN) --suite integration

# A brand-new Debian 12 (debootstrap), `make test` inside it; minutes, not CI.
fresh-test:
	sh tests/fresh/run.sh test

# --- run --------------------------------------------------------------------
RELAYS ?= 1
run: $(BINS) | $(DEPS)/run
	SLUICE_RUN_RELAYS=$(RELAYS) sh deploy/run-local.sh --bin $(BIN) $(RUN_ARGS)

# --- bench ------------------------------------------------------------------
bench:
	$(MAKE) BUILD=release bench-run
bench-run: $(BENCH_BINS) $(BINS) | $(DEPS)/bench
	$(PYTHON) bench/tools/run_micro.py --bin $(BIN)/bench --out bench/results
	$(PYTHON) bench/e2e/run.py --bin $(BIN) --out bench/results $(E2E_ARGS)
	$(PYTHON) bench/e2e/api.py --bin $(BIN) --out bench/results $(API_ARGS)
	$(PYTHON) bench/e2e/cluster.py --bin $(BIN) --out bench/results $(CLUSTER_ARGS)
	$(PYTHON) bench/e2e/ssh.py --bin $(BIN) --out bench/results $(SSH_ARGS)
bench-smoke: $(BENCH_BINS) $(BINS) | $(DEPS)/bench
	$(PYTHON) bench/tools/run_micro.py --bin $(BIN)/bench --smoke
	$(PYTHON) bench/e2e/run.py --bin $(BIN) --out build/bench-smoke --smoke
	$(PYTHON) bench/e2e/ab.py --bin $(BIN) --rounds 1 --seconds 1 --variant io_uring= --variant 'epoll=--engine epoll'
	$(PYTHON) bench/e2e/api.py --bin $(BIN) --out build/bench-smoke --smoke
	$(PYTHON) bench/e2e/cluster.py --bin $(BIN) --out build/bench-smoke --smoke
	$(PYTHON) bench/e2e/ssh.py --bin $(BIN) --out build/bench-smoke --smoke

# --- fuzz -------------------------------------------------------------------
FUZZ_SECONDS ?= 30
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_DP_SRC := dataplane/dp_http.c # pure parsers only: no io_uring in fuzz builds
FUZZ_CP_SRC := controlplane/http/cp_tunnel_req.c # pure parsers only: no h2o in fuzz builds
FUZZ_BINS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))
FUZZ_FLAGS := -std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined $(INCS) -Ibuild/fuzz/gen
build/fuzz/gen/version_gen.h:
	@mkdir -p $(@D)
	@printf '#define SLUICE_VERSION "%s"\n#define SLUICE_GIT "fuzz"\n' "$(VERSION)" > $@
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(COMMON_SRC) $(PROTO_SRC) $(FUZZ_DP_SRC) $(FUZZ_CP_SRC) build/fuzz/gen/version_gen.h | $(DEPS)/fuzz
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_FLAGS) $(DP_CFLAGS) -Idataplane -Icontrolplane tests/fuzz/fuzz_$*.c $(COMMON_SRC) $(PROTO_SRC) $(FUZZ_DP_SRC) $(FUZZ_CP_SRC) $(DP_LIBS) -ljansson -o $@
fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do \
	  name=$${f#build/fuzz/fuzz_}; corpus=tests/fuzz/corpus/$$name; work=build/fuzz/corpus-$$name; \
	  mkdir -p $$work; echo "fuzz: $$name for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 \
	      -artifact_prefix=build/fuzz/ $$work $$corpus; done

# --- style ------------------------------------------------------------------
STYLE_SRC := $(wildcard common/*.[ch] proto/*.[ch] dataplane/*.[ch] controlplane/*.[ch] controlplane/*/*.[ch] tests/unit/*.c tests/fuzz/*.c bench/micro/*.cc)
format format-check lint: | $(DEPS)/style
format:
	clang-format -i $(STYLE_SRC)
format-check:
	clang-format --dry-run --Werror $(STYLE_SRC)
lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --std=c11 --inline-suppr -D_GNU_SOURCE -Icommon -Iproto -Icontrolplane -Idataplane \
	  --suppress=missingIncludeSystem common proto dataplane controlplane
	$(MAKE) --no-print-directory all
	$(PYTHON) tests/lint/layers.py --objs $(OBJ)
	$(PYTHON) tests/lint/sizes.py

clean:
	rm -rf build

help:
	@sed -n '2,15p' Makefile

-include $(shell find $(O)/obj -name '*.d' 2>/dev/null)
