/* json_alloc: the allocator that cJSON uses in mtlsd, which counts its failures per
 * thread. cJSON's builders fail silently (an item that could not be made is simply not
 * added), so code that must never hand out a half-made document (the injection's patch)
 * compares json_alloc_failures() before and after building it. main installs the hooks
 * at start; a test installs them too, and may make allocations fail on purpose.
 *
 * Owns nothing: the hooks are process-wide, the counter thread-local. */
#ifndef MTLSD_JSON_ALLOC_H
#define MTLSD_JSON_ALLOC_H

/* json_alloc_install makes cJSON allocate through the counting hooks. Call it before any
 * other thread runs. */
void json_alloc_install(void);

/* json_alloc_failures returns how many of this thread's cJSON allocations have failed. */
unsigned long json_alloc_failures(void);

/* json_alloc_fail_after makes every allocation fail once |n| more have succeeded (for
 * allocation-failure tests); -1, the only value outside tests, never fails one. */
void json_alloc_fail_after(long n);

#endif
