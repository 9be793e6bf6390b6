/*
 * The subcommands of the bearhook binary. Each takes the arguments after its own name and
 * returns the process exit status: 0 on success, 1 on a runtime failure, 2 on a usage error.
 */
#ifndef BEARHOOK_CLI_COMMANDS_H
#define BEARHOOK_CLI_COMMANDS_H

#define EXIT_USAGE 2

int cmd_serve(int argc, char **argv);
int cmd_user(int argc, char **argv);
int cmd_listen(int argc, char **argv);
int cmd_verify(int argc, char **argv);

#endif
