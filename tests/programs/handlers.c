/* handlers.c - signal handlers of every flag combination, on several threads, must
 * work after a restart.
 *
 * Installs handlers with SA_ONSTACK (with and without an alternate stack), SA_SIGINFO,
 * SA_RESTART, SA_NODEFER and SA_RESETHAND, starts three threads (one with an alternate
 * stack), prints "ready" and waits. On SIGTERM (itself an SA_ONSTACK handler, as
 * CPython installs every handler) it signals each thread with each handled signal,
 * checks that every handler ran on the thread it was sent to, on the alternate stack
 * exactly when it should, with SA_RESETHAND's disposition reset after, and prints one
 * line per check, then "done". Output depends on nothing but the program.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NTHREADS 3
static const int sigs[] = {SIGUSR1, SIGUSR2, SIGHUP, SIGINT, SIGWINCH};
static const char *names[] = {"USR1", "USR2", "HUP", "INT", "WINCH"};
static const int flags[] = {SA_ONSTACK, SA_ONSTACK | SA_SIGINFO, SA_RESETHAND | SA_ONSTACK,
                            SA_NODEFER, SA_RESTART | SA_ONSTACK};
#define NSIGS 5

static pthread_t tids[NTHREADS + 1];
static _Thread_local int me = -1;
static _Thread_local char *alt_lo, *alt_hi;
static atomic_int seen[NTHREADS + 1][NSIGS];
static atomic_int on_alt[NTHREADS + 1][NSIGS];
static volatile sig_atomic_t term;

static int index_of(int sig)
{
    for (int i = 0; i < NSIGS; i++)
        if (sigs[i] == sig)
            return i;
    return -1;
}

static void record(int sig)
{
    int s = index_of(sig);
    char here;
    if (s < 0 || me < 0)
        return;
    atomic_fetch_add(&seen[me][s], 1);
    if (alt_lo && &here >= alt_lo && &here < alt_hi)
        atomic_fetch_add(&on_alt[me][s], 1);
}

static void plain(int sig) { record(sig); }
static void with_info(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (si && si->si_signo == sig)
        record(sig);
}
static void on_term(int sig) { (void)sig; term = 1; }

static void give_altstack(void)
{
    size_t size = 64 * 1024;
    stack_t ss = {.ss_sp = malloc(size), .ss_size = size, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    alt_lo = ss.ss_sp;
    alt_hi = alt_lo + size;
}

static void *worker(void *arg)
{
    /* SIGTERM is the main thread's: a process-directed signal may go to any thread
     * that does not block it, and which one is the kernel's choice. */
    sigset_t term_only;
    sigemptyset(&term_only);
    sigaddset(&term_only, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term_only, NULL);
    me = (int)(intptr_t)arg;
    if (me == 1)
        give_altstack();
    for (;;)
        pause();
    return NULL;
}

int main(void)
{
    me = 0;
    for (int i = 0; i < NSIGS; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_flags = flags[i];
        if (flags[i] & SA_SIGINFO)
            sa.sa_sigaction = with_info;
        else
            sa.sa_handler = plain;
        sigaction(sigs[i], &sa, NULL);
    }
    struct sigaction st;
    memset(&st, 0, sizeof st);
    st.sa_handler = on_term;
    st.sa_flags = SA_ONSTACK;
    sigaction(SIGTERM, &st, NULL);
    tids[0] = pthread_self();
    for (int t = 1; t <= NTHREADS; t++)
        pthread_create(&tids[t], NULL, worker, (void *)(intptr_t)t);
    usleep(100 * 1000);
    printf("ready\n");
    fflush(stdout);
    while (!term)
        pause();
    for (int t = 0; t <= NTHREADS; t++) {
        for (int s = 0; s < NSIGS; s++) {
            if (sigs[s] == SIGHUP && t > 0)
                continue; /* reset to default by its first delivery */
            pthread_kill(tids[t], sigs[s]);
            for (int w = 0; w < 1000 && atomic_load(&seen[t][s]) == 0; w++)
                usleep(1000);
        }
    }
    for (int t = 0; t <= NTHREADS; t++)
        for (int s = 0; s < NSIGS; s++) {
            if (sigs[s] == SIGHUP && t > 0)
                continue;
            int want_alt = t == 1 && (flags[s] & SA_ONSTACK);
            printf("thread %d %s: handled %d, on the alternate stack %s\n", t, names[s],
                   atomic_load(&seen[t][s]),
                   (atomic_load(&on_alt[t][s]) > 0) == want_alt ? "as it should" : "WRONG");
        }
    struct sigaction now;
    sigaction(SIGHUP, NULL, &now);
    printf("SIGHUP after SA_RESETHAND: %s\n", now.sa_handler == SIG_DFL ? "default" : "WRONG");
    printf("done\n");
    return 0;
}
