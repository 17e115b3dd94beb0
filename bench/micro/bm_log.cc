// bm_log.cc: cost of formatting one log line, JSON against text, with the
// plain snprintf of the same fields as the baseline in the same run: JSON
// escaping should cost little over printing, since every relay request that
// logs (errors, debug) pays it.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <ctime>

#include "sl_log.h"

static const struct timespec ts = {1700000000, 123456789};
static const char msg[] = "agent 7f3a connected from 203.0.113.9:51234, tunnel \"demo\" bound";

static void BM_LogFormatJSON(benchmark::State &state)
{
	char buf[SL_LOG_LINE_MAX];
	for (auto _ : state) {
		size_t n = sl_log_format_line(buf, sizeof(buf), SL_LOG_JSON, &ts, SL_LOG_INFO,
					      "relay", msg);
		benchmark::DoNotOptimize(n);
	}
}
BENCHMARK(BM_LogFormatJSON);

static void BM_LogFormatText(benchmark::State &state)
{
	char buf[SL_LOG_LINE_MAX];
	for (auto _ : state) {
		size_t n = sl_log_format_line(buf, sizeof(buf), SL_LOG_TEXT, &ts, SL_LOG_INFO,
					      "relay", msg);
		benchmark::DoNotOptimize(n);
	}
}
BENCHMARK(BM_LogFormatText);

// Baseline: the same fields with snprintf and no escaping or time formatting.
static void BM_BaselineSnprintf(benchmark::State &state)
{
	char buf[SL_LOG_LINE_MAX];
	for (auto _ : state) {
		int n = snprintf(buf, sizeof(buf), "%ld.%09ld info relay: %s\n", (long)ts.tv_sec,
				 ts.tv_nsec, msg);
		benchmark::DoNotOptimize(n);
	}
}
BENCHMARK(BM_BaselineSnprintf);

static void BM_JsonEscape(benchmark::State &state)
{
	char buf[256];
	for (auto _ : state) {
		size_t n = sl_json_escape(buf, sizeof(buf), msg, sizeof(msg) - 1, nullptr);
		benchmark::DoNotOptimize(n);
	}
	state.SetBytesProcessed(state.iterations() * (int64_t)(sizeof(msg) - 1));
}
BENCHMARK(BM_JsonEscape);

BENCHMARK_MAIN();
