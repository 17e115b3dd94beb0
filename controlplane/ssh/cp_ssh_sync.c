/*
 * cp_ssh_sync.c: a local directory made present on a host, sending only what
 * changed. One command lists the remote side (SHA-256 and mode of every
 * file); each local file whose hash or mode differs goes up through
 * cp_ssh_put (temporary name, checksum, rename), the directories it needs
 * made first. Remote files absent locally are left alone: deleting is not a
 * sync's business unless asked, and nothing here asks.
 */
#include "ssh/cp_ssh_int.h"
#include "sl_buf.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SYNC_FILES_MAX 10000 /* a relay's files are a handful; a bound keeps memory bounded */

/* "hash mode ./path" for every file, one per line. */
static const char LIST_SH[] =
	"mkdir -p -- \"$1\" && cd -- \"$1\" && find . -type f -exec sh -c "
	"'for f; do h=$(sha256sum < \"$f\") && echo \"${h%% *} $(stat -c %a -- \"$f\") $f\"; done' "
	"sh {} +";

/* A local file to sync. Ownership: rel is malloc'd by the walk and freed
 * with the list by cp_ssh_sync. */
struct lfile {
	char *rel; /* "./a/b" */
	unsigned mode;
};

static struct {
	struct lfile *v;
	size_t n, cap;
	size_t root_len;
	int err;
} walk; /* nftw gives no user pointer; one sync at a time (cp_ssh_sync locks) */

static pthread_mutex_t walk_mu = PTHREAD_MUTEX_INITIALIZER;

static int on_entry(const char *path, const struct stat *st, int type, struct FTW *f)
{
	(void)f;
	if (type != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	if (walk.n >= SYNC_FILES_MAX) {
		walk.err = -E2BIG;
		return 1;
	}
	if (sl_array_grow((void **)&walk.v, &walk.cap, walk.n + 1, sizeof(*walk.v), 64) < 0) {
		walk.err = -ENOMEM;
		return 1;
	}
	if (asprintf(&walk.v[walk.n].rel, ".%s", path + walk.root_len) < 0) {
		walk.err = -ENOMEM;
		return 1;
	}
	walk.v[walk.n++].mode = st->st_mode & 07777;
	return 0;
}

/* Whether the listing has rel with this hash and mode. */
static int listed(const char *list, const char *hex, unsigned mode, const char *rel)
{
	char want[1200];
	int n = snprintf(want, sizeof(want), "\n%s %o %s\n", hex, mode, rel);

	if (n <= 0 || (size_t)n >= sizeof(want) || !list)
		return 0;
	/* A whole line: at the start, or after a newline. */
	return strncmp(list, want + 1, (size_t)n - 1) == 0 || strstr(list, want) != NULL;
}

static int run_helper(struct cp_ssh_pool *pool, const struct cp_ssh_xfer *x, const char *script,
		      const char *arg, struct cp_ssh_result *r)
{
	const char *argv[] = {"sh", "-c", script, "sh", arg, NULL};
	struct cp_ssh_cmd cmd = {.argv = argv,
				 .sudo = x->sudo,
				 .sudo_password = x->sudo_password,
				 .timeout_ms = 120000};

	return cp_ssh_run(pool, &cmd, r);
}

int cp_ssh_sync(struct cp_ssh_pool *pool, const char *local_dir, const char *remote_dir,
		const struct cp_ssh_xfer *x, struct cp_ssh_sync_result *res)
{
	struct cp_ssh_result list;
	char root[1024], path[2300], dst[2300], hex[65];
	double t0 = sl_mono_ms_f();
	int rc;

	memset(res, 0, sizeof(*res));
	snprintf(root, sizeof(root), "%s", local_dir);
	while (strlen(root) > 1 && root[strlen(root) - 1] == '/')
		root[strlen(root) - 1] = '\0';
	pthread_mutex_lock(&walk_mu);
	memset(&walk, 0, sizeof(walk));
	walk.root_len = strlen(root);
	rc = nftw(root, on_entry, 16, FTW_PHYS);
	if (rc != 0 || walk.err) {
		cp_ssh_err_set(&res->error, CP_SSH_E_TRANSFER, "%s: %s", root,
			       walk.err == -E2BIG ? "too many files" : strerror(errno));
		rc = -EIO;
		goto out;
	}
	rc = run_helper(pool, x, LIST_SH, remote_dir, &list);
	if (rc == 0 && list.exit_code != 0) {
		cp_ssh_err_set(&res->error, CP_SSH_E_TRANSFER, "listing %s on the host: %.300s",
			       remote_dir, list.err ? list.err : "");
		rc = -EIO;
	} else if (rc < 0) {
		res->error = list.error;
	}
	for (size_t i = 0; rc == 0 && i < walk.n; i++) {
		struct cp_ssh_xfer fx = *x;
		struct cp_ssh_xfer_result fr = {0};

		snprintf(path, sizeof(path), "%s%s", root, walk.v[i].rel + 1);
		snprintf(dst, sizeof(dst), "%s%s", remote_dir, walk.v[i].rel + 1);
		res->files++;
		if (cp_ssh_file_sha256(path, hex) < 0) {
			cp_ssh_err_set(&res->error, CP_SSH_E_TRANSFER, "%s: cannot read it", path);
			rc = -EIO;
			break;
		}
		if (listed(list.out, hex, walk.v[i].mode, walk.v[i].rel))
			continue;
		fx.mode = walk.v[i].mode;
		fx.sha256 = hex; /* hashed and compared with the listing just now */
		rc = cp_ssh_mkdirs(pool, dst, x, &res->error);
		if (rc == 0)
			rc = cp_ssh_put(pool, path, dst, &fx, &fr);
		if (rc < 0 && res->error.kind == CP_SSH_OK)
			res->error = fr.error;
		res->changed += rc == 0 && fr.changed;
		res->bytes += rc == 0 ? fr.bytes : 0;
	}
	cp_ssh_result_free(&list);
out:
	for (size_t i = 0; i < walk.n; i++)
		free(walk.v[i].rel);
	free(walk.v);
	memset(&walk, 0, sizeof(walk));
	pthread_mutex_unlock(&walk_mu);
	res->duration_ms = sl_mono_ms_f() - t0;
	return rc;
}

int cp_ssh_mkdirs(struct cp_ssh_pool *pool, const char *remote_file, const struct cp_ssh_xfer *x,
		  struct cp_ssh_err *err)
{
	static const char MKDIR_SH[] = "mkdir -p -- \"$(dirname -- \"$1\")\"";
	struct cp_ssh_result r;
	int rc = run_helper(pool, x, MKDIR_SH, remote_file, &r);

	if (rc < 0)
		*err = r.error;
	else if (r.exit_code != 0) {
		cp_ssh_err_set(err, CP_SSH_E_TRANSFER, "mkdir for %s: %.300s", remote_file,
			       r.err ? r.err : "");
		rc = -EIO;
	}
	cp_ssh_result_free(&r);
	return rc;
}
