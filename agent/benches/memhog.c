/*
 * memhog: the process the `engine` benchmark checkpoints and restarts.
 *
 * Usage: memhog MIB [VERDICT_FILE]
 *
 * Allocates MIB MiB, fills every 8-byte word with a non-zero value that depends on its
 * position (so every page is touched, none is all zeros, and pages are not alike), prints
 * `ready` on stdout, then sleeps in a loop. On SIGUSR1 it checks the whole buffer and
 * reports `ok` or `corrupt ...`: into VERDICT_FILE if given (written to VERDICT_FILE.tmp
 * and renamed, so a reader never sees half a verdict), else on stdout.
 *
 * The verdict goes to a file because, after a restart, the process's stdout is whatever
 * the restarter's stdout is: a file opened by name when asked has no such ambiguity.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t check_requested;

static void on_usr1(int sig)
{
	(void)sig;
	check_requested = 1;
}

/* The word at index i: a mixed (hence incompressible) value, never zero. */
static uint64_t pattern(uint64_t i)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ULL;
	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 29;
	return x | 1;
}

static void report(const char *verdict_path, const char *msg)
{
	if (!verdict_path) {
		printf("%s\n", msg);
		fflush(stdout);
		return;
	}
	char tmp[4096];
	if (snprintf(tmp, sizeof tmp, "%s.tmp", verdict_path) >= (int)sizeof tmp) {
		fprintf(stderr, "memhog: verdict path too long\n");
		return;
	}
	FILE *f = fopen(tmp, "w");
	if (!f) {
		fprintf(stderr, "memhog: cannot create %s: %s\n", tmp, strerror(errno));
		return;
	}
	fprintf(f, "%s\n", msg);
	if (fclose(f) != 0 || rename(tmp, verdict_path) != 0)
		fprintf(stderr, "memhog: cannot write %s: %s\n", verdict_path, strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: memhog MIB [VERDICT_FILE]\n");
		return 2;
	}
	char *end;
	unsigned long mib = strtoul(argv[1], &end, 10);
	if (*end || mib == 0) {
		fprintf(stderr, "memhog: bad size %s\n", argv[1]);
		return 2;
	}
	const char *verdict_path = argc == 3 ? argv[2] : NULL;
	size_t words = (size_t)mib * (1024 * 1024 / sizeof(uint64_t));
	uint64_t *buf = malloc(words * sizeof(uint64_t));
	if (!buf) {
		fprintf(stderr, "memhog: cannot allocate %lu MiB\n", mib);
		return 1;
	}
	for (size_t i = 0; i < words; i++)
		buf[i] = pattern(i);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) != 0) {
		perror("memhog: sigaction");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);

	for (;;) {
		if (check_requested) {
			check_requested = 0;
			char msg[128] = "ok";
			for (size_t i = 0; i < words; i++) {
				if (buf[i] != pattern(i)) {
					snprintf(msg, sizeof msg,
						 "corrupt at byte %zu: %#llx, expected %#llx",
						 i * sizeof(uint64_t), (unsigned long long)buf[i],
						 (unsigned long long)pattern(i));
					break;
				}
			}
			report(verdict_path, msg);
		}
		/* Short naps: a signal landing between the check and the nap costs 10 ms. */
		struct timespec nap = { 0, 10 * 1000 * 1000 };
		nanosleep(&nap, NULL);
	}
}
