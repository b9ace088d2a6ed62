/* selfpipe.c - pipe contents and file offsets across steps.
 *
 * usage: selfpipe DIR [STEPS=40] [SLEEP_MS=45]
 *
 * Keeps a pipe to itself whose unread bytes stay in the kernel across steps
 * (written and read back in an uneven pattern, read end O_NONBLOCK so lost
 * data shows up as EAGAIN instead of a hang), and regular files in DIR:
 *   data.bin  O_RDWR, plus a dup() of it that must share the offset; writes
 *             records and sometimes seeks back, so the offset is mid-file,
 *   log.txt   O_WRONLY|O_APPEND|O_CLOEXEC; seeks to 0 before each write,
 *             which O_APPEND must ignore,
 *   input.txt created at start, then read 37 bytes per step via an
 *             O_RDONLY descriptor whose offset must carry on.
 * Every step checks the pipe backlog (FIONREAD), the bytes read, all file
 * offsets, flags and the complete file contents against an in-memory model.
 */
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define MODEL_MAX (1 << 16)

static unsigned char stream_byte(uint64_t k) { return (unsigned char)mix64(0x9193, k); }
static unsigned char input_byte(size_t k) { return (unsigned char)('a' + (k * 7 + k / 26) % 26); }

static void check_contents(const char *path, const unsigned char *want, size_t len)
{
    static unsigned char buf[MODEL_MAX];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        corrupt("cannot open %s: %s", path, strerror(errno));
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    close(fd);
    if (n != (ssize_t)len)
        corrupt("%s holds %zd bytes, expected %zu", path, n, len);
    for (size_t i = 0; i < len; i++)
        if (buf[i] != want[i])
            corrupt("%s differs at byte %zu: %#x != %#x", path, i, buf[i], want[i]);
}

static off_t offset_of(int fd) { return lseek(fd, 0, SEEK_CUR); }

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: selfpipe DIR [STEPS] [SLEEP_MS]\n");
        return 64;
    }
    long steps = arg_long(argc, argv, 2, 40);
    long ms = arg_long(argc, argv, 3, 45);
    static char data_path[4096], log_path[4096], input_path[4096];
    static unsigned char data_model[MODEL_MAX], log_model[MODEL_MAX], input_model[8192];
    size_t data_len = 0, log_len = 0, input_off = 0;
    off_t data_off = 0;
    uint64_t written = 0, consumed = 0, acc = 0x9193;
    int p[2];

    snprintf(data_path, sizeof data_path, "%s/data.bin", argv[1]);
    snprintf(log_path, sizeof log_path, "%s/log.txt", argv[1]);
    snprintf(input_path, sizeof input_path, "%s/input.txt", argv[1]);

    for (size_t i = 0; i < sizeof input_model; i++)
        input_model[i] = input_byte(i);
    int tmp = open(input_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (tmp < 0 || write(tmp, input_model, sizeof input_model) != (ssize_t)sizeof input_model)
        corrupt("cannot create %s", input_path);
    close(tmp);

    int in_fd = open(input_path, O_RDONLY);
    int data_fd = open(data_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    int data_dup = dup(data_fd);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (in_fd < 0 || data_fd < 0 || data_dup < 0 || log_fd < 0)
        corrupt("cannot open the files in %s: %s", argv[1], strerror(errno));
    if (pipe(p) != 0 || fcntl(p[0], F_SETFL, O_NONBLOCK) != 0)
        corrupt("pipe setup failed: %s", strerror(errno));

    for (long s = 0; s < steps; s++) {
        /* Pipe: write w bytes, read r back, leaving a varying backlog. */
        unsigned char buf[256];
        size_t w = 20 + ((size_t)s * 7) % 50;
        for (size_t i = 0; i < w; i++)
            buf[i] = stream_byte(written + i);
        if (write(p[1], buf, w) != (ssize_t)w)
            corrupt("pipe write failed: %s", strerror(errno));
        written += w;
        size_t backlog = (size_t)(written - consumed);
        size_t r = ((size_t)s * 13) % 61;
        if (s % 9 == 8)
            r = backlog; /* drain it completely now and then */
        if (r > backlog)
            r = backlog;
        for (size_t got = 0; got < r;) {
            ssize_t n = read(p[0], buf, r - got);
            if (n <= 0)
                corrupt("pipe lost data: wanted %zu more bytes, read returned %zd (%s)",
                        r - got, n, n < 0 ? strerror(errno) : "eof");
            for (ssize_t i = 0; i < n; i++)
                if (buf[i] != stream_byte(consumed + (uint64_t)i))
                    corrupt("pipe byte %llu is wrong", (unsigned long long)(consumed + (uint64_t)i));
            consumed += (uint64_t)n;
            got += (size_t)n;
        }
        int avail = -1;
        if (ioctl(p[0], FIONREAD, &avail) != 0 || avail != (int)(written - consumed))
            corrupt("pipe backlog is %d, expected %llu", avail,
                    (unsigned long long)(written - consumed));
        if (!(fcntl(p[0], F_GETFL) & O_NONBLOCK))
            corrupt("the pipe's read end lost O_NONBLOCK");

        /* data.bin: a 16-byte record through one of the two shared-offset fds. */
        unsigned char rec[16];
        uint64_t h = mix64(0xda7a, (uint64_t)s);
        memcpy(rec, &s, 8);
        memcpy(rec + 8, &h, 8);
        if (write(s % 2 ? data_dup : data_fd, rec, sizeof rec) != (ssize_t)sizeof rec)
            corrupt("data.bin write failed");
        memcpy(data_model + data_off, rec, sizeof rec);
        data_off += sizeof rec;
        if ((size_t)data_off > data_len)
            data_len = (size_t)data_off;
        if (s % 4 == 3) {
            lseek(data_fd, -6, SEEK_CUR);
            data_off -= 6;
        }
        if (offset_of(data_fd) != data_off || offset_of(data_dup) != data_off)
            corrupt("data.bin offsets %lld/%lld, expected %lld", (long long)offset_of(data_fd),
                    (long long)offset_of(data_dup), (long long)data_off);
        check_contents(data_path, data_model, data_len);

        /* log.txt: O_APPEND must win over the seek to 0. */
        char line[64];
        int n = snprintf(line, sizeof line, "line %ld %016llx\n", s, (unsigned long long)h);
        lseek(log_fd, 0, SEEK_SET);
        if (write(log_fd, line, (size_t)n) != n)
            corrupt("log.txt write failed");
        memcpy(log_model + log_len, line, (size_t)n);
        log_len += (size_t)n;
        if (offset_of(log_fd) != (off_t)log_len)
            corrupt("log.txt offset %lld, expected %zu", (long long)offset_of(log_fd), log_len);
        if (!(fcntl(log_fd, F_GETFL) & O_APPEND) || !(fcntl(log_fd, F_GETFD) & FD_CLOEXEC))
            corrupt("log.txt lost O_APPEND or FD_CLOEXEC");
        if (fcntl(data_fd, F_GETFD) & FD_CLOEXEC)
            corrupt("data.bin gained FD_CLOEXEC");
        check_contents(log_path, log_model, log_len);

        /* input.txt: sequential reads continue at the saved offset. */
        unsigned char ibuf[37];
        if (read(in_fd, ibuf, sizeof ibuf) != (ssize_t)sizeof ibuf)
            corrupt("input.txt short read");
        for (size_t i = 0; i < sizeof ibuf; i++)
            if (ibuf[i] != input_model[input_off + i])
                corrupt("input.txt byte %zu is wrong", input_off + i);
        input_off += sizeof ibuf;

        acc = mix64(acc, written);
        acc = mix64(acc, consumed);
        acc = mix_bytes(acc, data_model, data_len);
        acc = mix_bytes(acc, log_model, log_len);
        acc = mix_bytes(acc, ibuf, sizeof ibuf);
        out("step %ld backlog %llu data %zu log %zu acc 0x%016llx\n", s,
            (unsigned long long)(written - consumed), data_len, log_len, (unsigned long long)acc);
        sleep_ms(ms);
    }
    out("done steps %ld digest 0x%016llx\n", steps, (unsigned long long)acc);
    return 0;
}
