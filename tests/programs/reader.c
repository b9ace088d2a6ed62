/* reader.c - blocks in read(0) and echoes each line reversed.
 *
 * usage: reader
 *
 * Prints `ready`, then for every input line `got N: <line reversed>`.  The
 * line `quit` ends it with `done lines N digest 0x...` and exit status 0.
 * End of input before `quit` is an error (exit 3).  Input is read with raw
 * read(2) calls into the program's own buffer, so a partial line is program
 * state too.
 */
#include <unistd.h>

#include "testutil.h"

#define MAXLINE 4096

int main(void)
{
    static char line[MAXLINE + 1];
    char buf[512];
    size_t len = 0;
    long n = 0;
    uint64_t acc = 0x4ead;

    out("ready\n");
    for (;;) {
        ssize_t r = read(0, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            corrupt("read(0) failed: %s", strerror(errno));
        }
        if (r == 0) {
            fprintf(stderr, "reader: end of input after %ld lines without quit\n", n);
            return 3;
        }
        for (ssize_t i = 0; i < r; i++) {
            char c = buf[i];
            if (c != '\n') {
                if (len >= MAXLINE)
                    corrupt("line too long");
                line[len++] = c;
                continue;
            }
            line[len] = 0;
            if (strcmp(line, "quit") == 0) {
                out("done lines %ld digest 0x%016llx\n", n, (unsigned long long)acc);
                return 0;
            }
            n++;
            for (size_t a = 0, b = len ? len - 1 : 0; a < b; a++, b--) {
                char t = line[a];
                line[a] = line[b];
                line[b] = t;
            }
            acc = mix_bytes(mix64(acc, (uint64_t)n), line, len);
            out("got %ld: %s\n", n, line);
            len = 0;
        }
    }
}
