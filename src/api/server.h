/*
 * The HTTP server of the REST API, on libmicrohttpd's internal thread pool.
 *
 * api_server_start binds address:port (port 0 picks a free one) and serves until
 * api_server_stop. The context must outlive the server.
 */
#ifndef BEARHOOK_API_SERVER_H
#define BEARHOOK_API_SERVER_H

#include "api/api.h"

struct api_server;

struct api_server *api_server_start(struct api_context *api, const char *address, int port,
                                    unsigned int threads, struct bh_error *err);
/* Returns the port the server listens on. */
int api_server_port(const struct api_server *server);
/* Stops accepting new connections; requests on open connections are still served. */
void api_server_quiesce(struct api_server *server);
void api_server_stop(struct api_server *server);

#endif
