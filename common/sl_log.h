/*
 * sl_log.h: levelled logging shared by sluice-relay, sluice (the agent) and
 * sluice-control. One line per event, written with a single write(2) so lines
 * from several threads never interleave (POSIX makes writes of up to PIPE_BUF
 * bytes to a pipe atomic; SL_LOG_LINE_MAX stays below it). Human text on a
 * terminal, JSON lines otherwise, so a log shipper needs no parser of ours.
 */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stddef.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Levels, most severe first; a message is written when its level <= the set level. */
enum sl_log_level {
	SL_LOG_ERROR = 0,
	SL_LOG_WARN,
	SL_LOG_INFO,
	SL_LOG_DEBUG,
};

enum sl_log_format {
	SL_LOG_AUTO = 0, /* text when the log fd is a terminal, JSON otherwise */
	SL_LOG_TEXT,
	SL_LOG_JSON,
};

/* Longest line written, newline included; longer messages are cut, never split. */
#define SL_LOG_LINE_MAX 4000

/*
 * Set where and how to log. component is a static string ("relay", "agent",
 * "control") kept by pointer. fd is usually 2. Called once at start-up,
 * before any thread logs.
 */
void sl_log_init(const char *component, enum sl_log_level level, enum sl_log_format format, int fd);

/*
 * Tag this thread's lines: the component reads "agent[web]" (text and
 * JSON alike) where several threads do the same work for different things,
 * the agent's tunnels. tag must outlive the thread's logging; NULL removes it.
 */
void sl_log_set_tag(const char *tag);

/* Parse "error|warn|info|debug" or "auto|text|json"; return the value or -EINVAL. */
int sl_log_level_parse(const char *s);
int sl_log_format_parse(const char *s);
const char *sl_log_level_name(enum sl_log_level level);

/* Whether a message at this level would be written (to skip costly arguments). */
int sl_log_enabled(enum sl_log_level level);

/*
 * Format one line into buf (cap bytes, cap >= 64) without writing it.
 * format must be SL_LOG_TEXT or SL_LOG_JSON. Returns the line length, newline
 * included; the line is always complete (valid JSON, ending in "\n") even
 * when msg had to be cut. Exposed for tests and benchmarks.
 */
size_t sl_log_format_line(char *buf, size_t cap, enum sl_log_format format,
			  const struct timespec *ts, enum sl_log_level level, const char *component,
			  const char *msg);

/*
 * Escape src as the inside of a JSON string into dst (cap bytes). Stops
 * before an escape sequence that would not fit. Returns bytes written; dst is
 * not NUL-terminated. *consumed (if not NULL) receives how much of src fit.
 */
/* Now, UTC, as 2026-11-22T03:04:05.678Z into buf; its length. */
size_t sl_time_iso8601(char *buf, size_t cap);

size_t sl_json_escape(char *dst, size_t cap, const char *src, size_t len, size_t *consumed);

void sl_log(enum sl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sl_error(...) sl_log(SL_LOG_ERROR, __VA_ARGS__)
#define sl_warn(...)  sl_log(SL_LOG_WARN, __VA_ARGS__)
#define sl_info(...)  sl_log(SL_LOG_INFO, __VA_ARGS__)
#define sl_debug(...) sl_log(SL_LOG_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
