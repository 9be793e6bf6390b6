#include "core/records.h"
