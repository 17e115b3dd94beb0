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
	SL_CONFIG_COMMON_OPTS,
	{.name = "listen", .type = SL_OPT_ADDR, .def = "127.0.0.1:8080", .help = "l"},
	{.name = "workers", .type = SL_OPT_INT, .def = "2", .min = 0, .max = 256, .help = "w"},
	{.name = "engine",
	 .type = SL_OPT_ENUM,
	 .def = "io_uring",
	 .choices = "io_uring|epoll",
	 .help = "e"},
	{.name = "insecure", .type = SL_OPT_BOOL, .def = "false", .help = "i"},
	{.name = "tcp-ports", .type = SL_OPT_RANGE, .def = "20000-20999", .help = "p"},
	{.name = "domain", .type = SL_OPT_STR, .help = "d"},
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
