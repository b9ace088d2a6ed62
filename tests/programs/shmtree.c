/* shmtree: a parent and three children that share anonymous memory and a lock.
 *
 * Usage: shmtree ROUNDS
 *
 * The parent maps a MAP_SHARED|MAP_ANONYMOUS page holding a process-shared mutex, a
 * shared counter and one slot per child, then forks three children. Each round, every
 * child takes the mutex, adds its number to the counter and to its slot, and releases
 * it; the parent waits for every child to finish the round (the slots say so), prints
 * the round's state and lets the next round start. After ROUNDS rounds the children
 * exit, the parent reaps them and prints their exit statuses and a final digest.
 *
 * Everything printed depends only on ROUNDS, so a run interrupted by a checkpoint and
 * restarted prints exactly what an uninterrupted run prints, provided the memory is
 * still shared between the four processes after the restart (else the parent waits for
 * slots that never move: the test times out) and the mutex still works across them.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHILDREN 3

struct shared {
	pthread_mutex_t lock;
	volatile uint64_t counter;
	volatile uint64_t round;          /* the round the parent has opened */
	volatile uint64_t done[CHILDREN]; /* the last round each child finished */
	volatile uint64_t sum[CHILDREN];
};

static void nap(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&t, &t) != 0)
		;
}

static void child(struct shared *s, int k, uint64_t rounds)
{
	for (uint64_t r = 1; r <= rounds; r++) {
		while (s->round < r)
			nap(2);
		pthread_mutex_lock(&s->lock);
		s->counter += (uint64_t)(k + 1) * r;
		s->sum[k] += r;
		pthread_mutex_unlock(&s->lock);
		s->done[k] = r;
	}
	_exit(10 + k);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: shmtree ROUNDS\n");
		return 2;
	}
	uint64_t rounds = strtoull(argv[1], NULL, 10);
	struct shared *s = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutex_init(&s->lock, &a);
	pid_t kids[CHILDREN];
	for (int k = 0; k < CHILDREN; k++) {
		kids[k] = fork();
		if (kids[k] < 0) {
			perror("fork");
			return 1;
		}
		if (kids[k] == 0)
			child(s, k, rounds);
	}
	printf("started %d children\n", CHILDREN);
	fflush(stdout);
	for (uint64_t r = 1; r <= rounds; r++) {
		s->round = r;
		for (int k = 0; k < CHILDREN; k++)
			while (s->done[k] < r)
				nap(2);
		pthread_mutex_lock(&s->lock);
		printf("round %llu counter %llu sums %llu %llu %llu\n", (unsigned long long)r,
		       (unsigned long long)s->counter, (unsigned long long)s->sum[0],
		       (unsigned long long)s->sum[1], (unsigned long long)s->sum[2]);
		pthread_mutex_unlock(&s->lock);
		fflush(stdout);
		nap(30);
	}
	for (int k = 0; k < CHILDREN; k++) {
		int status;
		if (waitpid(kids[k], &status, 0) != kids[k]) {
			perror("waitpid");
			return 1;
		}
		printf("child %d exited %d\n", k, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
	printf("final counter %llu\n", (unsigned long long)s->counter);
	return 0;
}
