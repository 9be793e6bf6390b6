/* SQLite back end of the storage interface. */
#ifndef BEARHOOK_STORE_SQLITE_H
#define BEARHOOK_STORE_SQLITE_H
#endif
