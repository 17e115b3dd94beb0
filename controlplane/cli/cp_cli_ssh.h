/*
 * cp_ssh_cli.h: `sluice-control ssh ...` (see cp_ssh_cli.c).
 */
#ifndef CP_SSH_CLI_H
#define CP_SSH_CLI_H

/* argv[0] is "ssh"; returns the process's exit code. */
int cp_ssh_cli_main(int argc, char **argv);

#endif
