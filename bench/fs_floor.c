/*
 * bench/fs_floor.c - what the file system alone charges for what
 * store_file does per message with fsync, with no SMTP, no postern and
 * one thread: the message as an unnamed file in tmp/ (O_TMPFILE; a named
 * one where the file system has none), its envelope in envelope/, and per
 * batch the durability points of store_file's group commit: syncfs(),
 * the links into new/, an fsync() of new/. bench/store_file.sh runs it
 * beside postern to show how much of store_file's cost is the disk's.
 *
 *   fs_floor DIR MESSAGES MESSAGE_BYTES ENVELOPE_BYTES BATCH
 *
 * ENVELOPE_BYTES 0 makes no envelope file: what one file per message
 * would cost.
 *
 * Prints "wall_us cpu_us": microseconds per message of elapsed time and
 * of CPU time on all CPUs (from /proc/stat, so the kernel's writeback
 * threads count too). Not a test: nothing here passes or fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct pending {
    int fd;        /* the unnamed file, or -1 when it has a name in tmp/ */
    char name[32]; /* in new/ (and in tmp/ when named) */
};

static double
monotonic(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of all CPUs, in clock ticks: user, nice, system, irq, softirq
 * and steal (not idle, not iowait). */
static long long
busy_ticks(void)
{
    long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");

    if (f == NULL ||
        fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1],
               &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 8) {
        fprintf(stderr, "fs_floor: cannot read /proc/stat\n");
        exit(1);
    }
    fclose(f);
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
}

static void
die(const char *what, const char *path)
{
    fprintf(stderr, "fs_floor: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void
write_all(int fd, const char *buf, size_t len, const char *path)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("write", path);
        buf += n;
        len -= (size_t)n;
    }
}

static void
commit(const char *dir, struct pending *batch, int n)
{
    char path[4096], from[4096];
    int new_dir;

    snprintf(path, sizeof path, "%s/new", dir);
    if ((new_dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        die("open", path);
    if (syncfs(new_dir) != 0)
        die("syncfs", path);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/new/%s", dir, batch[i].name);
        if (batch[i].fd >= 0) {
            snprintf(from, sizeof from, "/proc/self/fd/%d", batch[i].fd);
            if (linkat(AT_FDCWD, from, AT_FDCWD, path, AT_SYMLINK_FOLLOW) != 0)
                die("link", path);
            close(batch[i].fd);
        } else {
            snprintf(from, sizeof from, "%s/tmp/%s", dir, batch[i].name);
            if (rename(from, path) != 0)
                die("rename", from);
        }
    }
    if (fsync(new_dir) != 0)
        die("fsync", dir);
    close(new_dir);
}

int
main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: fs_floor DIR MESSAGES MESSAGE_BYTES "
                        "ENVELOPE_BYTES BATCH\n");
        return 2;
    }
    const char *dir = argv[1];
    long messages = atol(argv[2]), batch_size = atol(argv[5]);
    size_t message_bytes = (size_t)atol(argv[3]);
    size_t envelope_bytes = (size_t)atol(argv[4]);
    if (messages < 1 || batch_size < 1 || message_bytes < 1) {
        fprintf(stderr, "fs_floor: MESSAGES, MESSAGE_BYTES and BATCH must "
                        "be at least 1\n");
        return 2;
    }
    char *message = malloc(message_bytes);
    char *envelope = malloc(envelope_bytes + 1);
    struct pending *batch = calloc((size_t)batch_size, sizeof *batch);
    char path[4096];
    if (message == NULL || envelope == NULL || batch == NULL) {
        fprintf(stderr, "fs_floor: out of memory\n");
        return 1;
    }
    memset(message, 'm', message_bytes);
    memset(envelope, ' ', envelope_bytes);
    const char *subdirs[] = {"", "/tmp", "/new", "/envelope"};
    for (size_t i = 0; i < sizeof subdirs / sizeof *subdirs; i++) {
        snprintf(path, sizeof path, "%s%s", dir, subdirs[i]);
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            die("mkdir", path);
    }

    long long busy_start = busy_ticks();
    double start = monotonic();
    int queued = 0;
    for (long m = 0; m < messages; m++) {
        struct pending *p = &batch[queued++];
        snprintf(p->name, sizeof p->name, "%ld", m);
        snprintf(path, sizeof path, "%s/tmp", dir);
        p->fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        int fd = p->fd;
        if (fd < 0) {
            snprintf(path, sizeof path, "%s/tmp/%s", dir, p->name);
            if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                           0600)) < 0)
                die("open", path);
        }
        write_all(fd, message, message_bytes, path);
        if (p->fd < 0)
            close(fd);
        if (envelope_bytes > 0) {
            snprintf(path, sizeof path, "%s/envelope/%s.json", dir, p->name);
            int env = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (env < 0)
                die("open", path);
            write_all(env, envelope, envelope_bytes, path);
            close(env);
        }
        if (queued == batch_size || m == messages - 1) {
            commit(dir, batch, queued);
            queued = 0;
        }
    }
    double wall = monotonic() - start;
    long long busy = busy_ticks() - busy_start;
    printf("%.0f %.0f\n", wall * 1e6 / (double)messages,
           (double)busy * 1e6 / (double)sysconf(_SC_CLK_TCK) /
               (double)messages);
    free(message);
    free(envelope);
    free(batch);
    return 0;
}
