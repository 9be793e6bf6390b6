#include "delivery/target.h"
