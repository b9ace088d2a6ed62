/* testutil.h - small helpers shared by lifeboat's C test programs.
 *
 * Every program built on these helpers writes a stdout that depends only on
 * its arguments, so a run interrupted by checkpoint/restart can be compared
 * byte for byte with an uninterrupted one.  Detected state corruption is
 * reported on stderr and ends the program with exit status 2.
 */
#ifndef LIFEBOAT_TESTUTIL_H
#define LIFEBOAT_TESTUTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A 64-bit mixing step: cheap, deterministic, sensitive to every input bit. */
static inline uint64_t mix64(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 29;
    return h;
}

/* Hash a byte buffer into h. */
static inline uint64_t mix_bytes(uint64_t h, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = mix64(h, w);
    }
    for (; i < len; i++)
        h = mix64(h, p[i]);
    return mix64(h, len);
}

/* Report corrupted state on stderr and exit with status 2. */
static inline __attribute__((noreturn, format(printf, 1, 2))) void
corrupt(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "CORRUPTION: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    exit(2);
}

/* printf to stdout and flush at once, so every line leaves in one write(). */
static inline __attribute__((format(printf, 1, 2))) void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

/* Sleep ms milliseconds, resuming with the remaining time after EINTR. */
static inline void sleep_ms(long ms)
{
    struct timespec req = { ms / 1000, (ms % 1000) * 1000000L }, rem;
    for (;;) {
        int rc = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem);
        if (rc == 0)
            return;
        if (rc != EINTR)
            corrupt("clock_nanosleep failed: %s", strerror(rc));
        req = rem;
    }
}

/* argv[idx] as a positive number, or def when absent. */
static inline long arg_long(int argc, char **argv, int idx, long def)
{
    char *end;
    long v;
    if (idx >= argc)
        return def;
    errno = 0;
    v = strtol(argv[idx], &end, 0);
    if (errno || *end || v <= 0) {
        fprintf(stderr, "bad argument %d: '%s'\n", idx, argv[idx]);
        exit(64);
    }
    return v;
}

#endif
