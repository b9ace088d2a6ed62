/*
 * memhog: the process (or tree of processes) the `engine` benchmark checkpoints and
 * restarts.
 *
 * Usage: memhog MIB [VERDICT_FILE]
 *        memhog MIB VERDICT_FILE PROCS
 *
 * Allocates MIB MiB, fills every 8-byte word with a non-zero value that depends on its
 * position (so every page is touched, none is all zeros, and pages are not alike), prints
 * `ready` on stdout, then sleeps in a loop. On SIGUSR1 it checks the whole buffer and
 * reports `ok` or `corrupt ...`: into VERDICT_FILE if given (written to VERDICT_FILE.tmp
 * and renamed, so a reader never sees half a verdict), else on stdout.
 *
 * With PROCS, memhog is a tree of PROCS processes of MIB MiB in all: the parent (index 0)
 * forks PROCS-1 children (indexes 1 to PROCS-1), and each process allocates and touches
 * its own MIB/PROCS MiB (process k holds words k*W to (k+1)*W-1 of the one-process
 * pattern, so no two processes hold alike pages). Each answers SIGUSR1 by checking its
 * own buffer into VERDICT_FILE.<index>. The parent prints `ready` once every child has
 * written a byte on a pipe (after touching its memory and with its handler in place);
 * the pipe is closed by all before `ready`, so the checkpointed tree holds none. A child
 * whose parent is gone exits, so a benchmark that dies leaves no orphans behind.
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
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* Allocate `words` words and fill them with the pattern from word `first` on. */
static uint64_t *hog(size_t words, uint64_t first)
{
	uint64_t *buf = malloc(words * sizeof(uint64_t));
	if (!buf) {
		fprintf(stderr, "memhog: cannot allocate %zu MiB\n",
			words * sizeof(uint64_t) / (1024 * 1024));
		return NULL;
	}
	for (size_t i = 0; i < words; i++)
		buf[i] = pattern(first + i);
	return buf;
}

/*
 * Sleep, checking the buffer on each SIGUSR1. A child (parent != 0) exits once its
 * parent is gone; a restart that restores PIDs gives it back the same parent.
 */
static void serve(const uint64_t *buf, size_t words, uint64_t first,
		  const char *verdict_path, pid_t parent)
{
	for (;;) {
		if (parent != 0 && getppid() != parent)
			_exit(0);
		if (check_requested) {
			check_requested = 0;
			char msg[128] = "ok";
			for (size_t i = 0; i < words; i++) {
				if (buf[i] != pattern(first + i)) {
					snprintf(msg, sizeof msg,
						 "corrupt at byte %zu: %#llx, expected %#llx",
						 i * sizeof(uint64_t), (unsigned long long)buf[i],
						 (unsigned long long)pattern(first + i));
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

/* Kill and reap the children started so far (on a failed start). */
static void kill_children(const pid_t *kids, unsigned long n)
{
	for (unsigned long k = 0; k < n; k++)
		kill(kids[k], SIGKILL);
	for (unsigned long k = 0; k < n; k++)
		waitpid(kids[k], NULL, 0);
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 4) {
		fprintf(stderr, "usage: memhog MIB [VERDICT_FILE] | memhog MIB VERDICT_FILE PROCS\n");
		return 2;
	}
	char *end;
	unsigned long mib = strtoul(argv[1], &end, 10);
	if (*end || mib == 0) {
		fprintf(stderr, "memhog: bad size %s\n", argv[1]);
		return 2;
	}
	const char *verdict_path = argc >= 3 ? argv[2] : NULL;
	unsigned long procs = 0;
	if (argc == 4) {
		procs = strtoul(argv[3], &end, 10);
		if (*end || procs == 0 || procs > 1024) {
			fprintf(stderr, "memhog: bad process count %s\n", argv[3]);
			return 2;
		}
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) != 0) {
		perror("memhog: sigaction");
		return 1;
	}

	size_t total_words = (size_t)mib * (1024 * 1024 / sizeof(uint64_t));
	if (procs == 0) {
		uint64_t *buf = hog(total_words, 0);
		if (!buf)
			return 1;
		printf("ready\n");
		fflush(stdout);
		serve(buf, total_words, 0, verdict_path, 0);
	}

	/* The tree: every process holds `words` words of its own. */
	size_t words = total_words / procs;
	char path[4096];
	int ready[2];
	if (pipe(ready) != 0) {
		perror("memhog: pipe");
		return 1;
	}
	pid_t self = getpid();
	pid_t *kids = calloc(procs, sizeof(pid_t));
	if (!kids) {
		perror("memhog: calloc");
		return 1;
	}
	for (unsigned long k = 1; k < procs; k++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("memhog: fork");
			kill_children(kids, k - 1);
			return 1;
		}
		if (pid == 0) {
			close(ready[0]);
			snprintf(path, sizeof path, "%s.%lu", verdict_path, k);
			uint64_t first = (uint64_t)k * words;
			uint64_t *buf = hog(words, first);
			if (!buf)
				_exit(1);
			char byte = 'r';
			if (write(ready[1], &byte, 1) != 1)
				_exit(1);
			close(ready[1]);
			serve(buf, words, first, path, self);
		}
		kids[k - 1] = pid;
	}
	close(ready[1]);
	uint64_t *buf = hog(words, 0);
	if (!buf) {
		kill_children(kids, procs - 1);
		return 1;
	}
	/* One byte per child; EOF before that means a child failed. */
	for (unsigned long got = 0; got < procs - 1;) {
		char bytes[64];
		ssize_t n = read(ready[0], bytes, sizeof bytes);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "memhog: a child failed to start\n");
			kill_children(kids, procs - 1);
			return 1;
		}
		got += (unsigned long)n;
	}
	close(ready[0]);
	free(kids);
	printf("ready\n");
	fflush(stdout);
	snprintf(path, sizeof path, "%s.0", verdict_path);
	serve(buf, words, 0, path, 0);
}
