/*
 * store_file_journal.c - the write-ahead journal: one fdatasync makes
 * every delivery of a commit durable.
 *
 * A delivery is written into its maildirs and renamed into new/ at once
 * (visible, not yet on disk), and a copy of it (message, envelopes, where
 * they went) is appended to the journal segment of this process. A commit
 * then fdatasyncs the segment, once for every delivery appended since the
 * last one, and only then are their 250s sent: from that moment each
 * acknowledged message is on disk, in the journal, whatever happens to the
 * page cache. Appending to one file and syncing it costs one cache flush
 * and one metadata update; a file per message synced costs one per
 * message, or a syncfs() of every file made.
 *
 * Segments are rotated every "journal_checkpoint" seconds (and past
 * SF_SEGMENT_MAX bytes). Once every delivery of a sealed segment is
 * answered, a checkpoint syncfs()es the file systems its maildirs are on,
 * so their files are on disk too, and the segment is deleted. A segment
 * left by a crash is handled at start (store_file_replay.c).
 *
 * The segment being appended to is locked (flock) by its process, so a
 * process starting next to live ones (another worker, a new generation on
 * reload) recovers only what a dead process left.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "store_file.h"
#include "store_file_journal.h"

/* A segment past this size is rotated at the next commit. */
#define SF_SEGMENT_MAX ((uint64_t)64 << 20)
#define SF_COPY_SIZE (64 * 1024)

/* --- checksums ------------------------------------------------------------
 */

void
sf_sum_init(struct sf_sum *s)
{
    memset(s, 0, sizeof *s);
    s->a = 1;
}

static void
sf_sum_word(struct sf_sum *s, uint64_t w)
{
    s->a += w;
    s->b += s->a;
}

void
sf_sum_add(struct sf_sum *s, const void *data, size_t len)
{
    const unsigned char *p = data;

    while (len > 0 && s->tail_len > 0) {
        s->tail[s->tail_len++] = *p++;
        len--;
        if (s->tail_len == 8) {
            uint64_t w;
            memcpy(&w, s->tail, 8);
            sf_sum_word(s, w);
            s->tail_len = 0;
        }
    }
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        sf_sum_word(s, w);
    }
    memcpy(s->tail, p, len);
    s->tail_len = len;
}

uint64_t
sf_sum_final(struct sf_sum *s)
{
    uint64_t w = 0;

    memcpy(&w, s->tail, s->tail_len);
    sf_sum_word(s, w ^ ((uint64_t)s->tail_len << 56));
    return s->a ^ (s->b * 0x9e3779b97f4a7c15ull);
}

uint32_t
sf_record_header_check(const struct sf_record_header *h)
{
    struct sf_sum s;

    sf_sum_init(&s);
    sf_sum_add(&s, &h->magic, sizeof h->magic);
    sf_sum_add(&s, &h->body_len, sizeof h->body_len);
    sf_sum_add(&s, &h->n_targets, sizeof h->n_targets);
    sf_sum_add(&s, &h->reserved, sizeof h->reserved);
    uint64_t v = sf_sum_final(&s);
    return (uint32_t)(v ^ (v >> 32));
}

/* --- segments -------------------------------------------------------------
 */

static void
sf_segment_free(struct sf_segment *seg)
{
    if (seg == NULL)
        return;
    if (seg->fd >= 0)
        close(seg->fd);
    for (size_t i = 0; i < seg->n_devs; i++)
        free(seg->dev_dirs[i]);
    pthread_mutex_destroy(&seg->lock);
    free(seg->path);
    free(seg);
}

static int
sf_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* pwritev() until every byte is written; iov is consumed. */
static int
sf_pwritev_all(int fd, struct iovec *iov, int n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        off += (uint64_t)w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/*
 * A new segment, locked, with its header, under its final name, the
 * journal directory synced: a record acknowledged in it must not vanish
 * with a name the directory never kept. It is made as "<pid>.<seq>.new"
 * and renamed once locked, so a process recovering orphans (which takes
 * only *.journal files it can lock) never takes it. Pool thread or start.
 */
struct sf_segment *
sf_journal_segment_new(const struct store_file *sf, unsigned long seq, int *err)
{
    const struct sf_journal *j = &sf->journal;
    struct sf_segment *seg = calloc(1, sizeof *seg);
    char name[64], made[64];
    char header[SF_SEGMENT_HEADER_SIZE];
    char *tmp = NULL;
    struct sf_error e = {0};

    if (seg == NULL) {
        *err = ENOMEM;
        return NULL;
    }
    seg->fd = -1;
    pthread_mutex_init(&seg->lock, NULL);
    /* The pid, the instance's start time and a sequence number: unique
     * even for a pid reused after a crash, or two instances sharing a
     * directory; and link(), unlike rename(), never replaces a segment. */
    snprintf(name, sizeof name, "%ld.%llu.%lu.journal", (long)getpid(),
             j->started_ns, seq);
    snprintf(made, sizeof made, "%ld.%llu.%lu.new", (long)getpid(),
             j->started_ns, seq);
    if (!(seg->path = sf_path(j->dir, name, NULL)) ||
        !(tmp = sf_path(j->dir, made, NULL))) {
        *err = ENOMEM;
        goto fail;
    }
    memset(header, '\n', sizeof header);
    memcpy(header, SF_SEGMENT_MAGIC, strlen(SF_SEGMENT_MAGIC));
    memcpy(header + SF_BOOT_ID_OFFSET, j->boot_id, strlen(j->boot_id));
    seg->fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    bool linked = false;
    if (seg->fd < 0 || flock(seg->fd, LOCK_EX | LOCK_NB) != 0 ||
        sf_pwrite_all(seg->fd, header, sizeof header, 0) != 0 ||
        !(linked = link(tmp, seg->path) == 0) || sf_sync_dir(j->dir, &e) != 0) {
        *err = e.err ? e.err : errno;
        if (seg->fd >= 0)
            unlink(tmp);
        if (linked)
            unlink(seg->path);
        goto fail;
    }
    unlink(tmp);
    free(tmp);
    seg->end = SF_SEGMENT_HEADER_SIZE;
    return seg;
fail:
    free(e.path);
    free(tmp);
    sf_segment_free(seg);
    return NULL;
}

/* The kernel's boot id: a segment written under another one may have
 * lost what was only in the page cache (store_file_replay.c). */
static void
sf_read_boot_id(char *out, size_t size)
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

    snprintf(out, size, "unknown");
    if (f != NULL) {
        char line[64];
        if (fgets(line, sizeof line, f) != NULL) {
            line[strcspn(line, "\n")] = '\0';
            if (line[0] != '\0' && strlen(line) < SF_BOOT_ID_SIZE)
                snprintf(out, size, "%s", line);
        }
        fclose(f);
    }
}

int
sf_journal_open(struct store_file *sf, char *err, size_t errlen)
{
    struct sf_journal *j = &sf->journal;
    struct sf_error e = {0};
    int rc;

    j->sealed_tail = &j->sealed;
    sf_read_boot_id(j->boot_id, sizeof j->boot_id);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    j->started_ns = (unsigned long long)now.tv_sec * 1000000000ull +
                    (unsigned long long)now.tv_nsec;
    /* The directory itself must survive a power loss: its parent is
     * synced once it exists. */
    char *parent = sf_path(j->dir, "..", NULL);
    if (sf_mkdir_parents(j->dir, &e) != 0 ||
        (parent && sf_sync_dir(parent, &e) != 0)) {
        free(parent);
        snprintf(err, errlen, "cannot create %s: %s", e.path ? e.path : j->dir,
                 strerror(e.err));
        free(e.path);
        return -1;
    }
    free(parent);
    sf_replay_orphans(sf);
    if ((j->active = sf_journal_segment_new(sf, ++j->seq, &rc)) == NULL) {
        snprintf(err, errlen, "cannot create a segment in %s: %s", j->dir,
                 strerror(rc));
        return -1;
    }
    j->active->opened = postern_now();
    return 0;
}

/* --- appending (pool threads) ---------------------------------------------
 */

/* Remember the file system of a delivery for the checkpoint. Under the
 * segment's lock. */
static void
sf_segment_note_dev(struct sf_segment *seg, dev_t dev, const char *dir)
{
    for (size_t i = 0; i < seg->n_devs; i++)
        if (seg->devs[i] == dev)
            return;
    if (seg->n_devs == sizeof seg->devs / sizeof seg->devs[0]) {
        seg->devs_overflow = true;
        return;
    }
    char *copy = strdup(dir);
    if (copy == NULL) {
        seg->devs_overflow = true;
        return;
    }
    seg->devs[seg->n_devs] = dev;
    seg->dev_dirs[seg->n_devs++] = copy;
}

static void
sf_meta_u32(char **p, uint32_t v)
{
    memcpy(*p, &v, sizeof v);
    *p += sizeof v;
}

static void
sf_meta_text(char **p, const char *s)
{
    uint32_t len = s ? (uint32_t)strlen(s) : 0;

    sf_meta_u32(p, len);
    memcpy(*p, s ? s : "", len);
    *p += len;
}

/*
 * The record body before the message: the file name, then per target
 * its maildir and its envelope text ("" without envelopes), then the
 * message length. All lengths are uint32_t but that one (uint64_t).
 */
static char *
sf_record_meta(const struct sf_job *job, uint64_t msg_len, size_t *len)
{
    size_t n = 4 + strlen(job->name) + 8;

    for (size_t i = 0; i < job->n_targets; i++) {
        const struct sf_target *t = &job->targets[i];
        n += 8 + strlen(t->dir) + (t->envelope ? strlen(t->envelope) : 0);
    }
    char *meta = malloc(n), *p = meta;
    if (meta == NULL)
        return NULL;
    sf_meta_text(&p, job->name);
    for (size_t i = 0; i < job->n_targets; i++) {
        sf_meta_text(&p, job->targets[i].dir);
        sf_meta_text(&p, job->sf->envelope ? job->targets[i].envelope : NULL);
    }
    memcpy(p, &msg_len, sizeof msg_len);
    *len = n;
    return meta;
}

/* The message just written, for reading it back: the unnamed file is
 * open already, a named one is opened. */
static int
sf_message_source(struct sf_job *job, bool *opened)
{
    const struct sf_target *t = &job->targets[0];

    *opened = t->fd < 0;
    if (t->fd >= 0)
        return t->fd;
    int fd = open(t->tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        sf_fail(&job->error, "open", t->tmp, errno);
    return fd;
}

/* Copy len bytes of src into the segment at off, summing them. */
static int
sf_append_message(struct sf_job *job, int src, uint64_t len, uint64_t off,
                  struct sf_sum *sum)
{
    struct sf_segment *seg = job->segment;
    char *buf = malloc(SF_COPY_SIZE);
    uint64_t done = 0;

    if (buf == NULL)
        return sf_fail(&job->error, "copy to", seg->path, ENOMEM);
    while (done < len) {
        size_t want =
            len - done < SF_COPY_SIZE ? (size_t)(len - done) : SF_COPY_SIZE;
        ssize_t n = pread(src, buf, want, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            sf_fail(&job->error, "read", job->targets[0].tmp,
                    n < 0 ? errno : EIO);
            break;
        }
        sf_sum_add(sum, buf, (size_t)n);
        if (sf_pwrite_all(seg->fd, buf, (size_t)n, off + done) != 0) {
            sf_fail(&job->error, "write", seg->path, errno);
            break;
        }
        done += (uint64_t)n;
    }
    free(buf);
    return done == len ? 0 : -1;
}

/* The file systems of a delivery's maildirs, for the checkpoint: devs
 * holds one per target. */
static int
sf_delivery_devs(struct sf_job *job, dev_t *devs)
{
    for (size_t i = 0; i < job->n_targets; i++) {
        const struct sf_target *t = &job->targets[i];
        struct stat st;
        if ((t->fd >= 0 ? fstat(t->fd, &st) : stat(t->dir, &st)) != 0)
            return sf_fail(&job->error, "stat", t->dir, errno);
        devs[i] = st.st_dev;
    }
    return 0;
}

/* Under the segment's lock. */
static void
sf_segment_note_devs(struct sf_segment *seg, const struct sf_job *job,
                     const dev_t *devs)
{
    for (size_t i = 0; i < job->n_targets; i++)
        sf_segment_note_dev(seg, devs[i], job->targets[i].dir);
}

/* A message kept in memory (job->copy): the whole record in one write,
 * under the segment's lock. */
static int
sf_append_inline(struct sf_job *job, const char *meta, size_t meta_len,
                 const dev_t *devs)
{
    struct sf_segment *seg = job->segment;
    struct sf_record_header h = {
        .magic = SF_RECORD_MAGIC,
        .body_len = meta_len + job->copy_len,
        .n_targets = (uint32_t)job->n_targets,
    };
    struct sf_sum sum;

    h.check = sf_record_header_check(&h);
    sf_sum_init(&sum);
    sf_sum_add(&sum, meta, meta_len);
    sf_sum_add(&sum, job->copy, job->copy_len);
    struct sf_record_trailer tr = {.check = sf_sum_final(&sum)};
    struct iovec iov[4] = {
        {&h, sizeof h},
        {(void *)meta, meta_len},
        {job->copy, job->copy_len},
        {&tr, sizeof tr},
    };

    pthread_mutex_lock(&seg->lock);
    int rc = seg->broken ? -1 : sf_pwritev_all(seg->fd, iov, 4, seg->end);
    int err = seg->broken ? EIO : errno;
    if (rc == 0) {
        seg->end += sizeof h + h.body_len + sizeof tr;
        seg->records++;
        sf_segment_note_devs(seg, job, devs);
    }
    pthread_mutex_unlock(&seg->lock);
    return rc == 0 ? 0 : sf_fail(&job->error, "write", seg->path, err);
}

/* A message too big to keep in memory: the space is reserved and the
 * header written under the lock, the rest is read back from the message
 * file and written without it, in parallel with other deliveries. */
static int
sf_append_streamed(struct sf_job *job, const char *meta, size_t meta_len,
                   const dev_t *devs)
{
    struct sf_segment *seg = job->segment;
    bool opened;
    int src = sf_message_source(job, &opened);
    struct stat st;
    int rc = -1;

    if (src < 0)
        return -1;
    if (fstat(src, &st) != 0) {
        sf_fail(&job->error, "stat", job->targets[0].tmp, errno);
        goto out;
    }
    /* The message length ends the meta part. */
    uint64_t msg_len = (uint64_t)st.st_size;
    memcpy((char *)meta + meta_len - sizeof msg_len, &msg_len, sizeof msg_len);
    struct sf_record_header h = {
        .magic = SF_RECORD_MAGIC,
        .body_len = meta_len + msg_len,
        .n_targets = (uint32_t)job->n_targets,
    };
    h.check = sf_record_header_check(&h);

    pthread_mutex_lock(&seg->lock);
    uint64_t off = seg->end;
    int written = seg->broken ? -1 : sf_pwrite_all(seg->fd, &h, sizeof h, off);
    int err = seg->broken ? EIO : errno;
    if (written == 0) {
        seg->end += sizeof h + h.body_len + sizeof(struct sf_record_trailer);
        seg->records++;
        sf_segment_note_devs(seg, job, devs);
    }
    pthread_mutex_unlock(&seg->lock);
    if (written != 0) {
        sf_fail(&job->error, "write", seg->path, err);
        goto out;
    }

    struct sf_sum sum;
    sf_sum_init(&sum);
    sf_sum_add(&sum, meta, meta_len);
    off += sizeof h;
    if (sf_pwrite_all(seg->fd, meta, meta_len, off) != 0) {
        sf_fail(&job->error, "write", seg->path, errno);
        goto out;
    }
    if (sf_append_message(job, src, msg_len, off + meta_len, &sum) != 0)
        goto out;
    struct sf_record_trailer tr = {.check = sf_sum_final(&sum)};
    if (sf_pwrite_all(seg->fd, &tr, sizeof tr, off + h.body_len) != 0) {
        sf_fail(&job->error, "write", seg->path, errno);
        goto out;
    }
    rc = 0;
out:
    if (opened)
        close(src);
    return rc;
}

/*
 * Append a written delivery to its segment, before its renames into new/:
 * a record whose delivery a crash cut short is replayed only after a
 * power loss, when the client may get a copy it was not told about, never
 * one less. A header is always on the file before the next record's
 * space is reserved (see store_file_journal.h).
 */
int
sf_journal_append(struct sf_job *job)
{
    size_t meta_len = 0;
    char *meta = sf_record_meta(job, job->copy_len, &meta_len);
    dev_t *devs = calloc(job->n_targets, sizeof *devs);
    int rc = -1;

    if (meta == NULL || devs == NULL)
        sf_fail(&job->error, "copy to", job->segment->path, ENOMEM);
    else if (sf_delivery_devs(job, devs) != 0)
        rc = -1;
    else if (!job->copy_whole)
        rc = sf_append_streamed(job, meta, meta_len, devs);
    else
        rc = sf_append_inline(job, meta, meta_len, devs);
    free(devs);
    free(meta);
    return rc;
}

/* The durability point of a commit: each segment its deliveries were
 * appended to, fdatasynced once. A delivery whose segment did not sync
 * fails (its copies in new/ stay: see sf_undo()). */
void
sf_journal_sync(struct sf_job *jobs)
{
    for (struct sf_job *j = jobs; j != NULL; j = j->next) {
        if (j->error.err != 0)
            continue;
        bool seen = false;
        for (struct sf_job *k = jobs; k != j && !seen; k = k->next)
            seen = k->segment == j->segment && k->error.err == 0;
        if (seen)
            continue;
        int err = fdatasync(j->segment->fd) == 0 ? 0 : errno;
        if (err != 0) {
            /* The kernel may have dropped what failed to reach the disk,
             * an earlier record's header with it: nothing more goes
             * into this segment, and the next commit starts another. */
            pthread_mutex_lock(&j->segment->lock);
            j->segment->broken = true;
            pthread_mutex_unlock(&j->segment->lock);
        }
        for (struct sf_job *k = j; err != 0 && k != NULL; k = k->next)
            if (k->segment == j->segment && k->error.err == 0)
                sf_fail(&k->error, "fdatasync", j->segment->path, err);
    }
}

/* --- rotation and checkpoints (loop thread) -------------------------------
 */

struct sf_segment *
sf_journal_assign(struct store_file *sf)
{
    struct sf_segment *seg = sf->journal.active;

    seg->pending++;
    return seg;
}

bool
sf_journal_rotation_due(const struct store_file *sf)
{
    const struct sf_journal *j = &sf->journal;
    struct sf_segment *seg = j->active;

    /* The loop never waits for an append (a large one may take long):
     * a segment being written to is asked again at the next commit. */
    if (pthread_mutex_trylock(&seg->lock) != 0)
        return false;
    uint64_t end = seg->end;
    size_t records = seg->records;
    bool broken = seg->broken;
    pthread_mutex_unlock(&seg->lock);
    return broken ||
           (records > 0 && (end >= SF_SEGMENT_MAX ||
                            postern_now() - seg->opened >= j->checkpoint));
}

/* Make the files of a segment's deliveries durable: syncfs() each file
 * system they are on (every one with too many). 0 or an errno value. */
static int
sf_checkpoint_sync(struct sf_segment *seg)
{
    if (seg->devs_overflow) {
        sync();
        return 0;
    }
    for (size_t i = 0; i < seg->n_devs; i++) {
        int fd = open(seg->dev_dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int rc = fd < 0 ? -1 : syncfs(fd);
        int err = errno;
        if (fd >= 0)
            close(fd);
        if (rc != 0)
            return err;
    }
    return 0;
}

struct sf_checkpoint {
    struct store_file *sf;
    struct sf_segment *seg;
    int err;
};

static void
sf_checkpoint_work(void *arg)
{
    struct sf_checkpoint *c = arg;

    c->err = sf_checkpoint_sync(c->seg);
    /* Kept on failure: the next start syncs (or replays) it again. */
    if (c->err == 0 && unlink(c->seg->path) != 0)
        c->err = errno;
}

static void sf_checkpoint_next(struct store_file *sf);

static void
sf_checkpoint_done(void *arg)
{
    struct sf_checkpoint *c = arg;
    struct store_file *sf = c->sf;

    if (c->err != 0)
        postern_log(NULL, POSTERN_LOG_ERROR,
                    "journal checkpoint failed segment=%s error=%s: it "
                    "stays for the next start",
                    postern_log_value(c->seg->path),
                    postern_log_value(strerror(c->err)));
    sf->journal.checkpoints++;
    sf_segment_free(c->seg);
    free(c);
    sf->journal.checkpointing = false;
    sf_checkpoint_next(sf);
}

/* Checkpoint the oldest sealed segment once all its deliveries are
 * answered; one checkpoint at a time. */
static void
sf_checkpoint_next(struct store_file *sf)
{
    struct sf_journal *j = &sf->journal;
    struct sf_segment *seg = j->sealed;

    if (j->checkpointing || seg == NULL || seg->pending > 0)
        return;
    struct sf_checkpoint *c = calloc(1, sizeof *c);
    if (c == NULL)
        return; /* tried again at the next release, or at close */
    c->sf = sf;
    c->seg = seg;
    if (postern_pool_submit(sf_checkpoint_work, sf_checkpoint_done, c) != 0) {
        free(c);
        return; /* shutting down: sf_journal_close() does it */
    }
    j->sealed = seg->next;
    if (j->sealed == NULL)
        j->sealed_tail = &j->sealed;
    j->checkpointing = true;
}

void
sf_journal_release(struct store_file *sf, struct sf_segment *seg)
{
    if (seg == NULL)
        return;
    seg->pending--;
    sf_checkpoint_next(sf);
}

/* A commit made the next segment: seal the active one, and take it. */
void
sf_journal_install(struct store_file *sf, struct sf_segment *next)
{
    struct sf_journal *j = &sf->journal;

    j->rotating = false;
    if (next == NULL)
        return;
    next->opened = postern_now();
    j->active->next = NULL;
    *j->sealed_tail = j->active;
    j->sealed_tail = &j->active->next;
    j->active = next;
    sf_checkpoint_next(sf);
}

/* At exit, every delivery answered: checkpoint what is left here. */
void
sf_journal_close(struct store_file *sf)
{
    struct sf_journal *j = &sf->journal;

    if (j->active != NULL) {
        *j->sealed_tail = j->active;
        j->sealed_tail = &j->active->next;
        j->active = NULL;
    }
    for (struct sf_segment *seg = j->sealed, *next; seg != NULL; seg = next) {
        next = seg->next;
        if (seg->pending == 0 &&
            (seg->records == 0 || sf_checkpoint_sync(seg) == 0))
            unlink(seg->path);
        sf_segment_free(seg);
    }
    j->sealed = NULL;
}
