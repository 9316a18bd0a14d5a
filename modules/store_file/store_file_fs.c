/*
 * store_file_fs.c - the file system helpers of store_file: paths,
 * directories made durably, full writes, the first error of a delivery.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_file.h"

int
sf_fail(struct sf_error *e, const char *op, const char *path, int err)
{
    if (e->err == 0) {
        e->err = err ? err : EIO;
        e->op = op;
        e->path = strdup(path);
    }
    return -1;
}

/* "a/b/c" from up to three parts; NULL parts are skipped. */
char *
sf_path(const char *a, const char *b, const char *c)
{
    const char *parts[3] = {a, b, c};
    size_t lens[3] = {strlen(a), b ? strlen(b) : 0, c ? strlen(c) : 0};
    char *path = malloc(lens[0] + lens[1] + lens[2] + 3);
    size_t n = 0;

    /* Copied, not printed: paths are made for every delivery. */
    for (size_t i = 0; path != NULL && i < 3; i++) {
        if (parts[i] == NULL)
            continue;
        if (i > 0)
            path[n++] = '/';
        memcpy(path + n, parts[i], lens[i]);
        n += lens[i];
    }
    if (path != NULL)
        path[n] = '\0';
    return path;
}

static int
sf_mkdir(const char *path, bool *created, struct sf_error *e)
{
    if (mkdir(path, 0700) == 0) {
        *created = true;
        return 0;
    }
    if (errno == EEXIST)
        return 0;
    return sf_fail(e, "mkdir", path, errno);
}

/* fsync a directory, so the entries just made in it survive a crash. */
int
sf_sync_dir(const char *path, struct sf_error *e)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0)
        return sf_fail(e, "open", path, errno);
    if (fsync(fd) != 0) {
        int err = errno;
        close(fd);
        return sf_fail(e, "fsync", path, err);
    }
    close(fd);
    return 0;
}

/* mkdir -p with mode 0700. */
int
sf_mkdir_parents(const char *path, struct sf_error *e)
{
    char *copy = strdup(path);
    bool created = false;

    if (copy == NULL)
        return sf_fail(e, "mkdir", path, ENOMEM);
    for (char *s = copy + 1; *s != '\0'; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        int rc = sf_mkdir(copy, &created, e);
        *s = '/';
        if (rc != 0) {
            free(copy);
            return -1;
        }
    }
    free(copy);
    return sf_mkdir(path, &created, e);
}

/*
 * Make dir a maildir: dir/{tmp,new,cur}, and envelope/ when asked. With
 * sync, the directories created are fsynced into their parents.
 */
int
sf_make_maildir(const char *dir, bool envelope, bool sync, struct sf_error *e)
{
    static const char *const subdirs[] = {"tmp", "new", "cur", "envelope"};
    bool made_dir = false, made_sub = false;

    if (sf_mkdir(dir, &made_dir, e) != 0)
        return -1;
    for (size_t i = 0; i < (envelope ? 4u : 3u); i++) {
        char *sub = sf_path(dir, subdirs[i], NULL);
        int rc = sub ? sf_mkdir(sub, &made_sub, e)
                     : sf_fail(e, "mkdir", dir, ENOMEM);
        free(sub);
        if (rc != 0)
            return -1;
    }
    if (sync && made_sub && sf_sync_dir(dir, e) != 0)
        return -1;
    if (sync && made_dir) {
        char *parent = sf_path(dir, "..", NULL);
        int rc =
            parent ? sf_sync_dir(parent, e) : sf_fail(e, "fsync", dir, ENOMEM);
        free(parent);
        return rc;
    }
    return 0;
}

/* write() all of buf, through short writes and EINTR. */
int
sf_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * Whether messages can be written as unnamed files in maildir/tmp and
 * linked into place (O_TMPFILE, then linkat() through /proc/self/fd, which
 * needs no capability, unlike AT_EMPTY_PATH). Tried once at start, as a
 * real file: the kernel, the file system and /proc must all play along.
 */
bool
sf_unnamed_files_work(const char *maildir)
{
    char *tmp = sf_path(maildir, "tmp", NULL);
    char proc[64], name[64];
    int fd = tmp ? open(tmp, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600) : -1;
    bool linked = false;

    if (fd >= 0) {
        char *probe;
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        snprintf(name, sizeof name, ".probe-%ld", (long)getpid());
        if ((probe = sf_path(tmp, name, NULL)) != NULL) {
            linked =
                linkat(AT_FDCWD, proc, AT_FDCWD, probe, AT_SYMLINK_FOLLOW) == 0;
            if (linked)
                unlink(probe);
            free(probe);
        }
        close(fd);
    }
    free(tmp);
    return linked;
}
