/* threads.c - multi-threaded continuation workload.
 *
 * usage: threads [ROUNDS=24] [TASKS=16] [TASK_MS=5] [ROUND_MS=50]
 *
 * Four workers take tasks from a mutex + condition variable queue; the main
 * thread waits for a round's results on a second condition variable, then
 * everybody meets at a barrier, each worker folds one result into private
 * state kept on its own stack, and a second barrier hands control back.
 * Every printed value depends only on the arguments, never on which worker
 * ran which task.  Workers are joined at the end and return their state.
 */
#include <pthread.h>

#include "testutil.h"

#define NWORKERS 4
#define MAXTASKS 64

struct queue {
    pthread_mutex_t lock;
    pthread_cond_t work;
    pthread_cond_t done_cv;
    long round;
    int ntasks;
    int next;
    int done;
    uint64_t results[MAXTASKS];
};

static struct queue q = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .work = PTHREAD_COND_INITIALIZER,
    .done_cv = PTHREAD_COND_INITIALIZER,
    .round = -1,
};
static pthread_barrier_t barrier;
static long rounds, task_ms, round_ms;
static int ntasks;
static uint64_t priv_snapshot[NWORKERS];
static __thread uint64_t tls_tasks;
static __thread uint64_t tls_tag;

struct worker_result {
    uint64_t priv;
    uint64_t tasks;
};

static uint64_t task_value(long round, int task)
{
    uint64_t h = mix64((uint64_t)round, (uint64_t)task);
    for (int i = 0; i < 5000; i++)
        h = mix64(h, (uint64_t)i);
    return h;
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t priv = mix64(0xabcdef, (uint64_t)id);
    uint64_t guard = mix64(priv, 0x600d);
    struct worker_result *res;

    tls_tag = mix64(0x7a6, (uint64_t)id);
    for (long r = 0; r < rounds; r++) {
        pthread_mutex_lock(&q.lock);
        while (q.round < r)
            pthread_cond_wait(&q.work, &q.lock);
        if (q.round != r)
            corrupt("worker %d expected round %ld, queue says %ld", id, r, q.round);
        while (q.next < q.ntasks) {
            int t = q.next++;
            pthread_mutex_unlock(&q.lock);
            uint64_t v = task_value(r, t);
            sleep_ms(task_ms);
            pthread_mutex_lock(&q.lock);
            q.results[t] = v;
            if (++q.done == q.ntasks)
                pthread_cond_signal(&q.done_cv);
            tls_tasks++;
        }
        pthread_mutex_unlock(&q.lock);

        pthread_barrier_wait(&barrier); /* all results of round r are in */
        priv = mix64(priv, q.results[((uint64_t)id * 5 + (uint64_t)r) % (uint64_t)ntasks]);
        priv_snapshot[id] = priv;
        pthread_barrier_wait(&barrier); /* main may read the snapshots */

        if (guard != mix64(mix64(0xabcdef, (uint64_t)id), 0x600d))
            corrupt("worker %d stack guard changed", id);
        if (tls_tag != mix64(0x7a6, (uint64_t)id))
            corrupt("worker %d thread-local tag changed", id);
    }
    res = malloc(sizeof *res);
    if (!res)
        corrupt("out of memory");
    res->priv = priv;
    res->tasks = tls_tasks;
    return res;
}

int main(int argc, char **argv)
{
    pthread_t tids[NWORKERS];
    uint64_t acc = 0x7157;

    rounds = arg_long(argc, argv, 1, 24);
    ntasks = (int)arg_long(argc, argv, 2, 16);
    task_ms = arg_long(argc, argv, 3, 5);
    round_ms = arg_long(argc, argv, 4, 50);
    if (ntasks > MAXTASKS)
        ntasks = MAXTASKS;

    if (pthread_barrier_init(&barrier, NULL, NWORKERS + 1) != 0)
        corrupt("pthread_barrier_init failed");
    for (int i = 0; i < NWORKERS; i++)
        if (pthread_create(&tids[i], NULL, worker, (void *)(intptr_t)i) != 0)
            corrupt("pthread_create failed");

    for (long r = 0; r < rounds; r++) {
        pthread_mutex_lock(&q.lock);
        q.ntasks = ntasks;
        q.next = 0;
        q.done = 0;
        q.round = r;
        pthread_cond_broadcast(&q.work);
        while (q.done < q.ntasks)
            pthread_cond_wait(&q.done_cv, &q.lock);
        pthread_mutex_unlock(&q.lock);

        pthread_barrier_wait(&barrier);
        pthread_barrier_wait(&barrier);

        for (int t = 0; t < ntasks; t++) {
            if (q.results[t] != task_value(r, t))
                corrupt("round %ld task %d result is wrong", r, t);
            acc = mix64(acc, q.results[t]);
        }
        for (int i = 0; i < NWORKERS; i++)
            acc = mix64(acc, priv_snapshot[i]);
        out("round %ld acc 0x%016llx\n", r, (unsigned long long)acc);
        sleep_ms(round_ms);
    }

    uint64_t total = 0;
    for (int i = 0; i < NWORKERS; i++) {
        void *ret;
        if (pthread_join(tids[i], &ret) != 0)
            corrupt("pthread_join failed");
        struct worker_result *res = ret;
        if (res->priv != priv_snapshot[i])
            corrupt("worker %d returned state differs from its last snapshot", i);
        acc = mix64(acc, res->priv);
        total += res->tasks;
        free(res);
    }
    if (total != (uint64_t)rounds * (uint64_t)ntasks)
        corrupt("workers ran %llu tasks, expected %llu", (unsigned long long)total,
                (unsigned long long)rounds * (unsigned long long)ntasks);
    out("done rounds %ld tasks %llu digest 0x%016llx\n", rounds, (unsigned long long)total,
        (unsigned long long)acc);
    return 0;
}
