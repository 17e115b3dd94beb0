/*
 * cp_ssh_cli.h: `sluice-control ssh ...` and `node ...` (see cp_ssh_cli.c).
 */
#ifndef CP_SSH_CLI_H
#define CP_SSH_CLI_H

#include "sl_cli.h"

/* The command, for sl_cli_main with argv[0] "ssh" or "node"; it returns the
 * process's exit code (a remote command's own with exec). */
extern const struct sl_cli cp_ssh_cli;

#endif
