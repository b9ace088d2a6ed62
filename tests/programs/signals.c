/* signals.c - signal-state continuation workload.
 *
 * usage: signals [STEPS=36] [SLEEP_MS=50]
 *
 * Installs handlers with SA_SIGINFO, SA_RESTART, SA_ONSTACK (on a
 * sigaltstack) and a handler with an sa_mask.  Every cycle of 6 steps the
 * main thread blocks a set of signals and makes them pending:
 *   process-directed: SIGUSR1 (sigqueue), SIGRTMIN+1 three times (sigqueue),
 *   thread-directed:  SIGUSR2 and SIGHUP (tgkill), SIGRTMIN+2 (rt_tgsigqueueinfo),
 * a helper thread that blocks everything does the same with SIGRTMIN+3 to
 * itself, and SIGRTMIN+5 stays pending (two queued values) for the whole run.
 * Each step checks the pending sets (thread-private vs shared, told apart by
 * comparing the two threads' sigpending()), the masks, the sigactions and the
 * sigaltstack.  At the end of a cycle the signals are unblocked and each must
 * arrive exactly once with the right si_value.  All signals are sent with raw
 * getpid()/gettid() syscalls so nothing depends on cached thread ids.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testutil.h"

#define CYCLE 6
#define MAXV 8

static int rt1, rt2, rt3, rt4, rt5;
static volatile int counts[65];
static volatile int values[65][MAXV];
static volatile int bad_code[65];
static volatile int onstack_ok = 1, mask_ok = 1;
static char altstack_mem[1 << 16] __attribute__((aligned(64)));
static stack_t altstack_saved;
static struct sigaction saved_act[65];
static int handled[] = { SIGUSR1, SIGUSR2, SIGHUP, 0, 0, 0, 0 };

static pid_t sys_getpid(void) { return (pid_t)syscall(SYS_getpid); }
static pid_t sys_gettid(void) { return (pid_t)syscall(SYS_gettid); }

static void on_info(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int n = counts[sig];
    if (n < MAXV)
        values[sig][n] = si->si_value.sival_int;
    if (si->si_code != SI_QUEUE)
        bad_code[sig] = si->si_code ? si->si_code : 1;
    counts[sig] = n + 1;
}

static void on_altstack(int sig)
{
    char here;
    if (&here < altstack_mem || &here >= altstack_mem + sizeof altstack_mem)
        onstack_ok = 0;
    counts[sig]++;
}

static void on_masked(int sig)
{
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    if (!sigismember(&cur, SIGUSR2) || !sigismember(&cur, rt4) || !sigismember(&cur, SIGHUP))
        mask_ok = 0;
    counts[sig]++;
}

static void install(int sig, void (*fn)(int), void (*fi)(int, siginfo_t *, void *), int flags,
                    const int *mask)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    for (; mask && *mask; mask++)
        sigaddset(&sa.sa_mask, *mask);
    sa.sa_flags = flags;
    if (fi)
        sa.sa_sigaction = fi;
    else
        sa.sa_handler = fn;
    if (sigaction(sig, &sa, NULL) != 0)
        corrupt("sigaction(%d) failed", sig);
    if (sigaction(sig, NULL, &saved_act[sig]) != 0)
        corrupt("sigaction(%d) query failed", sig);
    if ((saved_act[sig].sa_flags & flags) != flags)
        corrupt("sigaction(%d) lost flags %#x", sig, flags);
}

static void check_actions(void)
{
    for (size_t i = 0; i < sizeof handled / sizeof handled[0]; i++) {
        int sig = handled[i];
        struct sigaction cur;
        if (sigaction(sig, NULL, &cur) != 0)
            corrupt("sigaction(%d) query failed", sig);
        if (cur.sa_sigaction != saved_act[sig].sa_sigaction)
            corrupt("handler of signal %d changed", sig);
        if (cur.sa_flags != saved_act[sig].sa_flags)
            corrupt("flags of signal %d changed: %#x != %#x", sig, cur.sa_flags,
                    saved_act[sig].sa_flags);
        for (int s = 1; s <= 64; s++)
            if (sigismember(&cur.sa_mask, s) != sigismember(&saved_act[sig].sa_mask, s))
                corrupt("sa_mask of signal %d changed at bit %d", sig, s);
    }
    stack_t ss;
    if (sigaltstack(NULL, &ss) != 0)
        corrupt("sigaltstack query failed");
    if (ss.ss_sp != altstack_saved.ss_sp || ss.ss_size != altstack_saved.ss_size ||
        ss.ss_flags != altstack_saved.ss_flags)
        corrupt("sigaltstack changed: sp %p size %zu flags %d", ss.ss_sp, ss.ss_size,
                ss.ss_flags);
}

static uint64_t set_bits(const sigset_t *set)
{
    uint64_t bits = 0;
    for (int s = 1; s <= 64; s++)
        if (sigismember(set, s))
            bits |= 1ULL << (s - 1);
    return bits;
}

static uint64_t bit(int sig) { return 1ULL << (sig - 1); }

static void queue_self_thread(int sig, int value)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = sig;
    si.si_code = SI_QUEUE;
    si.si_pid = sys_getpid();
    si.si_uid = getuid();
    si.si_value.sival_int = value;
    if (syscall(SYS_rt_tgsigqueueinfo, sys_getpid(), sys_gettid(), sig, &si) != 0)
        corrupt("rt_tgsigqueueinfo(%d) failed: %s", sig, strerror(errno));
}

static void queue_process(int sig, int value)
{
    union sigval v = { .sival_int = value };
    if (sigqueue(sys_getpid(), sig, v) != 0)
        corrupt("sigqueue(%d) failed: %s", sig, strerror(errno));
}

static void tkill_self(int sig)
{
    if (syscall(SYS_tgkill, sys_getpid(), sys_gettid(), sig) != 0)
        corrupt("tgkill(%d) failed: %s", sig, strerror(errno));
}

static void expect_once(int sig, int value, const char *who)
{
    if (counts[sig] != 1)
        corrupt("%s: signal %d arrived %d times, expected once", who, sig, counts[sig]);
    if (value >= 0 && values[sig][0] != value)
        corrupt("%s: signal %d carried %d, expected %d", who, sig, values[sig][0], value);
    if (value >= 0 && bad_code[sig])
        corrupt("%s: signal %d had si_code %d, expected SI_QUEUE", who, sig, bad_code[sig]);
    counts[sig] = 0;
}

/* Helper thread: step handshake with main. */
static pthread_mutex_t hlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hcv = PTHREAD_COND_INITIALIZER;
static long hstep = -1, hdone = -1;
static int hquit;
static uint64_t helper_pending;

static void *helper(void *arg)
{
    sigset_t all, cur, pend;
    (void)arg;
    sigfillset(&all);
    sigdelset(&all, rt3);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    for (long s = 0;; s++) {
        pthread_mutex_lock(&hlock);
        while (hstep < s && !hquit)
            pthread_cond_wait(&hcv, &hlock);
        if (hquit) {
            pthread_mutex_unlock(&hlock);
            return NULL;
        }
        pthread_mutex_unlock(&hlock);

        int phase = (int)(s % CYCLE), cycle = (int)(s / CYCLE);
        if (phase == 0) {
            sigset_t b;
            sigemptyset(&b);
            sigaddset(&b, rt3);
            pthread_sigmask(SIG_BLOCK, &b, NULL);
            queue_self_thread(rt3, 4000 + cycle);
        } else if (phase == CYCLE - 1) {
            pthread_sigmask(SIG_SETMASK, &all, NULL);
            expect_once(rt3, 4000 + cycle, "helper");
        }
        pthread_sigmask(SIG_BLOCK, NULL, &cur);
        if (sigismember(&cur, rt3) != (phase != CYCLE - 1))
            corrupt("helper: SIGRTMIN+3 mask bit wrong at step %ld", s);
        for (int sig = 1; sig <= 64; sig++)
            if (sig != rt3 && sig != SIGKILL && sig != SIGSTOP && sig != 32 && sig != 33 &&
                !sigismember(&cur, sig))
                corrupt("helper: signal %d unblocked at step %ld", sig, s);
        sigpending(&pend);

        pthread_mutex_lock(&hlock);
        helper_pending = set_bits(&pend);
        hdone = s;
        pthread_cond_broadcast(&hcv);
        pthread_mutex_unlock(&hlock);
    }
}

int main(int argc, char **argv)
{
    long steps = arg_long(argc, argv, 1, 36);
    long ms = arg_long(argc, argv, 2, 50);
    sigset_t base, blockset, cur, pend;
    pthread_t htid;
    uint64_t acc = 0x516;

    rt1 = SIGRTMIN + 1;
    rt2 = SIGRTMIN + 2;
    rt3 = SIGRTMIN + 3;
    rt4 = SIGRTMIN + 4;
    rt5 = SIGRTMIN + 5;
    handled[3] = rt1;
    handled[4] = rt2;
    handled[5] = rt3;
    handled[6] = rt5;

    stack_t ss = { .ss_sp = altstack_mem, .ss_size = sizeof altstack_mem, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL) != 0)
        corrupt("sigaltstack failed");
    sigaltstack(NULL, &altstack_saved);

    int hup_mask[] = { SIGUSR2, rt4, 0 };
    install(SIGUSR1, NULL, on_info, SA_SIGINFO | SA_RESTART, NULL);
    install(SIGUSR2, on_altstack, NULL, SA_ONSTACK | SA_RESTART, NULL);
    install(SIGHUP, on_masked, NULL, 0, hup_mask);
    install(rt1, NULL, on_info, SA_SIGINFO | SA_RESTART, NULL);
    install(rt2, NULL, on_info, SA_SIGINFO, NULL);
    install(rt3, NULL, on_info, SA_SIGINFO | SA_RESTART, NULL);
    install(rt5, NULL, on_info, SA_SIGINFO, NULL);

    /* Main always blocks rt3 (the helper's) and rt5 (pending all run long). */
    sigemptyset(&base);
    sigaddset(&base, rt3);
    sigaddset(&base, rt5);
    blockset = base;
    sigaddset(&blockset, SIGUSR1);
    sigaddset(&blockset, SIGUSR2);
    sigaddset(&blockset, SIGHUP);
    sigaddset(&blockset, rt1);
    sigaddset(&blockset, rt2);

    /* The helper inherits a full mask, so it never takes a process-directed signal. */
    sigset_t full;
    sigfillset(&full);
    pthread_sigmask(SIG_SETMASK, &full, NULL);
    if (pthread_create(&htid, NULL, helper, NULL) != 0)
        corrupt("pthread_create failed");
    pthread_sigmask(SIG_SETMASK, &base, NULL);
    queue_process(rt5, 777);
    queue_process(rt5, 778);

    const uint64_t thread_set = bit(SIGUSR2) | bit(SIGHUP) | bit(rt2);
    const uint64_t shared_set = bit(SIGUSR1) | bit(rt1);

    for (long s = 0; s < steps; s++) {
        int phase = (int)(s % CYCLE), cycle = (int)(s / CYCLE);
        if (phase == 0) {
            pthread_sigmask(SIG_SETMASK, &blockset, NULL);
            queue_process(SIGUSR1, 1000 + cycle);
            tkill_self(SIGUSR2);
            tkill_self(SIGHUP);
            for (int k = 0; k < 3; k++)
                queue_process(rt1, 2000 + cycle * 10 + k);
            queue_self_thread(rt2, 3000 + cycle);
        } else if (phase == CYCLE - 1) {
            pthread_sigmask(SIG_SETMASK, &base, NULL);
            expect_once(SIGUSR1, 1000 + cycle, "main");
            expect_once(SIGUSR2, -1, "main");
            expect_once(SIGHUP, -1, "main");
            expect_once(rt2, 3000 + cycle, "main");
            if (counts[rt1] != 3)
                corrupt("SIGRTMIN+1 arrived %d times, expected 3", counts[rt1]);
            for (int k = 0; k < 3; k++)
                if (values[rt1][k] != 2000 + cycle * 10 + k)
                    corrupt("SIGRTMIN+1 #%d carried %d, expected %d", k, values[rt1][k],
                            2000 + cycle * 10 + k);
            if (bad_code[rt1] || bad_code[SIGUSR1])
                corrupt("queued signal arrived with a wrong si_code");
            counts[rt1] = 0;
            if (!onstack_ok)
                corrupt("SA_ONSTACK handler did not run on the alternate stack");
            if (!mask_ok)
                corrupt("sa_mask was not applied while the SIGHUP handler ran");
        }
        if (counts[SIGUSR1] || counts[SIGUSR2] || counts[SIGHUP] || counts[rt1] ||
            counts[rt2] || counts[rt5])
            corrupt("a blocked signal was delivered early at step %ld", s);

        /* Let the helper take its step and its sigpending() snapshot. */
        pthread_mutex_lock(&hlock);
        hstep = s;
        pthread_cond_broadcast(&hcv);
        while (hdone < s)
            pthread_cond_wait(&hcv, &hlock);
        uint64_t hp = helper_pending;
        pthread_mutex_unlock(&hlock);

        int held = phase != CYCLE - 1;
        uint64_t shared = hp & ~bit(rt3);
        sigpending(&pend);
        uint64_t mine = set_bits(&pend);
        uint64_t thread = mine & ~shared;
        uint64_t want_shared = (held ? shared_set : 0) | bit(rt5);
        uint64_t want_thread = held ? thread_set : 0;
        if (shared != want_shared)
            corrupt("step %ld: shared pending %#llx, expected %#llx", s,
                    (unsigned long long)shared, (unsigned long long)want_shared);
        if (thread != want_thread)
            corrupt("step %ld: main thread pending %#llx, expected %#llx", s,
                    (unsigned long long)thread, (unsigned long long)want_thread);
        if (((hp & bit(rt3)) != 0) != held)
            corrupt("step %ld: helper's SIGRTMIN+3 pending is %d", s, (hp & bit(rt3)) != 0);
        pthread_sigmask(SIG_BLOCK, NULL, &cur);
        if (set_bits(&cur) != set_bits(held ? &blockset : &base))
            corrupt("step %ld: main mask %#llx is wrong", s,
                    (unsigned long long)set_bits(&cur));
        check_actions();

        acc = mix64(acc, (uint64_t)s);
        acc = mix64(acc, shared);
        acc = mix64(acc, thread);
        out("step %ld phase %d shared 0x%016llx thread 0x%016llx acc 0x%016llx\n", s, phase,
            (unsigned long long)shared, (unsigned long long)thread, (unsigned long long)acc);
        sleep_ms(ms);
    }

    /* Release the long-lived pending pair; they must come in queue order. */
    sigset_t r5;
    sigemptyset(&r5);
    sigaddset(&r5, rt5);
    pthread_sigmask(SIG_UNBLOCK, &r5, NULL);
    if (counts[rt5] != 2 || values[rt5][0] != 777 || values[rt5][1] != 778 || bad_code[rt5])
        corrupt("SIGRTMIN+5 pair arrived %d times with %d,%d", counts[rt5], values[rt5][0],
                values[rt5][1]);
    pthread_mutex_lock(&hlock);
    hquit = 1;
    pthread_cond_broadcast(&hcv);
    pthread_mutex_unlock(&hlock);
    pthread_join(htid, NULL);
    check_actions();
    acc = mix64(acc, 777 + 778);
    out("done steps %ld digest 0x%016llx\n", steps, (unsigned long long)acc);
    return 0;
}
