# imgsearch - one Makefile for every build.
#   make            release binary ./imgsearch (build/release)
#   make debug      build/debug/imgsearch, -O0
#   make asan       build/asan/imgsearch, ASan + UBSan
#   make check      builds and runs every test (BUILD=asan to run them sanitized)
#   make bench      benchmarks, printing figures
#   make fuzz-smoke libFuzzer targets for a short time each (clang-14)
#   make demo       installs, builds, fetches CLIP, indexes example photos, serves
#                   (MODEL=DIR|REPO, PHOTOS=DIR, LISTEN=HOST:PORT, DEMO_CHECK=1)

BUILD ?= release
B ?= build/$(BUILD)

CC ?= cc
ifeq ($(CC),cc)
CC := gcc
endif

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Werror
CPPFLAGS := -Isrc -Itests -I/usr/include/postgresql -D_GNU_SOURCE
BASE_CFLAGS := -std=c17 -g -pthread -fopenmp $(WARN)

ifeq ($(BUILD),release)
OPT := -O2
else ifeq ($(BUILD),debug)
OPT := -O0
else ifeq ($(BUILD),asan)
OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
OPT := -O2
endif
CFLAGS ?=
ALL_CFLAGS := $(BASE_CFLAGS) $(OPT) $(CFLAGS)

LIBS := -ldnnl -ljpeg -lpng -lwebp -lgif -ljansson -lutf8proc -lsqlite3 -lpq \
        -lmicrohttpd -lcurl -lcrypto -lz -lm -lpthread

SRCS := $(shell find src -name '*.c' | sort)
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
LIB_OBJS := $(LIB_SRCS:%.c=$(B)/%.o)
MAIN_OBJ := $(B)/src/main.o
TEST_SRCS := $(sort $(wildcard tests/test_*.c))
TEST_SRCS := $(filter-out tests/test_main.c,$(TEST_SRCS))
TEST_BINS := $(TEST_SRCS:tests/%.c=$(B)/tests/%)
FUZZ_SRCS := $(sort $(wildcard fuzz/fuzz_*.c))
REPLAY_BINS := $(FUZZ_SRCS:fuzz/%.c=$(B)/fuzz/replay_%)

BIN := $(B)/imgsearch

# quiet unless V=1
ifeq ($(V),1)
Q :=
else
Q := @
endif

.PHONY: all debug asan check test bench fuzz-smoke clean demo tests deps
all: $(BIN)
ifeq ($(BUILD),release)
all: imgsearch
imgsearch: $(BIN)
	cp $< $@
endif

debug:
	$(MAKE) BUILD=debug
asan:
	$(MAKE) BUILD=asan

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC $<")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(B)/libimgsearch.a: $(LIB_OBJS)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BIN): $(MAIN_OBJ) $(B)/libimgsearch.a
	@$(if $(Q),echo "  LD $@")
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $^ $(LIBS)

$(B)/tests/%: $(B)/tests/%.o $(B)/tests/test_main.o $(B)/libimgsearch.a
	@$(if $(Q),echo "  LD $@")
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $^ $(LIBS)

$(B)/fuzz/replay_%: $(B)/fuzz/%.o $(B)/fuzz/replay.o $(B)/libimgsearch.a
	@$(if $(Q),echo "  LD $@")
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $^ $(LIBS)

tests: $(BIN) $(TEST_BINS) $(REPLAY_BINS)
ifeq ($(BUILD),release)
tests: imgsearch
endif

# The Debian packages (idempotent; a no-op when all are present).
deps:
	@scripts/install-deps

# Every test: unit binaries, fuzz corpora replayed, CLI tests on the binary.
check: deps
	@$(MAKE) --no-print-directory tests
	@BUILD_DIR=$(B) tests/run

test: check

bench: all
	@BUILD_DIR=$(B) bench/run

FUZZ_CC := clang-14
FUZZ_FLAGS := -std=c17 -g -O1 -pthread -fopenmp=libgomp $(WARN) -Wno-unused-command-line-argument \
              -fsanitize=fuzzer,address,undefined
FUZZ_SECONDS ?= 20
F := build/fuzz
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(F)/%.o)
$(F)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC(fuzz) $<")
	$(Q)$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_FLAGS:-fsanitize=fuzzer,%=-fsanitize=fuzzer-no-link,%) -c $< -o $@
$(F)/libimgsearch.a: $(FUZZ_LIB_OBJS)
	@rm -f $@
	$(Q)ar rcs $@ $^
$(F)/fuzz_%: $(F)/fuzz/fuzz_%.o $(F)/libimgsearch.a
	@$(if $(Q),echo "  LD $@")
	$(Q)$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ $(LIBS)

fuzz-smoke: $(FUZZ_SRCS:fuzz/%.c=$(F)/%)
	@set -e; for t in $^; do n=$$(basename $$t); \
	  mkdir -p $(F)/corpus-$$n; \
	  echo "fuzz-smoke: $$n for $(FUZZ_SECONDS) s"; \
	  if $$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=4096 \
	      $(F)/corpus-$$n fuzz/corpus/$${n#fuzz_} >$(F)/$$n.log 2>&1; then \
	    grep -E '^Done [0-9]+ runs' $(F)/$$n.log; \
	  else tail -n 40 $(F)/$$n.log; echo "fuzz-smoke: $$n FAILED"; exit 1; fi; \
	done

# From a fresh clone to the search page (scripts/demo says what it does).
demo: deps
	@$(MAKE) --no-print-directory BUILD=release all
	@MODEL="$(MODEL)" PHOTOS="$(PHOTOS)" LISTEN="$(LISTEN)" DEMO_CHECK="$(DEMO_CHECK)" scripts/demo

clean:
	rm -rf build imgsearch

# objects are never intermediate files to delete
.SECONDARY:

-include $(shell find build -name '*.d' 2>/dev/null)

# Clustered vectors with exact truth for `imgsearch bench ann` (bench/ann.sh).
$(B)/bench/gen_vectors: bench/gen_vectors.c $(B)/libimgsearch.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD $@")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -o $@ $^ $(LIBS)

# The HTTP concurrency test and loopback benchmark client (tests/http/load.c,
# libcurl + pthreads), used by tests/http/test_serve.sh and bench/http.sh.
$(B)/tests/http/load: tests/http/load.c $(B)/libimgsearch.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD $@")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -o $@ $^ $(LIBS)
tests: $(B)/tests/http/load
