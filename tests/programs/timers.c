/* timers: an interval timer (setitimer, SIGALRM) and a POSIX timer (timer_create,
 * SIGUSR2 with a sigev_value) driving a program that waits in sigsuspend.
 *
 * Usage: timers TICKS
 *
 * Prints "alarm N" for every SIGALRM up to TICKS (one line per tick even when ticks
 * coalesce, so the output does not depend on timing). Meanwhile the POSIX timer fires
 * every 15 ms; its handler checks that si_value and si_timerid are what timer_create
 * gave. At the end the program prints whether the POSIX timer fired, whether every
 * delivery carried the right value, and whether its ID is still valid. After a restart
 * the timers must be armed again (or the program waits forever) with the same IDs and
 * values.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define SIVAL 0x5eed

static volatile sig_atomic_t alarms;
static volatile sig_atomic_t posix_fired;
static volatile sig_atomic_t posix_bad;
static timer_t timer;

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

static void on_posix(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	if (si->si_code != SI_TIMER || si->si_value.sival_int != SIVAL)
		posix_bad = 1;
	posix_fired++;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: timers TICKS\n");
		return 2;
	}
	int ticks = atoi(argv[1]);
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGALRM);
	sigaddset(&block, SIGUSR2);
	sigprocmask(SIG_BLOCK, &block, &old);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = NULL;
	sa.sa_sigaction = on_posix;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGUSR2, &sa, NULL);

	struct sigevent ev;
	memset(&ev, 0, sizeof ev);
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGUSR2;
	ev.sigev_value.sival_int = SIVAL;
	if (timer_create(CLOCK_MONOTONIC, &ev, &timer) != 0) {
		perror("timer_create");
		return 2;
	}
	struct itimerspec its = { { 0, 15 * 1000 * 1000 }, { 0, 15 * 1000 * 1000 } };
	timer_settime(timer, 0, &its, NULL);
	struct itimerval itv = { { 0, 20 * 1000 }, { 0, 20 * 1000 } };
	setitimer(ITIMER_REAL, &itv, NULL);

	int printed = 0;
	while (printed < ticks) {
		sigsuspend(&old);
		while (printed < alarms && printed < ticks)
			printf("alarm %d\n", ++printed);
		fflush(stdout);
	}
	struct itimerspec now;
	int id_valid = timer_gettime(timer, &now) == 0;
	printf("posix timer fired: %s, values right: %s, id valid: %s\n",
	       posix_fired > ticks / 2 ? "yes" : "no", posix_bad ? "no" : "yes",
	       id_valid ? "yes" : "no");
	return 0;
}
