/*
 * sl_config.h: configuration shared by the three binaries. Every option has
 * one name used three ways: the flag --name, the environment variable
 * SLUICE_NAME (upper case, '-' as '_') and the key "name" in a config file.
 * Precedence, highest first: flag, environment, config file, default.
 *
 * Config file syntax (docs/configuration.md): one "key = value" per line,
 * '#' starts a comment outside double quotes, values may be double-quoted
 * with \" and \\ escapes. Every error names the key, the bad value and where
 * it came from (flag, variable, or file:line). A program that asks for them
 * (sl_config.sections) also takes sections at the end of the file:
 * "[name]" lines, each key below one belonging to it, as in TOML.
 */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum sl_opt_type {
	SL_OPT_STR = 0,
	SL_OPT_INT,   /* decimal, within [min, max] */
	SL_OPT_BOOL,  /* true/false/yes/no/on/off/1/0; a bare flag means true */
	SL_OPT_ENUM,  /* one of choices, "a|b|c" */
	SL_OPT_ADDR,  /* host:port or [v6]:port, port 1..65535 */
	SL_OPT_RANGE, /* lo-hi port range, 1 <= lo <= hi <= 65535 */
};

#define SL_OPT_F_SECRET 0x1 /* value redacted by sl_config_print() */

/* One option; tables of these are static const in each program's main file,
 * written with the constructors below (SL_INT, SL_STR, ...). Ownership: static tables. */
struct sl_opt {
	const char *name;
	enum sl_opt_type type;
	const char *def; /* default as text, NULL for none */
	const char *help;
	long min, max;	     /* SL_OPT_INT bounds, inclusive */
	const char *choices; /* SL_OPT_ENUM: "a|b|c" */
	unsigned flags;
	/* Optional extra check of a valid-typed value: returns 0, or -EINVAL
	 * with a reason ("expected redis://host:port or unix:/path") in why. */
	int (*check)(const char *value, char *why, size_t cap);
	/* A second environment variable read when SLUICE_NAME is unset: the
	 * conventional names operators set in a container (REDIS_URL, ...). */
	const char *env_alias;
};

/* Where a value came from; higher wins. */
enum sl_src {
	SL_SRC_UNSET = 0,
	SL_SRC_DEFAULT,
	SL_SRC_FILE,
	SL_SRC_ENV,
	SL_SRC_FLAG,
};

/* Ownership: one per option in sl_config.vals; str is malloc'd by sl_config_set and freed by
 * sl_config_free. */
struct sl_val {
	char *str; /* owned, NUL-terminated; NULL when unset */
	long num;  /* parsed form for INT and BOOL; lo<<16|hi for RANGE */
	enum sl_src src;
};

#define SL_CONFIG_MAX_OPTS 64	     /* more than any binary needs; vals is inline */
#define SL_CONFIG_MAX_ARGS 16	     /* positional words ("http", "3000") */
#define SL_CONFIG_LINE_MAX 4096	     /* config file line, newline excluded */
#define SL_CONFIG_FILE_MAX (1 << 20) /* a bigger config file is a mistake */

/*
 * One line of a config file's sections, kept as read: sl_config knows
 * nothing of what sections mean, the program checks them (the agent's
 * [tunnel.NAME], dataplane/ag_tunnels.c), with sl_config_set on a config of
 * the section's own table. Ownership: in sl_config.sect; the four strings
 * share one malloc'd block at section, freed by sl_config_free.
 */
struct sl_sect_line {
	char *section; /* "tunnel.web" */
	char *key;     /* NULL on the header line itself */
	char *value;   /* NULL on the header line */
	char *where;   /* "file:line", for the program's errors */
};

/*
 * Ownership: the caller owns the struct (usually on main's stack); vals[].str
 * are heap copies freed by sl_config_free(); args[] borrow from argv; sect
 * is malloc'd (sl_array_grow), its lines too, all freed by sl_config_free().
 */
struct sl_config {
	const struct sl_opt *opts;
	size_t nopts;
	struct sl_val vals[SL_CONFIG_MAX_OPTS];
	const char *args[SL_CONFIG_MAX_ARGS];
	size_t nargs;
	char err[512]; /* the last error, for the user */
	/* Set after sl_config_init for a program whose file may end in
	 * sections: the top-level keys are applied as ever, the section lines
	 * kept in sect[] (a header and its keys, in file order). Unset, a
	 * "[name]" line is a syntax error like any other junk. */
	int sections;
	struct sl_sect_line *sect;
	size_t nsect, sect_cap;
};

/*
 * One way to write an option: a constructor per type, one line each in a
 * table. The arguments every option of that type has come first (name,
 * default or NULL, then the bounds or choices), the help text last; what only
 * some options have follows as designated initializers, so it reads by name:
 *
 *	SL_INT("workers", "0", 0, 256, "worker threads, 0 = one per core"),
 *	SL_STR("limit-tcp", "off", "new connections per TCP tunnel",
 *	       .check = pr_limit_check),
 *	SL_SECRET("key", "PEM private key for --cert"),
 *
 * (A C++ user must give the extra fields in the struct's order.)
 */
/* clang-format off */
#define SL_OPT_(n, t, d, h, ...)     {.name = (n), .type = (t), .def = (d), .help = (h), __VA_ARGS__}
#define SL_STR(n, d, h, ...)         SL_OPT_(n, SL_OPT_STR, d, h, __VA_ARGS__)
#define SL_SECRET(n, h, ...)         SL_OPT_(n, SL_OPT_STR, NULL, h, .flags = SL_OPT_F_SECRET, __VA_ARGS__)
#define SL_BOOL(n, d, h, ...)        SL_OPT_(n, SL_OPT_BOOL, d, h, __VA_ARGS__)
#define SL_ADDR(n, d, h, ...)        SL_OPT_(n, SL_OPT_ADDR, d, h, __VA_ARGS__)
#define SL_RANGE(n, d, h, ...)       SL_OPT_(n, SL_OPT_RANGE, d, h, __VA_ARGS__)
#define SL_INT(n, d, lo, hi, h, ...) SL_OPT_(n, SL_OPT_INT, d, h, .min = (lo), .max = (hi), __VA_ARGS__)
#define SL_ENUM(n, d, ch, h, ...)    SL_OPT_(n, SL_OPT_ENUM, d, h, .choices = (ch), __VA_ARGS__)
/* clang-format on */

/*
 * Options several programs share, each defined once: SL_OPTS_COMMON first
 * in every table, the others where the program's --help lists them.
 */
/* clang-format off */
#define SL_OPTS_COMMON                                                                             \
	SL_STR("config", NULL, "read options from this file"),                                     \
	SL_ENUM("log-level", "info", "error|warn|info|debug", "log verbosity",                     \
		.env_alias = "LOG_LEVEL"),                                                         \
	SL_ENUM("log-format", "auto", "auto|text|json",                                            \
		"auto: text on a terminal, JSON lines otherwise"),                                 \
	SL_BOOL("print-config", "false",                                                           \
		"print the effective configuration with the source of each value, then exit")

/* The data plane's I/O (relay and agent). */
#define SL_OPTS_ENGINE                                                                             \
	SL_BOOL("splice", "true",                                                                  \
		"bulk transfers between plain sockets use splice(2), socket to pipe to socket "    \
		"(--no-splice: copy through buffers; bench/RESULTS.md)"),                          \
	SL_ENUM("engine", "io_uring", "io_uring|epoll", "I/O engine")

/* The control plane's HMAC key, which relays share to check agent tokens. */
#define SL_OPT_SESSION_SECRET(help) \
	SL_SECRET("session-secret", help, .env_alias = "SESSION_SECRET_KEY")
/* clang-format on */

/* Prepare c for the table opts (n entries); sets defaults. Returns 0 or -EINVAL. */
int sl_config_init(struct sl_config *c, const struct sl_opt *opts, size_t n);

/*
 * Apply, in rising precedence, the config file (--config or SLUICE_CONFIG),
 * the environment (envp, NULL for environ) and the flags in argv[1..].
 * Returns 0, or a negative errno with c->err set.
 */
int sl_config_load(struct sl_config *c, int argc, char **argv, char **envp);

/* Apply config file text; origin names it in errors. Returns 0 or -EINVAL. */
int sl_config_parse_text(struct sl_config *c, const char *buf, size_t len, const char *origin);

/* Read and apply a config file. Returns 0, -EINVAL (bad content) or -errno. */
int sl_config_parse_file(struct sl_config *c, const char *path);

/*
 * Set one option by name if src is at least the current source. origin
 * ("--workers", "SLUICE_WORKERS", "file:3") appears in errors.
 * Returns 0, -ENOENT for an unknown key, -EINVAL for a bad value.
 */
int sl_config_set(struct sl_config *c, const char *name, const char *value, enum sl_src src,
		  const char *origin);

/* Look up a value; a name not in the table is a programming error (abort). */
const struct sl_val *sl_config_get(const struct sl_config *c, const char *name);
const char *sl_config_str(const struct sl_config *c, const char *name);
long sl_config_int(const struct sl_config *c, const char *name);

/* Print "name = value  # source" lines, secrets redacted. */
void sl_config_print(const struct sl_config *c, FILE *out);

/* Print the option table as --help text. */
void sl_config_usage(const struct sl_opt *opts, size_t n, FILE *out);

const char *sl_config_src_name(enum sl_src src);

void sl_config_free(struct sl_config *c);

#ifdef __cplusplus
}
#endif
#endif
