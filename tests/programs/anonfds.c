/* anonfds: an event loop over epoll, a periodic timerfd, an eventfd in semaphore mode and
 * a signalfd, the descriptors modern servers are made of.
 *
 * Usage: anonfds STEPS
 *
 * Each step waits in epoll_wait until the timer (every 20 ms, edge-triggered) fires,
 * then: posts 2 to the eventfd and takes one token back (so a token is left over across
 * steps), and every third step queues SIGUSR1 to itself (blocked, so it stays pending
 * until read through the signalfd on a later step). Each step prints what it saw, in
 * terms that do not depend on timing: the tokens left in the eventfd (read to empty in
 * semaphore mode), the signals read, the interest list size. After a restart the timer
 * must fire again (or the loop hangs), the eventfd must keep its count and semaphore mode,
 * the signalfd its mask and the epoll instance its interest list (edge-triggered flag and
 * user data included).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

enum { TAG_TIMER = 0x71, TAG_EVENT = 0x72, TAG_SIGNAL = 0x73 };

static void die(const char *what)
{
	perror(what);
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: anonfds STEPS\n");
		return 2;
	}
	long steps = strtol(argv[1], NULL, 10);
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &usr1, NULL) != 0)
		die("sigprocmask");
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	int efd = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
	int sfd = signalfd(-1, &usr1, SFD_NONBLOCK | SFD_CLOEXEC);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (tfd < 0 || efd < 0 || sfd < 0 || ep < 0)
		die("create");
	struct itimerspec its = { { 0, 20 * 1000 * 1000 }, { 0, 20 * 1000 * 1000 } };
	if (timerfd_settime(tfd, 0, &its, NULL) != 0)
		die("timerfd_settime");
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.u64 = TAG_TIMER };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) != 0)
		die("epoll_ctl timer");
	ev = (struct epoll_event){ .events = EPOLLIN, .data.u64 = TAG_SIGNAL };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) != 0)
		die("epoll_ctl signal");
	long signals = 0;
	for (long step = 1; step <= steps; step++) {
		int timer_seen = 0;
		while (!timer_seen) {
			struct epoll_event got[4];
			int n = epoll_wait(ep, got, 4, -1);
			if (n < 0)
				continue; /* EINTR */
			for (int i = 0; i < n; i++) {
				if (got[i].data.u64 == TAG_TIMER) {
					uint64_t ticks;
					if (read(tfd, &ticks, sizeof ticks) == sizeof ticks && ticks > 0)
						timer_seen = 1;
				} else if (got[i].data.u64 == TAG_SIGNAL) {
					struct signalfd_siginfo si;
					while (read(sfd, &si, sizeof si) == sizeof si)
						if (si.ssi_signo == SIGUSR1)
							signals++;
				} else {
					fprintf(stderr, "unexpected epoll data %#llx\n",
						(unsigned long long)got[i].data.u64);
					return 2;
				}
			}
		}
		/* Semaphore mode: each read takes one token. */
		uint64_t two = 2, one;
		if (write(efd, &two, sizeof two) != sizeof two)
			die("eventfd write");
		if (read(efd, &one, sizeof one) != sizeof one || one != 1)
			die("eventfd read");
		if (step % 3 == 0)
			kill(getpid(), SIGUSR1);
		/* Every 10 steps count the tokens left by draining them. */
		long tokens = -1;
		if (step % 10 == 0) {
			tokens = 0;
			while (read(efd, &one, sizeof one) == sizeof one)
				tokens++;
		}
		printf("step %ld tokens %ld signals-so-far>=%ld\n", step, tokens, signals >= step / 3 - 1 ? step / 3 - 1 : -1);
		fflush(stdout);
	}
	/* Collect the last pending signal, if any, then report the totals. */
	struct signalfd_siginfo si;
	while (read(sfd, &si, sizeof si) == sizeof si)
		signals++;
	printf("done: %ld SIGUSR1 read through the signalfd\n", signals);
	return 0;
}
