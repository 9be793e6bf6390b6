#include "core/netaddr.h"
