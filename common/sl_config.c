/*
 * sl_config.c: options from flags, environment and a config file (see
 * sl_config.h for the precedence and the file syntax). Runs at start-up only,
 * so it may allocate; every value is validated as it is set, and every error
 * names the key, the value and where it came from.
 */
#include "sl_config.h"
#include "sl_buf.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

static const char *const src_names[] = {"unset", "default", "file", "env", "flag"};

const char *sl_config_src_name(enum sl_src src)
{
	return (unsigned)src < 5 ? src_names[src] : "?";
}

static int fail(struct sl_config *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct sl_config *c, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return err;
}

static int find_opt(const struct sl_config *c, const char *name, size_t len)
{
	for (size_t i = 0; i < c->nopts; i++)
		if (strlen(c->opts[i].name) == len && memcmp(c->opts[i].name, name, len) == 0)
			return (int)i;
	return -ENOENT;
}

/* Strict decimal: optional sign, digits only, no overflow. */
static int parse_long(const char *s, long *out)
{
	char *end;
	long v;

	if (*s == '\0' || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_bool(const char *s)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (int i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0)
			return 1;
		if (strcasecmp(s, no[i]) == 0)
			return 0;
	}
	return -EINVAL;
}

static int parse_port(const char *s, long *port)
{
	if (parse_long(s, port) < 0 || *port < 1 || *port > 65535)
		return -EINVAL;
	return 0;
}

static int host_char_ok(char ch)
{
	return isalnum((unsigned char)ch) || ch == '.' || ch == '-' || ch == '_' || ch == '*';
}

/* host:port, [v6]:port; the host is checked for shape only, never resolved here. */
static int parse_addr(const char *s)
{
	const char *colon = strrchr(s, ':');
	long port;

	if (colon == NULL || colon == s || parse_port(colon + 1, &port) < 0)
		return -EINVAL;
	if (s[0] == '[') {
		if (colon[-1] != ']' || colon - s < 3)
			return -EINVAL;
		for (const char *p = s + 1; p < colon - 1; p++)
			if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
				return -EINVAL;
		return 0;
	}
	for (const char *p = s; p < colon; p++)
		if (!host_char_ok(*p))
			return -EINVAL;
	return 0;
}

static int parse_range(const char *s, long *packed)
{
	char buf[16];
	const char *dash = strchr(s, '-');
	long lo, hi;

	if (dash == NULL || (size_t)(dash - s) >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, (size_t)(dash - s));
	buf[dash - s] = '\0';
	if (parse_port(buf, &lo) < 0 || parse_port(dash + 1, &hi) < 0 || lo > hi)
		return -EINVAL;
	*packed = lo << 16 | hi;
	return 0;
}

static int enum_has(const char *choices, const char *v)
{
	size_t n = strlen(v);

	for (const char *p = choices; *p;) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);

		if (len == n && memcmp(p, v, n) == 0)
			return 1;
		p += len + (bar != NULL);
	}
	return 0;
}

/* Check value against the option's type; on success store the parsed number. */
static int validate(const struct sl_opt *o, const char *v, long *num, char *why, size_t cap)
{
	int b;

	*num = 0;
	switch (o->type) {
	case SL_OPT_STR: break;
	case SL_OPT_INT:
		if (parse_long(v, num) < 0 || *num < o->min || *num > o->max) {
			snprintf(why, cap, "expected an integer in %ld..%ld", o->min, o->max);
			return -EINVAL;
		}
		break;
	case SL_OPT_BOOL:
		if ((b = parse_bool(v)) < 0) {
			snprintf(why, cap, "expected true or false");
			return -EINVAL;
		}
		*num = b;
		break;
	case SL_OPT_ENUM:
		if (!enum_has(o->choices, v)) {
			snprintf(why, cap, "expected one of %s", o->choices);
			return -EINVAL;
		}
		break;
	case SL_OPT_ADDR:
		if (parse_addr(v) < 0) {
			snprintf(why, cap, "expected host:port with a port in 1..65535");
			return -EINVAL;
		}
		break;
	case SL_OPT_RANGE:
		if (parse_range(v, num) < 0) {
			snprintf(why, cap, "expected a port range LOW-HIGH within 1..65535");
			return -EINVAL;
		}
		break;
	}
	if (o->check)
		return o->check(v, why, cap);
	return 0;
}

int sl_config_set(struct sl_config *c, const char *name, const char *value, enum sl_src src,
		  const char *origin)
{
	int i = find_opt(c, name, strlen(name));
	struct sl_val *val;
	char why[160] = "";
	char *copy;
	long num;

	if (i < 0)
		return fail(c, -ENOENT, "unknown key \"%s\" (from %s)", name, origin);
	val = &c->vals[i];
	if (src < val->src)
		return 0;
	if (validate(&c->opts[i], value, &num, why, sizeof(why)) < 0)
		return fail(c, -EINVAL, "invalid value \"%s\" for %s (from %s): %s", value, name,
			    origin, why);
	copy = strdup(value);
	if (copy == NULL)
		return fail(c, -ENOMEM, "out of memory");
	free(val->str);
	val->str = copy;
	val->num = num;
	val->src = src;
	return 0;
}

int sl_config_init(struct sl_config *c, const struct sl_opt *opts, size_t n)
{
	memset(c, 0, sizeof(*c));
	c->opts = opts;
	c->nopts = n;
	if (n > SL_CONFIG_MAX_OPTS)
		return fail(c, -EINVAL, "too many options (%zu > %d)", n, SL_CONFIG_MAX_OPTS);
	for (size_t i = 0; i < n; i++) {
		int err;

		if (opts[i].def == NULL)
			continue;
		err = sl_config_set(c, opts[i].name, opts[i].def, SL_SRC_DEFAULT, "default");
		if (err < 0)
			return err;
	}
	return 0;
}

/* ---- config file ---- */

static const char *skip_space(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

/*
 * Parse a double-quoted value starting after the opening quote into out
 * (cap bytes). Returns the position after the closing quote, or NULL.
 */
static const char *parse_quoted(const char *p, const char *end, char *out, size_t cap)
{
	size_t o = 0;

	while (p < end && *p != '"') {
		char ch = *p++;

		if (ch == '\\') {
			if (p == end || (*p != '"' && *p != '\\'))
				return NULL;
			ch = *p++;
		}
		if (o + 1 >= cap)
			return NULL;
		out[o++] = ch;
	}
	if (p == end)
		return NULL;
	out[o] = '\0';
	return p + 1;
}

/* Parse one line (no newline) into key and value; returns 0, 1 (blank) or -EINVAL. */
static int parse_line(const char *p, const char *end, char *key, char *value, const char **why)
{
	const char *k, *v;
	size_t klen;

	p = skip_space(p, end);
	if (p == end || *p == '#')
		return 1;
	for (k = p; p < end && (isalnum((unsigned char)*p) || *p == '-' || *p == '_'); p++)
		;
	klen = (size_t)(p - k);
	if (klen == 0 || klen >= 64)
		return (*why = "expected a key of letters, digits and '-'"), -EINVAL;
	memcpy(key, k, klen);
	key[klen] = '\0';
	p = skip_space(p, end);
	if (p == end || *p != '=')
		return (*why = "expected '=' after the key"), -EINVAL;
	p = skip_space(p + 1, end);
	if (p < end && *p == '"') {
		p = parse_quoted(p + 1, end, value, SL_CONFIG_LINE_MAX + 1);
		if (p == NULL)
			return (*why = "unterminated or malformed quoted value"), -EINVAL;
	} else {
		for (v = p; p < end && *p != '#'; p++)
			;
		while (p > v && (p[-1] == ' ' || p[-1] == '\t'))
			p--;
		memcpy(value, v, (size_t)(p - v));
		value[p - v] = '\0';
		if (memchr(v, '"', (size_t)(p - v)))
			return (*why = "a '\"' may only start a quoted value"), -EINVAL;
	}
	p = skip_space(p, end);
	if (p < end && *p != '#')
		return (*why = "unexpected text after the value"), -EINVAL;
	return 0;
}

/* "[name]" (spaces inside the brackets allowed, a comment after): the name
 * into name (64 bytes). Returns 0 or -EINVAL with *why. */
static int parse_header(const char *p, const char *end, char *name, const char **why)
{
	const char *n;
	size_t len;

	p = skip_space(p + 1, end);
	for (n = p; p < end && (isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.');
	     p++)
		;
	len = (size_t)(p - n);
	p = skip_space(p, end);
	if (len == 0 || len >= 64 || p == end || *p != ']')
		return (*why = "expected a section header [name] of letters, digits, '-', '_' and "
			       "'.'"),
		       -EINVAL;
	p = skip_space(p + 1, end);
	if (p < end && *p != '#')
		return (*why = "unexpected text after the section header"), -EINVAL;
	memcpy(name, n, len);
	name[len] = '\0';
	return 0;
}

/* What apply_line works with. Ownership: sl_config_parse_text's, for one
 * parse; key and value are its scratch buffers. */
struct reader {
	const char *origin;
	unsigned lineno;
	char *key, *value; /* 64 and SL_CONFIG_LINE_MAX + 1 bytes */
	char section[64];  /* the header above the line, "" at the top level */
	char where[300];   /* "origin:lineno" */
};

/* Keep a section's line (key NULL: its header) in c->sect. 0 or -ENOMEM. */
static int keep_line(struct sl_config *c, const struct reader *rd, const char *key,
		     const char *value)
{
	size_t ls = strlen(rd->section) + 1, lk = key ? strlen(key) + 1 : 0;
	size_t lv = value ? strlen(value) + 1 : 0, lw = strlen(rd->where) + 1;
	struct sl_sect_line *l;
	char *m;

	if (sl_array_grow((void **)&c->sect, &c->sect_cap, c->nsect + 1, sizeof(*c->sect), 16) <
		    0 ||
	    (m = malloc(ls + lk + lv + lw)) == NULL)
		return fail(c, -ENOMEM, "out of memory");
	memcpy(m, rd->section, ls);
	if (key)
		memcpy(m + ls, key, lk);
	if (value)
		memcpy(m + ls + lk, value, lv);
	memcpy(m + ls + lk + lv, rd->where, lw);
	l = &c->sect[c->nsect++];
	l->section = m; /* the block's owner: sl_config_free frees it */
	l->key = key ? m + ls : NULL;
	l->value = value ? m + ls + lk : NULL;
	l->where = m + ls + lk + lv;
	return 0;
}

/* A "[name]" line: refused unless c->sections; a name given twice is refused
 * too (TOML's rule), since which one would win is anyone's guess. */
static int apply_header(struct sl_config *c, struct reader *rd)
{
	if (!c->sections)
		return fail(c, -EINVAL, "syntax error: sections ([%s]) are not read here (from %s)",
			    rd->key, rd->where);
	for (size_t i = 0; i < c->nsect; i++)
		if (c->sect[i].key == NULL && strcmp(c->sect[i].section, rd->key) == 0)
			return fail(c, -EINVAL, "section [%s] given twice (from %s and %s)",
				    rd->key, c->sect[i].where, rd->where);
	snprintf(rd->section, sizeof(rd->section), "%s", rd->key);
	return keep_line(c, rd, NULL, NULL);
}

static int apply_line(struct sl_config *c, const char *line, size_t len, struct reader *rd)
{
	const char *why = "", *p = skip_space(line, line + len);
	int err;

	snprintf(rd->where, sizeof(rd->where), "%s:%u", rd->origin, rd->lineno);
	if (len > SL_CONFIG_LINE_MAX)
		return fail(c, -EINVAL, "line too long (over %d bytes) (from %s)",
			    SL_CONFIG_LINE_MAX, rd->where);
	if (memchr(line, '\0', len))
		return fail(c, -EINVAL, "NUL byte in line (from %s)", rd->where);
	if (p < line + len && *p == '[') {
		if (parse_header(p, line + len, rd->key, &why) < 0)
			return fail(c, -EINVAL, "syntax error: %s (from %s)", why, rd->where);
		return apply_header(c, rd);
	}
	err = parse_line(line, line + len, rd->key, rd->value, &why);
	if (err == 1)
		return 0;
	if (err < 0)
		return fail(c, err, "syntax error: %s (from %s)", why, rd->where);
	if (rd->section[0])
		return keep_line(c, rd, rd->key, rd->value);
	if (strcmp(rd->key, "config") == 0)
		return fail(c, -EINVAL, "key \"config\" cannot be set in a config file (from %s)",
			    rd->where);
	err = sl_config_set(c, rd->key, rd->value, SL_SRC_FILE, rd->where);
	return err == -ENOENT ? -EINVAL : err;
}

int sl_config_parse_text(struct sl_config *c, const char *buf, size_t len, const char *origin)
{
	const char *p = buf, *end = buf + len;
	struct reader rd = {.origin = origin};
	int err = 0;

	rd.key = malloc(64);
	rd.value = malloc(SL_CONFIG_LINE_MAX + 1);
	if (rd.key == NULL || rd.value == NULL) {
		err = fail(c, -ENOMEM, "out of memory");
		goto out;
	}
	while (p < end && err == 0) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

		rd.lineno++;
		err = apply_line(c, p, n && p[n - 1] == '\r' ? n - 1 : n, &rd);
		p += n + (nl != NULL);
	}
out:
	free(rd.value);
	free(rd.key);
	return err;
}

int sl_config_parse_file(struct sl_config *c, const char *path)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(c, -errno, "cannot read config file %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > SL_CONFIG_FILE_MAX) {
		err = fail(c, -EINVAL, "config file %s is not a regular file under %d bytes", path,
			   SL_CONFIG_FILE_MAX);
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		err = fail(c, -ENOMEM, "out of memory");
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			err = fail(c, r < 0 ? -errno : -EIO, "cannot read config file %s", path);
			goto out;
		}
		got += (size_t)r;
	}
	err = sl_config_parse_text(c, buf, got, path);
out:
	free(buf);
	close(fd);
	return err;
}

/* ---- environment and flags ---- */

static void env_name(const char *opt, char *out, size_t cap)
{
	size_t o = (size_t)snprintf(out, cap, "SLUICE_");

	for (; *opt && o + 1 < cap; opt++)
		out[o++] = *opt == '-' ? '_' : (char)toupper((unsigned char)*opt);
	out[o] = '\0';
}

static const char *env_lookup(char **envp, const char *name)
{
	size_t n = strlen(name);

	for (char **e = envp; *e; e++)
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}

static int apply_env(struct sl_config *c, char **envp)
{
	char name[96];

	for (size_t i = 0; i < c->nopts; i++) {
		const char *v;
		int err;

		env_name(c->opts[i].name, name, sizeof(name));
		v = env_lookup(envp, name);
		if (v == NULL && c->opts[i].env_alias) {
			snprintf(name, sizeof(name), "%s", c->opts[i].env_alias);
			v = env_lookup(envp, name);
		}
		if (v == NULL)
			continue;
		err = sl_config_set(c, c->opts[i].name, v, SL_SRC_ENV, name);
		if (err < 0)
			return err;
	}
	return 0;
}

/*
 * One flag at argv[*i]: --name=value, --name value, a bare boolean --name,
 * or --no-name for a boolean false. Advances *i past a consumed value.
 */
static int apply_flag(struct sl_config *c, int argc, char **argv, int *i)
{
	const char *arg = argv[*i] + 2, *eq = strchr(arg, '=');
	size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
	char origin[80];
	int k = find_opt(c, arg, len);

	snprintf(origin, sizeof(origin), "--%.*s", (int)len, arg);
	if (k < 0 && eq == NULL && strncmp(arg, "no-", 3) == 0) {
		k = find_opt(c, arg + 3, len - 3);
		if (k >= 0 && c->opts[k].type == SL_OPT_BOOL)
			return sl_config_set(c, c->opts[k].name, "false", SL_SRC_FLAG, origin);
		k = -ENOENT;
	}
	if (k < 0)
		return fail(c, -EINVAL, "unknown option %s (see --help)", origin);
	if (eq)
		return sl_config_set(c, c->opts[k].name, eq + 1, SL_SRC_FLAG, origin);
	if (c->opts[k].type == SL_OPT_BOOL)
		return sl_config_set(c, c->opts[k].name, "true", SL_SRC_FLAG, origin);
	if (*i + 1 >= argc)
		return fail(c, -EINVAL, "option %s needs a value", origin);
	*i += 1;
	return sl_config_set(c, c->opts[k].name, argv[*i], SL_SRC_FLAG, origin);
}

static int is_flag(const char *a)
{
	return a[0] == '-' && a[1] == '-' && a[2] != '\0';
}

/* The config file path: --config wins over SLUICE_CONFIG. */
static const char *find_config_path(int argc, char **argv, char **envp)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strncmp(argv[i], "--config=", 9) == 0)
			return argv[i] + 9;
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			return argv[i + 1];
	}
	return env_lookup(envp, "SLUICE_CONFIG");
}

static int apply_args(struct sl_config *c, int argc, char **argv)
{
	int rest = 0;

	for (int i = 1; i < argc; i++) {
		int err;

		if (!rest && strcmp(argv[i], "--") == 0) {
			rest = 1;
			continue;
		}
		if (!rest && is_flag(argv[i])) {
			if ((err = apply_flag(c, argc, argv, &i)) < 0)
				return err == -ENOENT ? -EINVAL : err;
			continue;
		}
		if (!rest && argv[i][0] == '-' && argv[i][1] != '\0')
			return fail(c, -EINVAL, "unknown option %s (see --help)", argv[i]);
		if (c->nargs == SL_CONFIG_MAX_ARGS)
			return fail(c, -EINVAL, "too many arguments (at most %d)",
				    SL_CONFIG_MAX_ARGS);
		c->args[c->nargs++] = argv[i];
	}
	return 0;
}

int sl_config_load(struct sl_config *c, int argc, char **argv, char **envp)
{
	const char *path;
	int err;

	if (envp == NULL)
		envp = environ;
	path = find_config_path(argc, argv, envp);
	if (path != NULL && (err = sl_config_parse_file(c, path)) < 0)
		return err;
	if ((err = apply_env(c, envp)) < 0)
		return err;
	return apply_args(c, argc, argv);
}

/* ---- lookups and printing ---- */

const struct sl_val *sl_config_get(const struct sl_config *c, const char *name)
{
	int i = find_opt(c, name, strlen(name));

	if (i < 0) {
		fprintf(stderr, "sl_config_get: no option \"%s\" in this table\n", name);
		abort();
	}
	return &c->vals[i];
}

const char *sl_config_str(const struct sl_config *c, const char *name)
{
	return sl_config_get(c, name)->str;
}

long sl_config_int(const struct sl_config *c, const char *name)
{
	return sl_config_get(c, name)->num;
}

/* Write v so that the config file parser reads it back unchanged. */
static void print_value(FILE *out, const char *v)
{
	if (*v != '\0' && strpbrk(v, " \t#\"\\") == NULL) {
		fputs(v, out);
		return;
	}
	fputc('"', out);
	for (; *v; v++) {
		if (*v == '"' || *v == '\\')
			fputc('\\', out);
		fputc(*v, out);
	}
	fputc('"', out);
}

void sl_config_print(const struct sl_config *c, FILE *out)
{
	for (size_t i = 0; i < c->nopts; i++) {
		const struct sl_val *v = &c->vals[i];

		if (strcmp(c->opts[i].name, "print-config") == 0 ||
		    strcmp(c->opts[i].name, "config") == 0)
			continue;
		if (v->str == NULL) {
			fprintf(out, "# %s is not set\n", c->opts[i].name);
			continue;
		}
		fprintf(out, "%s = ", c->opts[i].name);
		if (c->opts[i].flags & SL_OPT_F_SECRET)
			fputs("\"<redacted>\"", out);
		else
			print_value(out, v->str);
		fprintf(out, "  # %s\n", sl_config_src_name(v->src));
	}
}

void sl_config_usage(const struct sl_opt *opts, size_t n, FILE *out)
{
	char env[96], flag[96];

	for (size_t i = 0; i < n; i++) {
		const struct sl_opt *o = &opts[i];

		env_name(o->name, env, sizeof(env));
		snprintf(flag, sizeof(flag), "--%s%s", o->name, o->type == SL_OPT_BOOL ? "" : " V");
		fprintf(out, "  %-22s %s", flag, o->help);
		if (o->type == SL_OPT_ENUM)
			fprintf(out, " (%s)", o->choices);
		if (o->type == SL_OPT_INT)
			fprintf(out, " (%ld..%ld)", o->min, o->max);
		if (o->def && !(o->flags & SL_OPT_F_SECRET))
			fprintf(out, " [default: %s]", o->def);
		if (o->env_alias)
			fprintf(out, " [env: %s or %s]\n", env, o->env_alias);
		else
			fprintf(out, " [env: %s]\n", env);
	}
	fprintf(out, "  %-22s %s\n  %-22s %s\n", "-h, --help", "show this help and exit",
		"-V, --version", "show the version and the libraries linked, then exit");
}

void sl_config_free(struct sl_config *c)
{
	for (size_t i = 0; i < c->nopts && i < SL_CONFIG_MAX_OPTS; i++) {
		free(c->vals[i].str);
		c->vals[i].str = NULL;
	}
	for (size_t i = 0; i < c->nsect; i++)
		free(c->sect[i].section);
	free(c->sect);
	c->sect = NULL;
	c->nsect = c->sect_cap = 0;
}
