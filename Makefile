# Entry points: `make run` starts the service on its embedded SQLite store, `make test` runs
# the whole suite under AddressSanitizer and UndefinedBehaviorSanitizer. Both install the
# Debian packages they need first (scripts/install-deps).

BUILD_DIR ?= build
TEST_BUILD_DIR ?= build-test
ARGS ?=

.PHONY: all deps build run test bench format clean

all: build

deps:
	@scripts/install-deps

build: deps
	@[ -f $(BUILD_DIR)/build.ninja ] || meson setup $(BUILD_DIR) --buildtype=release
	ninja -C $(BUILD_DIR) bearhook

run: build
	./$(BUILD_DIR)/bearhook serve $(ARGS)

test: deps
	@[ -f $(TEST_BUILD_DIR)/build.ninja ] || meson setup $(TEST_BUILD_DIR) --buildtype=debug \
		-Db_sanitize=address,undefined -Db_lundef=false -Dc_args=-fno-sanitize-recover=all
	ninja -C $(TEST_BUILD_DIR)
	/usr/bin/python3 scripts/run-tests $(TEST_BUILD_DIR)

# Benchmarks: builds an optimised bearhook and the tools in build-bench/, runs every scenario
# on loopback and prints one table (also written to build-bench/results.md). It reports and
# never fails on a missed target. ARGS=--quick runs a shorter version.
bench:
	@scripts/install-deps wrk
	@[ -f build-bench/bearhook/build.ninja ] || meson setup build-bench/bearhook --buildtype=release
	ninja -C build-bench/bearhook bearhook
	$(MAKE) -C bench
	/usr/bin/python3 bench/run $(ARGS)

format:
	clang-format -i src/*/*.c src/*/*.h tests/unit/*.c

clean:
	rm -rf $(BUILD_DIR) $(TEST_BUILD_DIR)
