/*
 * cp_cli_ssh.h: `sluice-control ssh ...` and `sluice-control node ...`
 * (see cp_cli_ssh.c).
 */
#ifndef CP_CLI_SSH_H
#define CP_CLI_SSH_H

/* argv[0] is "ssh" or "node"; returns the process's exit code. */
int cp_ssh_cli_main(int argc, char **argv);

#endif
