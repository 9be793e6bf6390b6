#include "core/events.h"

#include <stddef.h>
#include <string.h>

static const struct event_type_info catalog[EVENT_TYPE_COUNT] = {
    [EVENT_CONNECTION_REQUEST_SENT] = {"connection_request_sent", "Connection Request Sent",
                                       "Connection Events", true},
    [EVENT_CONNECTION_REQUEST_ACCEPTED] = {"connection_request_accepted", "Connection Accepted",
                                           "Connection Events", true},
    [EVENT_MESSAGE_SENT] = {"message_sent", "Message Sent", "Message Events", true},
    [EVENT_MESSAGE_REPLIED] = {"message_replied", "Message Replied", "Message Events", true},
    [EVENT_LEAD_ADDED_TO_CAMPAIGN] = {"lead_added_to_campaign", "Lead Exported", "Lead Export",
                                      false},
};

const struct event_type_info *event_type_info(enum event_type type)
{
    if ((int)type < 0 || type >= EVENT_TYPE_COUNT)
        return NULL;
    return &catalog[type];
}

int event_type_from_name(const char *name)
{
    for (int i = 0; i < EVENT_TYPE_COUNT; i++) {
        if (strcmp(catalog[i].name, name) == 0)
            return i;
    }
    return -1;
}
