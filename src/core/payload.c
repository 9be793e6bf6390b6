#include "core/payload.h"
