/* mmapfile.c - memory-mapping continuation workload.
 *
 * usage: mmapfile SHARED_FILE PRIVATE_FILE [STEPS=40] [SLEEP_MS=45]
 *
 * Both files are prepared by the caller: SHARED_FILE holds 16 pages with
 * byte i = (i * 131 + 7) & 0xff, PRIVATE_FILE 8 pages with byte
 * i = (i * 17 + 3) & 0xff.  The program keeps
 *   - SHARED_FILE mapped MAP_SHARED and writes to it (the file must follow),
 *   - PRIVATE_FILE mapped MAP_PRIVATE and writes to it (copy-on-write: the
 *     file must stay unchanged),
 *   - a private anonymous region with read-only pages (a write must fault),
 *     a PROT_NONE page (a read must fault; its contents are checked at the
 *     end), pages dropped with MADV_DONTNEED (must read back as zero),
 *   - a MAP_SHARED|MAP_ANONYMOUS region,
 * and verifies every byte of all of them, the file contents and the
 * protections seen in /proc/self/maps after each step.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define PAGE 4096
#define SHARED_PAGES 16
#define PRIV_PAGES 8
#define ANON_PAGES 32
#define SANON_PAGES 4
#define RO_FIRST 4
#define RO_LAST 7
#define NONE_PAGE 13
#define DROP_FIRST 8
#define DROP_LAST 11
#define LATE_DROP 14

static sigjmp_buf probe_env;
static volatile sig_atomic_t probing;

static void on_segv(int sig)
{
    (void)sig;
    if (!probing)
        corrupt("unexpected SIGSEGV");
    siglongjmp(probe_env, 1);
}

/* 1 if writing (or, with write == 0, reading) *p faults. */
static int faults(volatile unsigned char *p, int write)
{
    if (sigsetjmp(probe_env, 1)) {
        probing = 0;
        return 1;
    }
    probing = 1;
    unsigned char v = *p;
    if (write)
        *p = v;
    probing = 0;
    return 0;
}

static unsigned char shared_init(size_t i) { return (unsigned char)(i * 131 + 7); }
static unsigned char priv_init(size_t i) { return (unsigned char)(i * 17 + 3); }
static unsigned char anon_init(size_t i) { return (unsigned char)((i * 29) ^ (i >> 12)); }

/* The protection string of the mapping containing addr, e.g. "rw-s". */
static void perms_of(const void *addr, char perms[5])
{
    char line[512];
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        corrupt("cannot open /proc/self/maps");
    perms[0] = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char p[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) == 3 && (unsigned long)addr >= lo &&
            (unsigned long)addr < hi) {
            memcpy(perms, p, 5);
            break;
        }
    }
    fclose(f);
    if (!perms[0])
        corrupt("address %p is not mapped", addr);
}

static void expect_perms(const void *addr, const char *want, const char *what)
{
    char p[5];
    perms_of(addr, p);
    if (strcmp(p, want) != 0)
        corrupt("%s is mapped %s, expected %s", what, p, want);
}

static void check_file(int fd, const unsigned char *want, size_t len, const char *what)
{
    static unsigned char buf[SHARED_PAGES * PAGE];
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size != len)
        corrupt("%s has the wrong size", what);
    if (pread(fd, buf, len, 0) != (ssize_t)len)
        corrupt("cannot read %s", what);
    for (size_t i = 0; i < len; i++)
        if (buf[i] != want[i])
            corrupt("%s differs at byte %zu: %#x != %#x", what, i, buf[i], want[i]);
}

static void check_mem(const unsigned char *have, const unsigned char *want, size_t len,
                      const char *what)
{
    for (size_t i = 0; i < len; i++)
        if (have[i] != want[i])
            corrupt("%s differs at byte %zu: %#x != %#x", what, i, have[i], want[i]);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: mmapfile SHARED_FILE PRIVATE_FILE [STEPS] [SLEEP_MS]\n");
        return 64;
    }
    long steps = arg_long(argc, argv, 3, 40);
    long ms = arg_long(argc, argv, 4, 45);
    const size_t slen = SHARED_PAGES * PAGE, plen = PRIV_PAGES * PAGE;
    const size_t alen = ANON_PAGES * PAGE, salen = SANON_PAGES * PAGE;
    static unsigned char shared_model[SHARED_PAGES * PAGE], priv_file[PRIV_PAGES * PAGE];
    static unsigned char priv_model[PRIV_PAGES * PAGE], anon_model[ANON_PAGES * PAGE];
    static unsigned char sanon_model[SANON_PAGES * PAGE];
    uint64_t acc = 0x33a9;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);

    int sfd = open(argv[1], O_RDWR);
    int pfd = open(argv[2], O_RDONLY);
    if (sfd < 0 || pfd < 0)
        corrupt("cannot open the data files: %s", strerror(errno));
    for (size_t i = 0; i < slen; i++)
        shared_model[i] = shared_init(i);
    for (size_t i = 0; i < plen; i++)
        priv_file[i] = priv_model[i] = priv_init(i);
    check_file(sfd, shared_model, slen, "shared file (initial)");
    check_file(pfd, priv_file, plen, "private file (initial)");

    unsigned char *sm = mmap(NULL, slen, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
    unsigned char *pm = mmap(NULL, plen, PROT_READ | PROT_WRITE, MAP_PRIVATE, pfd, 0);
    unsigned char *am = mmap(NULL, alen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *sa_m = mmap(NULL, salen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sm == MAP_FAILED || pm == MAP_FAILED || am == MAP_FAILED || sa_m == MAP_FAILED)
        corrupt("mmap failed: %s", strerror(errno));

    for (size_t i = 0; i < alen; i++)
        am[i] = anon_model[i] = anon_init(i);
    for (size_t i = 0; i < salen; i++)
        sa_m[i] = sanon_model[i] = (unsigned char)(i * 7 + 1);
    if (mprotect(am + RO_FIRST * PAGE, (RO_LAST - RO_FIRST + 1) * PAGE, PROT_READ) != 0 ||
        mprotect(am + NONE_PAGE * PAGE, PAGE, PROT_NONE) != 0)
        corrupt("mprotect failed: %s", strerror(errno));
    if (madvise(am + DROP_FIRST * PAGE, (DROP_LAST - DROP_FIRST + 1) * PAGE, MADV_DONTNEED) != 0)
        corrupt("madvise failed: %s", strerror(errno));
    memset(anon_model + DROP_FIRST * PAGE, 0, (DROP_LAST - DROP_FIRST + 1) * PAGE);

    for (long s = 0; s < steps; s++) {
        uint64_t h = mix64(0x1111, (uint64_t)s);
        /* Shared file mapping: one 64-byte record per step. */
        size_t off = (((size_t)s * 5) % SHARED_PAGES) * PAGE + ((size_t)s * 64) % PAGE;
        for (size_t i = 0; i < 64; i++, h = mix64(h, i))
            sm[off + i] = shared_model[off + i] = (unsigned char)h;
        /* Private file mapping: copy-on-write. */
        off = (((size_t)s * 3) % PRIV_PAGES) * PAGE + ((size_t)s * 40) % PAGE;
        for (size_t i = 0; i < 40; i++, h = mix64(h, i))
            pm[off + i] = priv_model[off + i] = (unsigned char)h;
        /* Anonymous memory, only the writable pages. */
        size_t page = ((size_t)s * 7) % ANON_PAGES;
        if ((page < RO_FIRST || page > DROP_LAST) && page != NONE_PAGE && page != LATE_DROP) {
            off = page * PAGE + ((size_t)s * 24) % PAGE;
            for (size_t i = 0; i < 24; i++, h = mix64(h, i))
                am[off + i] = anon_model[off + i] = (unsigned char)h;
        }
        if (s == steps / 2) {
            if (madvise(am + LATE_DROP * PAGE, PAGE, MADV_DONTNEED) != 0)
                corrupt("madvise failed: %s", strerror(errno));
            memset(anon_model + LATE_DROP * PAGE, 0, PAGE);
        }
        /* Shared anonymous memory. */
        off = ((size_t)s * 97) % (salen - 16);
        for (size_t i = 0; i < 16; i++, h = mix64(h, i))
            sa_m[off + i] = sanon_model[off + i] = (unsigned char)h;

        /* Verify everything. */
        check_mem(sm, shared_model, slen, "shared file mapping");
        check_file(sfd, shared_model, slen, "shared file");
        check_mem(pm, priv_model, plen, "private file mapping");
        check_file(pfd, priv_file, plen, "private file (must stay unchanged)");
        check_mem(am, anon_model, NONE_PAGE * PAGE, "anonymous region");
        check_mem(am + (NONE_PAGE + 1) * PAGE, anon_model + (NONE_PAGE + 1) * PAGE,
                  alen - (NONE_PAGE + 1) * PAGE, "anonymous region (upper part)");
        check_mem(sa_m, sanon_model, salen, "shared anonymous region");
        if (!faults(am + RO_FIRST * PAGE + 5, 1) || !faults(am + RO_LAST * PAGE, 1))
            corrupt("a write to a read-only page did not fault");
        if (!faults(am + NONE_PAGE * PAGE + 9, 0))
            corrupt("a read of the PROT_NONE page did not fault");
        if (faults(am + 9, 1) || faults(sm + 3, 1) || faults(pm + 3, 1) || faults(sa_m + 3, 1))
            corrupt("a write to a writable page faulted");
        expect_perms(sm, "rw-s", "shared file mapping");
        expect_perms(pm, "rw-p", "private file mapping");
        expect_perms(am, "rw-p", "anonymous region");
        expect_perms(am + RO_FIRST * PAGE, "r--p", "read-only pages");
        expect_perms(am + NONE_PAGE * PAGE, "---p", "PROT_NONE page");
        expect_perms(sa_m, "rw-s", "shared anonymous region");

        acc = mix_bytes(acc, shared_model, slen);
        acc = mix_bytes(acc, priv_model, plen);
        acc = mix_bytes(acc, anon_model, alen);
        acc = mix_bytes(acc, sanon_model, salen);
        out("step %ld acc 0x%016llx\n", s, (unsigned long long)acc);
        sleep_ms(ms);
    }

    if (mprotect(am + NONE_PAGE * PAGE, PAGE, PROT_READ) != 0)
        corrupt("mprotect failed: %s", strerror(errno));
    check_mem(am + NONE_PAGE * PAGE, anon_model + NONE_PAGE * PAGE, PAGE, "PROT_NONE page");
    if (msync(sm, slen, MS_SYNC) != 0)
        corrupt("msync failed: %s", strerror(errno));
    check_file(sfd, shared_model, slen, "shared file (final)");
    out("done steps %ld digest 0x%016llx\n", steps, (unsigned long long)acc);
    return 0;
}
