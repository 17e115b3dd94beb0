/*
 * cp_service.h: the service manager (systemd), on the managers' framework.
 */
#ifndef CP_SERVICE_H
#define CP_SERVICE_H

#include "mgr/cp_mgr.h"

/* From `systemctl show -p LoadState,ActiveState,SubState,UnitFileState,Result,MainPID`. */
struct cp_service_status {
	char load[32], active[32], sub[32], enabled[32], result[32];
	int main_pid;
};
int cp_service_status_parse(const char *show, struct cp_service_status *st);
int cp_service_status(struct cp_mgr *m, const char *unit, struct cp_service_status *st);
/* The last lines of the unit's journal (since: a journalctl time, or NULL);
 * malloc'd, or NULL. */
char *cp_service_logs(struct cp_mgr *m, const char *unit, int lines, const char *since);
/* start, stop, restart, reload, enable: a change only when it changes state. */
int cp_service_action(struct cp_mgr *m, const char *unit, const char *action);
/* Until active and running (0), or failed (-EIO) or timeout_ms (-ETIMEDOUT),
 * with a ServiceError naming the unit's state and its last log lines. */
int cp_service_wait(struct cp_mgr *m, const char *unit, int timeout_ms);
/* /etc/systemd/system/<name> with this content, checked by systemd-analyze
 * verify before it is put in place, then daemon-reload; *changed says
 * whether it was rewritten. */
int cp_service_unit(struct cp_mgr *m, const char *name, const char *content, int *changed);

#endif
