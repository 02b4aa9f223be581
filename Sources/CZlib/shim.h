#ifndef AUDIT_SENTINEL_CZLIB_SHIM_H
#define AUDIT_SENTINEL_CZLIB_SHIM_H

#include <zlib.h>

#endif
