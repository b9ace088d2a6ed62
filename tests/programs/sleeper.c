/* sleeper.c - long blocking sleeps.
 *
 * usage: sleeper [STEPS=8] [SLEEP_MS=300]
 *
 * Spends almost all its time blocked in one long sleep per step, cycling
 * through three forms: the raw nanosleep syscall (35), relative
 * clock_nanosleep (230) and absolute clock_nanosleep on CLOCK_MONOTONIC.
 * A call may return 0 or be interrupted (-1/EINTR, or EINTR from
 * clock_nanosleep); an interrupted call is retried with the remaining time.
 * Afterwards the step checks that at least the requested time has passed.
 * How long a step really took never reaches stdout.
 */
#include <sys/syscall.h>
#include <unistd.h>

#include "testutil.h"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int valid_rem(const struct timespec *rem, const struct timespec *req)
{
    if (rem->tv_sec < 0 || rem->tv_nsec < 0 || rem->tv_nsec >= 1000000000L)
        return 0;
    return rem->tv_sec < req->tv_sec || (rem->tv_sec == req->tv_sec && rem->tv_nsec <= req->tv_nsec);
}

/* Returns the number of interruptions. */
static int sleep_step(int kind, long ms)
{
    struct timespec req = { ms / 1000, (ms % 1000) * 1000000L }, rem, deadline;
    int interrupted = 0;

    if (kind == 2) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += req.tv_sec;
        deadline.tv_nsec += req.tv_nsec;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    for (;;) {
        rem = req;
        int err;
        if (kind == 0) {
            long rc = syscall(SYS_nanosleep, &req, &rem);
            if (rc == 0)
                return interrupted;
            if (rc != -1)
                corrupt("nanosleep returned %ld", rc);
            err = errno;
        } else if (kind == 1) {
            err = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem);
        } else {
            err = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL);
        }
        if (err == 0)
            return interrupted;
        if (err != EINTR)
            corrupt("sleep kind %d failed: %s", kind, strerror(err));
        interrupted++;
        if (kind != 2 && valid_rem(&rem, &req))
            req = rem;
    }
}

int main(int argc, char **argv)
{
    long steps = arg_long(argc, argv, 1, 8);
    long ms = arg_long(argc, argv, 2, 300);
    uint64_t acc = 0x51ee9;
    int interruptions = 0;

    for (long s = 0; s < steps; s++) {
        int kind = (int)(s % 3);
        int64_t start = now_ns();
        interruptions += sleep_step(kind, ms);
        int64_t took = now_ns() - start;
        if (took < ms * 1000000LL)
            corrupt("step %ld: sleep kind %d took %lld ns, less than the %ld ms asked", s, kind,
                    (long long)took, ms);
        acc = mix64(acc, (uint64_t)(s * 3 + kind));
        out("step %ld kind %d ok acc 0x%016llx\n", s, kind, (unsigned long long)acc);
    }
    if (interruptions)
        fprintf(stderr, "sleeper: %d sleep(s) were interrupted and resumed\n", interruptions);
    out("done steps %ld digest 0x%016llx\n", steps, (unsigned long long)acc);
    return 0;
}
