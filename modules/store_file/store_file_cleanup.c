/*
 * store_file_cleanup.c - at start, files left in tmp/ by deliveries that
 * never finished (a crash between writing and delivering), once they are
 * older than any delivery can take.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store_file.h"

/* How old a file in tmp/ must be before it is taken for a leftover: the
 * 36 hours of the Maildir specification (and of qmail, Dovecot). A younger
 * file may be a delivery in progress in another process. */
#define SF_TMP_MAX_AGE (36.0 * 3600.0)

struct sf_cleanup {
    size_t maildirs, removed, failed;
    int err;          /* errno of the first failure */
    char *first_fail; /* path of the first failure */
};

static void
sf_cleanup_fail(struct sf_cleanup *c, const char *dir, const char *name,
                int err)
{
    if (c->failed++ == 0) {
        c->err = err;
        c->first_fail = sf_path(dir, name, NULL);
    }
}

/* Remove the regular files of maildir/tmp last modified before cutoff.
 * Entries are looked at through the directory's descriptor and never
 * followed: a symbolic link or a directory in tmp/ stays, and so does
 * everything when tmp/ itself is a symbolic link. */
static void
sf_clean_tmp(const char *maildir, time_t cutoff, struct sf_cleanup *c)
{
    char *tmp = sf_path(maildir, "tmp", NULL);
    int fd =
        tmp ? open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *e;

    if (d == NULL) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        /* No tmp/ (not a maildir, or not made yet): nothing to clean. */
        if (tmp != NULL && err != ENOENT && err != ENOTDIR)
            sf_cleanup_fail(c, tmp, NULL, err);
        free(tmp);
        return;
    }
    c->maildirs++;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode) || st.st_mtime >= cutoff)
            continue;
        if (unlinkat(fd, e->d_name, 0) == 0)
            c->removed++;
        else if (errno != ENOENT)
            sf_cleanup_fail(c, tmp, e->d_name, errno);
    }
    closedir(d);
    free(tmp);
}

/* The tmp/ of maildir, and of its quarantine folder when there is one. */
static void
sf_clean_maildir(const struct store_file *sf, const char *maildir,
                 time_t cutoff, struct sf_cleanup *c)
{
    sf_clean_tmp(maildir, cutoff, c);
    if (sf->quarantine_folder) {
        char *folder = sf_path(maildir, sf->quarantine_folder, NULL);
        if (folder != NULL)
            sf_clean_tmp(folder, cutoff, c);
        free(folder);
    }
}

/* The maildirs of one root: the root, or with per_recipient every maildir
 * under it. */
static void
sf_clean_root(const struct store_file *sf, const char *root, time_t cutoff,
              struct sf_cleanup *c)
{
    if (!sf->per_recipient) {
        sf_clean_maildir(sf, root, cutoff, c);
        return;
    }
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *e;
    if (d == NULL) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        sf_cleanup_fail(c, root, NULL, err);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.' ||
            fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISDIR(st.st_mode))
            continue;
        char *maildir = sf_path(root, e->d_name, NULL);
        if (maildir != NULL)
            sf_clean_maildir(sf, maildir, cutoff, c);
        free(maildir);
    }
    closedir(d);
}

/* At start: clean the tmp/ of the root maildir, or with per_recipient of
 * every maildir under the root, and of the quarantine maildirs. Runs in
 * create(), before the loop serves anyone; failures are logged, never
 * fatal. */
void
sf_clean_leftovers(const struct store_file *sf)
{
    time_t cutoff = (time_t)(postern_now() - SF_TMP_MAX_AGE);
    struct sf_cleanup c = {0};

    sf_clean_root(sf, sf->root, cutoff, &c);
    if (sf->quarantine_root)
        sf_clean_root(sf, sf->quarantine_root, cutoff, &c);
    if (c.removed > 0)
        postern_log(NULL, POSTERN_LOG_INFO,
                    "removed leftover files older than 36 hours from tmp/ "
                    "removed=%zu maildirs=%zu root=%s",
                    c.removed, c.maildirs, postern_log_value(sf->root));
    if (c.failed > 0)
        postern_log(NULL, POSTERN_LOG_WARNING,
                    "cannot clean leftovers in tmp/ failed=%zu path=%s "
                    "error=%s",
                    c.failed,
                    postern_log_value(c.first_fail ? c.first_fail : sf->root),
                    postern_log_value(strerror(c.err)));
    free(c.first_fail);
}
