#include "delivery/retry.h"
