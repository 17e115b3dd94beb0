/*
 * fuzz_config.c: libFuzzer target for the config file parser. Any input must
 * either apply cleanly or fail with a message; never crash, leak or read out
 * of bounds. A value that applied must read back through --print-config's
 * printer and parse to the same values (the printer quotes what needs it).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sl_config.h"

static const struct sl_opt opts[] = {
	SL_OPTS_COMMON,
	SL_ADDR("listen", "127.0.0.1:8080", "l"),
	SL_INT("workers", "2", 0, 256, "w"),
	SL_ENUM("engine", "io_uring", "io_uring|epoll", "e"),
	SL_BOOL("insecure", "false", "i"),
	SL_RANGE("tcp-ports", "20000-20999", "p"),
	SL_STR("domain", NULL, "d"),
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static void check_round_trip(const struct sl_config *c)
{
	struct sl_config back;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	sl_config_print(c, f);
	fclose(f);
	sl_config_init(&back, opts, NOPTS);
	if (sl_config_parse_text(&back, buf, len, "printed") != 0)
		abort();
	for (size_t i = 0; i < NOPTS; i++) {
		const char *a = c->vals[i].str, *b = back.vals[i].str;

		if (strcmp(opts[i].name, "print-config") == 0 ||
		    strcmp(opts[i].name, "config") == 0)
			continue;
		if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0))
			abort();
	}
	sl_config_free(&back);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sl_config c;

	sl_config_init(&c, opts, NOPTS);
	if (sl_config_parse_text(&c, (const char *)data, size, "fuzz") == 0)
		check_round_trip(&c);
	else if (c.err[0] == '\0')
		abort(); /* every failure must say why */
	sl_config_free(&c);
	return 0;
}
