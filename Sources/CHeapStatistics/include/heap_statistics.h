#ifndef AUDIT_SENTINEL_HEAP_STATISTICS_H
#define AUDIT_SENTINEL_HEAP_STATISTICS_H
#include <stddef.h>

/// Bytes the allocator has handed out and not yet had back (glibc mallinfo2().uordblks + mmapped blocks).
size_t heap_statistics_in_use(void);

/// Returns free memory at the top of the heap and in free chunks to the system (glibc malloc_trim).
void heap_statistics_trim(void);

#endif
