// bm_config.cc: cost of loading a configuration, file text and flags.
// Start-up only, so the figure matters for `--print-config` loops in scripts
// and for the fuzzer's speed, not for traffic; it is the harness's first
// benchmark and proves C objects link into Google Benchmark.
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>

#include "sl_config.h"

static const struct sl_opt opts[] = {
	SL_OPTS_COMMON,
	SL_ADDR("listen", "127.0.0.1:8080", "l"),
	SL_INT("workers", "2", 0, 64, "w"),
	SL_ENUM("engine", "io_uring", "io_uring|epoll", "e"),
	SL_STR("domain", "localhost", "d"),
};

static const char text[] = "# relay configuration\n"
			   "listen = 0.0.0.0:80\n"
			   "workers = 2   # one per core\n"
			   "engine = epoll\n"
			   "domain = \"tunnels.example.com\"\n";

static void BM_ConfigParseText(benchmark::State &state)
{
	for (auto _ : state) {
		struct sl_config c;
		sl_config_init(&c, opts, sizeof(opts) / sizeof(opts[0]));
		int err = sl_config_parse_text(&c, text, sizeof(text) - 1, "bench");
		benchmark::DoNotOptimize(err);
		sl_config_free(&c);
	}
	state.SetBytesProcessed(state.iterations() * (int64_t)(sizeof(text) - 1));
}
BENCHMARK(BM_ConfigParseText);

static void BM_ConfigLoadFlags(benchmark::State &state)
{
	char *env[] = {nullptr};
	char a0[] = "relay", a1[] = "--listen=127.0.0.1:9000", a2[] = "--workers", a3[] = "4",
	     a4[] = "--engine=epoll";
	char *argv[] = {a0, a1, a2, a3, a4};
	for (auto _ : state) {
		struct sl_config c;
		sl_config_init(&c, opts, sizeof(opts) / sizeof(opts[0]));
		int err = sl_config_load(&c, 5, argv, env);
		benchmark::DoNotOptimize(err);
		sl_config_free(&c);
	}
}
BENCHMARK(BM_ConfigLoadFlags);

BENCHMARK_MAIN();
