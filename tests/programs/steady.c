/* steady.c - a job that must come through a dead checkpointer unharmed.
 *
 * Usage: steady THREADS MIB
 * Touches MIB MiB of memory, then runs THREADS workers that keep floating-point and
 * integer state in registers across a long loop and check it on every round, while the
 * main thread prints a line every 10 ms. On SIGTERM it stops the workers and prints
 * "ok ROUNDS" (every check passed) or "corrupt ..." (exit status 3): a thread resumed
 * with a wrong register, mask or FPU state shows up here or dies.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static volatile int corrupt = -1;
static unsigned long rounds[64];

static void on_term(int sig) { (void)sig; stop = 1; }

static void *worker(void *arg)
{
    long id = (long)arg;
    double a = 1.0 + (double)id, k = 1.0 + 1e-7 * (double)(id + 1);
    uint64_t h = 0x9e3779b97f4a7c15ULL * (uint64_t)(id + 1), g = h;
    unsigned long n = 0;
    while (!stop) {
        double x = a;
        for (int i = 0; i < 2000; i++) {
            x = x * k;
            x = x / k;
            h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        }
        for (int i = 0; i < 2000; i++)
            g = g * 6364136223846793005ULL + 1442695040888963407ULL;
        if (fabs(x - a) > 1e-9 * a || h != g)
            corrupt = (int)id;
        n++;
    }
    rounds[id] = n;
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    long mib = argc > 2 ? atol(argv[2]) : 16;
    if (threads < 1 || threads > 64)
        return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    size_t len = (size_t)mib << 20;
    unsigned char *mem = malloc(len);
    if (!mem)
        return 2;
    for (size_t i = 0; i < len; i++)
        mem[i] = (unsigned char)(i * 131 + (i >> 12));
    pthread_t t[64];
    for (long i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    unsigned long line = 0;
    while (!stop) {
        printf("%lu\n", ++line);
        fflush(stdout);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    unsigned long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        total += rounds[i];
    }
    for (size_t i = 0; i < len; i += 4096)
        if (mem[i] != (unsigned char)(i * 131 + (i >> 12))) {
            printf("corrupt memory at %zu\n", i);
            return 3;
        }
    if (corrupt >= 0) {
        printf("corrupt thread %d\n", corrupt);
        return 3;
    }
    printf("ok %lu\n", total);
    return 0;
}
