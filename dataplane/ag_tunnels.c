/*
 * ag_tunnels.c: an agent config file's [tunnel.NAME] sections (see
 * ag_tunnels.h), checked and picked for `sluice start`.
 */
#include "ag_tunnels.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define SECTION_PREFIX "tunnel."

/*
 * A tunnel's own keys. The names the agent's table shares (name, local-host,
 * basic-auth, bearer-token, duration) mean the same there, and a tunnel's
 * own value wins over the agent's (agent_main.c).
 */
static const struct sl_opt tunnel_opts[] = {
	SL_ENUM("proto", NULL, "http|tcp", "what the tunnel carries"),
	SL_INT("port", NULL, 1, 65535, "the local service's port"),
	SL_STR("name", NULL, "requested name (subdomain)"),
	SL_STR("local-host", NULL, "host of the local service"),
	SL_SECRET("basic-auth", "with api: protect the public URL with USER:PASSWORD"),
	SL_SECRET("bearer-token", "with api: protect the public URL with this bearer token"),
	SL_INT("duration", NULL, 1, 86400, "with api: the session's lifetime, seconds"),
};
#define NTUNNEL_OPTS (sizeof(tunnel_opts) / sizeof(tunnel_opts[0]))

/* "proto, port, ..." for an error about an unknown key. */
static void key_list(char *out, size_t cap)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < NTUNNEL_OPTS && o < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? ", " : "", tunnel_opts[i].name);
}

/* NAME of "tunnel.NAME": letters, digits, '-' and '_' (a JSON event names
 * it unescaped); NULL for any other section. */
static const char *label_of(const char *section)
{
	const char *p = section + strlen(SECTION_PREFIX);

	if (strncmp(section, SECTION_PREFIX, strlen(SECTION_PREFIX)) != 0 || *p == '\0')
		return NULL;
	for (const char *q = p; *q; q++)
		if (!isalnum((unsigned char)*q) && *q != '-' && *q != '_')
			return NULL;
	return p;
}

/* A header line: a new definition in out. 0 or -EINVAL/-ENOMEM with err. */
static int add_tunnel(struct ag_tunnels *out, const struct sl_sect_line *l, char *err, size_t cap)
{
	const char *label = label_of(l->section);
	struct ag_tunnel_def *d;

	if (label == NULL) {
		snprintf(err, cap,
			 "unknown section [%s] (from %s): expected [tunnel.NAME], NAME of "
			 "letters, digits, '-' and '_'",
			 l->section, l->where);
		return -EINVAL;
	}
	if (out->n == AG_TUNNELS_MAX) {
		snprintf(err, cap, "more than %d tunnels (from %s)", AG_TUNNELS_MAX, l->where);
		return -EINVAL;
	}
	d = &out->v[out->n++];
	snprintf(d->label, sizeof(d->label), "%s", label);
	snprintf(d->where, sizeof(d->where), "%s", l->where);
	if (sl_config_init(&d->cfg, tunnel_opts, NTUNNEL_OPTS) < 0) {
		snprintf(err, cap, "%s", d->cfg.err);
		return -ENOMEM;
	}
	return 0;
}

/* A key line of the last tunnel; an unknown key's error lists the known ones. */
static int set_key(struct ag_tunnel_def *d, const struct sl_sect_line *l, char *err, size_t cap)
{
	char keys[200];
	int e = sl_config_set(&d->cfg, l->key, l->value, SL_SRC_FILE, l->where);

	if (e == -ENOENT) {
		key_list(keys, sizeof(keys));
		snprintf(err, cap,
			 "%s in [tunnel.%s]: a tunnel takes %s; the agent's own options go "
			 "above the first section",
			 d->cfg.err, d->label, keys);
		return -EINVAL;
	}
	if (e < 0)
		snprintf(err, cap, "%s", d->cfg.err);
	return e;
}

int ag_tunnels_load(const struct sl_config *cfg, struct ag_tunnels *out, char *err, size_t cap)
{
	int e = 0;

	out->n = 0;
	/* Bounded by the file (1 MiB): sl_config kept its lines. */
	for (size_t i = 0; i < cfg->nsect && e == 0; i++) {
		const struct sl_sect_line *l = &cfg->sect[i];

		/* A key always follows its header: sl_config keeps nothing else. */
		e = l->key == NULL ? add_tunnel(out, l, err, cap)
				   : set_key(&out->v[out->n - 1], l, err, cap);
	}
	for (size_t i = 0; i < out->n && e == 0; i++) {
		const struct ag_tunnel_def *d = &out->v[i];
		const char *miss = !sl_config_str(&d->cfg, "proto") ? "proto = http|tcp"
				   : sl_config_str(&d->cfg, "port") ? NULL
								    : "port = PORT";

		if (miss) {
			snprintf(err, cap, "[tunnel.%s] (from %s) needs %s", d->label, d->where,
				 miss);
			e = -EINVAL;
		}
	}
	return e;
}

static int find(const struct ag_tunnels *t, const char *label)
{
	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->v[i].label, label) == 0)
			return (int)i;
	return -ENOENT;
}

/* "web, db" into out: the names a bad pick could have used. */
static void label_list(const struct ag_tunnels *t, char *out, size_t cap)
{
	size_t o = 0;

	snprintf(out, cap, "%s", t->n ? "" : "no [tunnel.NAME] section at all");
	for (size_t i = 0; i < t->n && o < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? ", " : "", t->v[i].label);
}

int ag_tunnels_pick(const struct ag_tunnels *t, const char *const *names, size_t n, int all,
		    const char *path, size_t *idx, char *err, size_t cap)
{
	char have[400];
	size_t k = 0;

	label_list(t, have, sizeof(have));
	if (all == (n > 0) || (all && t->n == 0)) {
		snprintf(err, cap, "sluice start takes tunnel names or --all%s (%s has: %s)",
			 all && n ? ", not both" : "", path, have);
		return -EINVAL;
	}
	for (size_t i = 0; all && i < t->n; i++)
		idx[k++] = i;
	for (size_t i = 0; i < n; i++) {
		int at = find(t, names[i]);

		for (size_t j = 0; j < i; j++)
			if (strcmp(names[j], names[i]) == 0)
				at = -EEXIST;
		if (at < 0) {
			snprintf(err, cap, "%s \"%s\" %s (%s has: %s)",
				 at == -EEXIST ? "tunnel" : "no tunnel", names[i],
				 at == -EEXIST ? "named twice" : "in the config file", path, have);
			return -EINVAL;
		}
		idx[k++] = (size_t)at;
	}
	return (int)k;
}

void ag_tunnels_free(struct ag_tunnels *t)
{
	for (size_t i = 0; i < t->n; i++)
		sl_config_free(&t->v[i].cfg);
	t->n = 0;
}
