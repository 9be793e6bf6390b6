#include "core/integration.h"
