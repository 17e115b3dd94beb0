/*
 * sl_log.c: the one logger of all three binaries (see sl_log.h for why a
 * line is one write and why JSON off a terminal).
 */
#include "sl_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Set once by sl_log_init() before threads start; read-only afterwards. */
static struct {
	const char *component;
	enum sl_log_level level;
	enum sl_log_format format;
	int fd;
} log_state = {"sluice", SL_LOG_INFO, SL_LOG_TEXT, 2};

/* This thread's tag (sl_log_set_tag): a static or long-lived string. */
static __thread const char *log_tag;

void sl_log_set_tag(const char *tag)
{
	log_tag = tag;
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void sl_log_init(const char *component, enum sl_log_level level, enum sl_log_format format, int fd)
{
	log_state.component = component;
	log_state.level = level;
	log_state.fd = fd;
	if (format == SL_LOG_AUTO)
		format = isatty(fd) ? SL_LOG_TEXT : SL_LOG_JSON;
	log_state.format = format;
}

static int parse_name(const char *s, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -EINVAL;
}

int sl_log_level_parse(const char *s)
{
	return parse_name(s, level_names, 4);
}

int sl_log_format_parse(const char *s)
{
	static const char *const formats[] = {"auto", "text", "json"};
	return parse_name(s, formats, 3);
}

const char *sl_log_level_name(enum sl_log_level level)
{
	return (unsigned)level < 4 ? level_names[level] : "?";
}

int sl_log_enabled(enum sl_log_level level)
{
	return level <= log_state.level;
}

/*
 * When the output was cut, drop a trailing UTF-8 sequence that lost its last
 * bytes, so a cut line is still valid UTF-8 (JSON requires it).
 */
static size_t utf8_trim(const char *dst, size_t o)
{
	size_t start = o, need;
	unsigned char lead;

	while (start > 0 && start + 4 > o && ((unsigned char)dst[start - 1] & 0xc0) == 0x80)
		start--;
	if (start == 0)
		return o;
	lead = (unsigned char)dst[start - 1];
	if (lead < 0xc0)
		return o;
	need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
	return o - (start - 1) < need ? start - 1 : o;
}

size_t sl_json_escape(char *dst, size_t cap, const char *src, size_t len, size_t *consumed)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		char esc = 0;

		switch (c) {
		case '"': esc = '"'; break;
		case '\\': esc = '\\'; break;
		case '\n': esc = 'n'; break;
		case '\r': esc = 'r'; break;
		case '\t': esc = 't'; break;
		default: break;
		}
		if (esc) {
			if (o + 2 > cap)
				break;
			dst[o++] = '\\';
			dst[o++] = esc;
		} else if (c < 0x20 || c == 0x7f) {
			if (o + 6 > cap)
				break;
			memcpy(dst + o, "\\u00", 4);
			dst[o + 4] = hex[c >> 4];
			dst[o + 5] = hex[c & 15];
			o += 6;
		} else {
			/* Bytes >= 0x80 pass through: messages are UTF-8 by contract. */
			if (o + 1 > cap)
				break;
			dst[o++] = (char)c;
		}
	}
	if (i < len)
		o = utf8_trim(dst, o);
	if (consumed)
		*consumed = i;
	return o;
}

static size_t format_time(char *buf, size_t cap, const struct timespec *ts, int iso)
{
	struct tm tm;
	size_t n;

	gmtime_r(&ts->tv_sec, &tm);
	n = strftime(buf, cap, iso ? "%Y-%m-%dT%H:%M:%S" : "%H:%M:%S", &tm);
	n += (size_t)snprintf(buf + n, cap - n, ".%03ldZ", ts->tv_nsec / 1000000);
	return n < cap ? n : cap - 1;
}

/*
 * JSON line: {"ts":"...","level":"...","component":"...","msg":"..."}\n.
 * The fixed parts are small and bounded, so only msg can be cut; the tail
 * "\"}\n" is reserved first so the line always closes.
 */
static size_t format_json(char *buf, size_t cap, const struct timespec *ts, enum sl_log_level level,
			  const char *component, const char *msg)
{
	static const char tail[] = "\"}\n";
	char tbuf[40];
	size_t o;

	format_time(tbuf, sizeof(tbuf), ts, 1);
	o = (size_t)snprintf(buf, cap, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"", tbuf,
			     sl_log_level_name(level));
	o += sl_json_escape(buf + o, cap - o - sizeof(tail), component, strlen(component), NULL);
	o += (size_t)snprintf(buf + o, cap - o, "\",\"msg\":\"");
	o += sl_json_escape(buf + o, cap - o - sizeof(tail), msg, strlen(msg), NULL);
	memcpy(buf + o, tail, sizeof(tail));
	return o + sizeof(tail) - 1;
}

static size_t format_text(char *buf, size_t cap, const struct timespec *ts, enum sl_log_level level,
			  const char *component, const char *msg)
{
	char tbuf[40];
	int n;

	format_time(tbuf, sizeof(tbuf), ts, 0);
	n = snprintf(buf, cap, "%s %-5s %s: %s\n", tbuf, sl_log_level_name(level), component, msg);
	if (n < 0)
		n = 0;
	if ((size_t)n >= cap) {
		/* Cut, but keep the newline so the next line starts clean. */
		n = (int)cap - 1;
		buf[n - 1] = '\n';
		buf[n] = '\0';
	}
	return (size_t)n;
}

size_t sl_log_format_line(char *buf, size_t cap, enum sl_log_format format,
			  const struct timespec *ts, enum sl_log_level level, const char *component,
			  const char *msg)
{
	if (format == SL_LOG_JSON)
		return format_json(buf, cap, ts, level, component, msg);
	return format_text(buf, cap, ts, level, component, msg);
}

void sl_log(enum sl_log_level level, const char *fmt, ...)
{
	char msg[SL_LOG_LINE_MAX], line[SL_LOG_LINE_MAX], comp[128];
	const char *component = log_state.component;
	struct timespec ts;
	va_list ap;
	size_t n;

	if (!sl_log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	if (log_tag) {
		snprintf(comp, sizeof(comp), "%s[%s]", component, log_tag);
		component = comp;
	}
	n = sl_log_format_line(line, sizeof(line), log_state.format, &ts, level, component, msg);
	/* One write per line; a short or failed write to stderr has no better place to go. */
	if (write(log_state.fd, line, n) < 0)
		return;
}

size_t sl_time_iso8601(char *buf, size_t cap)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return format_time(buf, cap, &ts, 1);
}
