/*
 * store_file_replay.c - at start, the journal segments a dead process
 * left (store_file_journal.c explains the journal).
 *
 * Every delivery in a segment was written into its maildirs and renamed
 * into new/ before its record was appended, and acknowledged only once
 * the segment was synced. So:
 *
 *   - written under the boot we run in (the process died, the machine did
 *     not): the page cache kept every file, and a file missing from new/
 *     was taken by a mail reader. Only the checkpoint is left to do:
 *     syncfs() the file systems of its maildirs, delete the segment.
 *   - written under another boot (a power loss or a crash of the kernel):
 *     what was only in the page cache may be lost or cut short. Each whole
 *     record is restored: its envelopes, and its message unless a reader
 *     has it in cur/. A message missing from new/ and cur/ is written
 *     again; a reader may have taken it in the last seconds before the
 *     power loss, so that is a duplicate at worst, never a loss.
 *
 * A segment is taken only under its lock (flock): one held by a live
 * process (another worker, the old generation during a reload) is left
 * alone. Records that are not whole were never acknowledged: skipped.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_file.h"
#include "store_file_journal.h"

/* A record's body larger than this is not believed (a damaged header). */
#define SF_RECORD_MAX ((uint64_t)1 << 34)

struct sf_replay {
    const struct store_file *sf;
    const char *segment;
    bool other_boot;
    size_t records, skipped, restored, failed;
    dev_t devs[16];
    char *dirs[16];
    size_t n_devs;
    bool devs_overflow;
};

static int
sf_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static void
sf_replay_note_dir(struct sf_replay *r, const char *dir)
{
    struct stat st;

    if (stat(dir, &st) != 0)
        return;
    for (size_t i = 0; i < r->n_devs; i++)
        if (r->devs[i] == st.st_dev)
            return;
    if (r->n_devs == sizeof r->devs / sizeof r->devs[0] ||
        !(r->dirs[r->n_devs] = strdup(dir))) {
        r->devs_overflow = true;
        return;
    }
    r->devs[r->n_devs++] = st.st_dev;
}

/* Does the file at path hold exactly data? */
static bool
sf_same_content(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    bool same = false;

    if (fd < 0)
        return false;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size == len) {
        char *buf = malloc(len ? len : 1);
        same = buf && sf_pread_all(fd, buf, len, 0) == 0 &&
               memcmp(buf, data, len) == 0;
        free(buf);
    }
    close(fd);
    return same;
}

/* Write data to path (replacing it), on disk before returning. */
static int
sf_write_synced(const char *path, const char *data, size_t len,
                struct sf_error *e)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    if (fd < 0)
        return sf_fail(e, "open", path, errno);
    if (sf_write_all(fd, data, len) != 0 || fdatasync(fd) != 0) {
        int err = errno;
        close(fd);
        return sf_fail(e, "write", path, err);
    }
    if (close(fd) != 0)
        return sf_fail(e, "close", path, errno);
    return 0;
}

/* The path of "name", or "name:<flags>", in dir/cur (a reader moved it
 * there), or NULL. */
static char *
sf_in_cur(const char *dir, const char *name)
{
    char *cur = sf_path(dir, "cur", NULL);
    DIR *d = cur ? opendir(cur) : NULL;
    size_t len = strlen(name);
    char *found = NULL;

    for (struct dirent *de; d && !found && (de = readdir(d)) != NULL;)
        if (strncmp(de->d_name, name, len) == 0 &&
            (de->d_name[len] == '\0' || de->d_name[len] == ':'))
            found = sf_path(cur, de->d_name, NULL);
    if (d)
        closedir(d);
    free(cur);
    return found;
}

/* One target of a record written under another boot. */
static int
sf_restore_target(struct sf_replay *r, const char *dir, const char *name,
                  const char *env, size_t env_len, const char *msg,
                  size_t msg_len, struct sf_error *e)
{
    char json_name[512];
    char *env_path = NULL, *new_path = NULL, *tmp_path = NULL;
    int rc = -1;

    snprintf(json_name, sizeof json_name, "%s.json", name);
    if (sf_make_maildir(dir, env_len > 0, true, e) != 0)
        return -1;
    if (!(new_path = sf_path(dir, "new", name)) ||
        !(tmp_path = sf_path(dir, "tmp", name)) ||
        !(env_path = sf_path(dir, "envelope", json_name))) {
        sf_fail(e, "restore", dir, ENOMEM);
        goto out;
    }
    if (env_len > 0 && !sf_same_content(env_path, env, env_len) &&
        sf_write_synced(env_path, env, env_len, e) != 0)
        goto out;
    if (sf_same_content(new_path, msg, msg_len)) {
        rc = 0;
        goto out;
    }
    /* A reader has it in cur/: left alone when whole; a copy the power
     * loss cut short is delivered again (the reader's file is theirs). */
    char *cur = access(new_path, F_OK) != 0 ? sf_in_cur(dir, name) : NULL;
    bool reader_has_it = cur && sf_same_content(cur, msg, msg_len);
    free(cur);
    if (reader_has_it) {
        rc = 0;
        goto out;
    }
    if (sf_write_synced(tmp_path, msg, msg_len, e) != 0)
        goto out;
    if (rename(tmp_path, new_path) != 0) {
        sf_fail(e, "rename", tmp_path, errno);
        unlink(tmp_path);
        goto out;
    }
    r->restored++;
    rc = 0;
out:
    free(env_path);
    free(new_path);
    free(tmp_path);
    return rc;
}

/* Read a length-prefixed text of the body at *pos. */
static const char *
sf_body_text(const char *body, size_t body_len, size_t *pos, size_t *len)
{
    uint32_t n;

    if (body_len - *pos < sizeof n)
        return NULL;
    memcpy(&n, body + *pos, sizeof n);
    *pos += sizeof n;
    if (body_len - *pos < n)
        return NULL;
    const char *s = body + *pos;
    *pos += n;
    *len = n;
    return s;
}

/* dir is base or below it. */
static bool
sf_under(const char *base, const char *dir)
{
    size_t n = strlen(base);

    while (n > 1 && base[n - 1] == '/')
        n--;
    return strncmp(dir, base, n) == 0 && (dir[n] == '\0' || dir[n] == '/');
}

/* Recovery writes where a record says, and a segment is input like any
 * file: a maildir it names must lie under root (or the quarantine root),
 * with no "." or ".." on the way. One that does not (root changed since,
 * or a segment not of our making) is not written to. */
static bool
sf_replay_dir_allowed(const struct store_file *sf, const char *dir)
{
    if (!sf_under(sf->root, dir) &&
        !(sf->quarantine_root && sf_under(sf->quarantine_root, dir)))
        return false;
    for (const char *p = dir; *p != '\0';) {
        size_t n = strcspn(p, "/");
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        p += n;
        p += *p == '/';
    }
    return true;
}

/* One whole record: its maildirs noted for the sync, and under another
 * boot its files restored. -1 when its body does not parse. */
static int
sf_replay_record(struct sf_replay *r, const struct sf_record_header *h,
                 const char *body)
{
    size_t pos = 0, name_len;
    const char *name = sf_body_text(body, h->body_len, &pos, &name_len);
    char name_z[256];

    if (name == NULL || name_len == 0 || name_len >= sizeof name_z ||
        memchr(name, '/', name_len) || h->n_targets == 0)
        return -1;
    memcpy(name_z, name, name_len);
    name_z[name_len] = '\0';

    /* The message follows the targets: find it first. */
    size_t targets_at = pos;
    for (uint32_t i = 0; i < h->n_targets; i++) {
        size_t a, b;
        if (!sf_body_text(body, h->body_len, &pos, &a) ||
            !sf_body_text(body, h->body_len, &pos, &b))
            return -1;
    }
    uint64_t msg_len;
    if (h->body_len - pos < sizeof msg_len)
        return -1;
    memcpy(&msg_len, body + pos, sizeof msg_len);
    pos += sizeof msg_len;
    if (h->body_len - pos != msg_len)
        return -1;
    const char *msg = body + pos;

    pos = targets_at;
    for (uint32_t i = 0; i < h->n_targets; i++) {
        size_t dir_len = 0, env_len = 0;
        const char *dir = sf_body_text(body, h->body_len, &pos, &dir_len);
        const char *env = sf_body_text(body, h->body_len, &pos, &env_len);
        char *dir_z = dir && env ? strndup(dir, dir_len) : NULL;
        struct sf_error e = {0};
        if (dir_z == NULL) {
            r->failed++;
            continue;
        }
        if (r->other_boot && !sf_replay_dir_allowed(r->sf, dir_z)) {
            /* Failed: the segment stays for a start whose root fits. */
            r->failed++;
            postern_log(NULL, POSTERN_LOG_ERROR,
                        "journal record outside the maildir root segment=%s "
                        "file=%s maildir=%s root=%s: not restored",
                        postern_log_value(r->segment),
                        postern_log_value(name_z), postern_log_value(dir_z),
                        postern_log_value(r->sf->root));
        } else if (r->other_boot &&
                   sf_restore_target(r, dir_z, name_z, env, env_len, msg,
                                     msg_len, &e) != 0) {
            r->failed++;
            postern_log(
                NULL, POSTERN_LOG_ERROR,
                "journal restore failed segment=%s file=%s op=%s "
                "path=%s error=%s",
                postern_log_value(r->segment), postern_log_value(name_z), e.op,
                postern_log_value(e.path), postern_log_value(strerror(e.err)));
        }
        free(e.path);
        sf_replay_note_dir(r, dir_z);
        free(dir_z);
    }
    return 0;
}

/* Walk the records of an open segment. */
static void
sf_replay_records(struct sf_replay *r, int fd, uint64_t size)
{
    uint64_t off = SF_SEGMENT_HEADER_SIZE;

    while (size - off >= sizeof(struct sf_record_header)) {
        struct sf_record_header h;
        if (sf_pread_all(fd, &h, sizeof h, off) != 0 ||
            h.magic != SF_RECORD_MAGIC || h.check != sf_record_header_check(&h))
            break; /* the end: no record was reserved past here */
        uint64_t total =
            sizeof h + h.body_len + sizeof(struct sf_record_trailer);
        if (h.body_len > SF_RECORD_MAX || size - off < total) {
            r->skipped++; /* cut short: never acknowledged */
            break;
        }
        char *body = malloc(h.body_len ? h.body_len : 1);
        struct sf_record_trailer tr;
        struct sf_sum sum;
        sf_sum_init(&sum);
        if (body == NULL ||
            sf_pread_all(fd, body, h.body_len, off + sizeof h) != 0 ||
            sf_pread_all(fd, &tr, sizeof tr, off + sizeof h + h.body_len) !=
                0) {
            r->skipped++;
        } else {
            sf_sum_add(&sum, body, h.body_len);
            if (tr.check != sf_sum_final(&sum) ||
                sf_replay_record(r, &h, body) != 0)
                r->skipped++;
            else
                r->records++;
        }
        free(body);
        off += total;
    }
}

/* The file systems of every maildir of the segment, synced. */
static int
sf_replay_sync(struct sf_replay *r)
{
    int err = 0;

    if (r->devs_overflow)
        sync();
    for (size_t i = 0; i < r->n_devs; i++) {
        int fd = open(r->dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || syncfs(fd) != 0)
            err = errno;
        if (fd >= 0)
            close(fd);
        free(r->dirs[i]);
    }
    return err;
}

/* One orphaned segment, locked in fd. */
static void
sf_replay_segment(const struct store_file *sf, const char *path, int fd)
{
    char header[SF_SEGMENT_HEADER_SIZE];
    struct stat st;
    struct sf_replay r = {.sf = sf, .segment = path};

    if (fstat(fd, &st) != 0 ||
        sf_pread_all(fd, header, sizeof header, 0) != 0 ||
        memcmp(header, SF_SEGMENT_MAGIC, strlen(SF_SEGMENT_MAGIC)) != 0) {
        postern_log(NULL, POSTERN_LOG_WARNING,
                    "journal: not a segment, left alone path=%s",
                    postern_log_value(path));
        return;
    }
    char boot[SF_BOOT_ID_SIZE + 1];
    memcpy(boot, header + SF_BOOT_ID_OFFSET, SF_BOOT_ID_SIZE);
    boot[SF_BOOT_ID_SIZE] = '\0';
    boot[strcspn(boot, "\n")] = '\0';
    r.other_boot =
        strcmp(boot, sf->journal.boot_id) != 0 || strcmp(boot, "unknown") == 0;
    sf_replay_records(&r, fd, (uint64_t)st.st_size);
    int err = sf_replay_sync(&r);
    if (err != 0 || r.failed > 0) {
        postern_log(NULL, POSTERN_LOG_ERROR,
                    "journal recovery incomplete segment=%s records=%zu "
                    "failed=%zu error=%s: it stays for the next start",
                    postern_log_value(path), r.records, r.failed,
                    postern_log_value(err ? strerror(err) : "restore"));
        return;
    }
    unlink(path);
    postern_log(NULL, POSTERN_LOG_INFO,
                "journal recovered segment=%s boot=%s records=%zu "
                "restored=%zu skipped=%zu",
                postern_log_value(path), r.other_boot ? "other" : "same",
                r.records, r.restored, r.skipped);
}

/* A "<pid>.….new" file is being made (and not yet locked) while its
 * process lives: left to it. */
static bool
sf_owner_alive(const char *name)
{
    char *end;
    long pid = strtol(name, &end, 10);

    return end != name && *end == '.' && pid > 0 &&
           (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

static bool
sf_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n > m && strcmp(s + n - m, suffix) == 0;
}

void
sf_replay_orphans(const struct store_file *sf)
{
    const char *dir = sf->journal.dir;
    DIR *d = opendir(dir);

    if (d == NULL)
        return;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        bool segment = sf_ends_with(de->d_name, ".journal");
        bool unfinished = sf_ends_with(de->d_name, ".new");
        if (!segment && !unfinished)
            continue;
        char *path = sf_path(dir, de->d_name, NULL);
        int fd = path ? open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW) : -1;
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0) {
            if (segment)
                sf_replay_segment(sf, path, fd);
            else if (!sf_owner_alive(de->d_name))
                unlink(path); /* never held a record */
        }
        if (fd >= 0)
            close(fd);
        free(path);
    }
    closedir(d);
}
