/* bearhook: webhook delivery service. Dispatches to the subcommand named by argv[1]. */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "cli/commands.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"serve", cmd_serve, "Run the REST API and the delivery workers."},
    {"user", cmd_user, "Create users and their API keys: bearhook user create NAME."},
    {"listen", cmd_listen, "Receive webhooks locally, print them and check their signatures."},
    {"verify", cmd_verify, "Check a saved body against a signature and explain a mismatch."},
};

static void print_usage(FILE *out)
{
    fprintf(out, "Usage: bearhook COMMAND [OPTIONS]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun 'bearhook COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    int status;

    if (argc < 2) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return 0;
    }

    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            curl_global_init(CURL_GLOBAL_DEFAULT);
            status = commands[i].run(argc - 2, argv + 2);
            curl_global_cleanup();
            return status;
        }
    }
    fprintf(stderr, "bearhook: unknown command \"%s\"\n\n", argv[1]);
    print_usage(stderr);
    return EXIT_USAGE;
}
