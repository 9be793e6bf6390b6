#include "delivery/dispatcher.h"
