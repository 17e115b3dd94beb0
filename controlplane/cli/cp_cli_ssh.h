/*
 * cp_cli_ssh.h: `sluice-control ssh ...` and `sluice-control node ...`
 * (see cp_cli_ssh.c; the node verbs' work is cp_cli_node.c).
 */
#ifndef CP_CLI_SSH_H
#define CP_CLI_SSH_H

#include "sl_cli.h"

/* The command, for sl_cli_main with argv[0] "ssh" or "node"; it returns the
 * process's exit code (a remote command's own with exec). */
extern const struct sl_cli cp_ssh_cli;

#endif
