/*
 * The event catalog: the event types a webhook can receive, their labels and categories.
 *
 * The four selectable types are what users choose when they create a webhook and enable on a
 * campaign mapping. lead_added_to_campaign is sent only by a manual lead export, to the one
 * integration chosen, so it is never selectable and never routed through mappings.
 * Sets of event types are bit masks: bit (1u << type).
 */
#ifndef BEARHOOK_CORE_EVENTS_H
#define BEARHOOK_CORE_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

enum event_type {
    EVENT_CONNECTION_REQUEST_SENT,
    EVENT_CONNECTION_REQUEST_ACCEPTED,
    EVENT_MESSAGE_SENT,
    EVENT_MESSAGE_REPLIED,
    EVENT_LEAD_ADDED_TO_CAMPAIGN,
    EVENT_TYPE_COUNT
};

struct event_type_info {
    const char *name;     /* wire name, e.g. "connection_request_accepted" */
    const char *label;    /* shown to users, e.g. "Connection Accepted" */
    const char *category; /* "Connection Events", "Message Events", or "Lead Export" */
    bool selectable;      /* may appear in an integration's or a mapping's events */
};

#define EVENT_MASK(type) (1u << (type))
#define EVENT_SELECTABLE_MASK                                                                      \
    (EVENT_MASK(EVENT_CONNECTION_REQUEST_SENT) | EVENT_MASK(EVENT_CONNECTION_REQUEST_ACCEPTED) |   \
     EVENT_MASK(EVENT_MESSAGE_SENT) | EVENT_MASK(EVENT_MESSAGE_REPLIED))

const struct event_type_info *event_type_info(enum event_type type);
/* Returns the type with this wire name, or -1. */
int event_type_from_name(const char *name);

#endif
