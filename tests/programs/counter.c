/* counter.c - single-threaded continuation workload.
 *
 * usage: counter [STEPS=60] [SLEEP_MS=30]
 *
 * Each step folds the step number into a running hash, rewrites one page of a
 * 1 MiB heap buffer from a per-page version counter, verifies the whole
 * buffer and the hash history, prints `step N acc 0x...` and sleeps.
 */
#include "testutil.h"

#define PAGE 4096
#define NPAGES 256

static void fill_page(unsigned char *p, uint64_t page, uint64_t version)
{
    uint64_t h = mix64(page, version);
    for (size_t i = 0; i < PAGE; i += 8) {
        h = mix64(h, i);
        memcpy(p + i, &h, 8);
    }
}

int main(int argc, char **argv)
{
    long steps = arg_long(argc, argv, 1, 60);
    long ms = arg_long(argc, argv, 2, 30);
    uint64_t *hist = calloc((size_t)steps + 1, sizeof *hist);
    uint64_t *version = calloc(NPAGES, sizeof *version);
    unsigned char *buf = malloc((size_t)NPAGES * PAGE);
    unsigned char *expect = malloc(PAGE);
    uint64_t acc = 0x5eed, prev = 0;

    if (!hist || !version || !buf || !expect)
        corrupt("out of memory");
    for (uint64_t p = 0; p < NPAGES; p++)
        fill_page(buf + p * PAGE, p, 0);

    for (long s = 0; s < steps; s++) {
        /* The previous step's value lives both on the stack and the heap. */
        if (s > 0 && hist[s - 1] != prev)
            corrupt("history[%ld] %#llx != %#llx", s - 1,
                    (unsigned long long)hist[s - 1], (unsigned long long)prev);
        acc = mix64(acc, (uint64_t)s);
        for (int i = 0; i < 2000; i++)
            acc = mix64(acc, (uint64_t)i ^ (acc >> 7));
        hist[s] = acc;
        prev = acc;

        uint64_t pg = ((uint64_t)s * 37) % NPAGES;
        version[pg]++;
        fill_page(buf + pg * PAGE, pg, version[pg]);
        for (uint64_t p = 0; p < NPAGES; p++) {
            fill_page(expect, p, version[p]);
            if (memcmp(expect, buf + p * PAGE, PAGE) != 0)
                corrupt("heap page %llu differs at step %ld", (unsigned long long)p, s);
        }
        out("step %ld acc 0x%016llx\n", s, (unsigned long long)acc);
        sleep_ms(ms);
    }

    uint64_t digest = mix_bytes(acc, hist, (size_t)steps * sizeof *hist);
    digest = mix_bytes(digest, buf, (size_t)NPAGES * PAGE);
    out("done steps %ld digest 0x%016llx\n", steps, (unsigned long long)digest);
    free(hist);
    free(version);
    free(buf);
    free(expect);
    return 0;
}
