#include "store/sqlite.h"
