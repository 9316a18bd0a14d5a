/*
 * store_file.h - what the parts of the store_file module share: the
 * instance, one delivery (a job) and its target maildirs.
 *
 *   store_file.c          the module: config, create, the store hook, and
 *                         the scheduling on the loop thread (write jobs in
 *                         parallel, one group commit at a time)
 *   store_file_job.c      gathering a delivery on the loop thread: targets,
 *                         unique file name
 *   store_file_envelope.c the envelope of a delivery as a line of JSON
 *   store_file_write.c    one delivery's files, on a pool thread
 *   store_file_commit.c   the durability points of a group of deliveries
 *   store_file_fs.c       paths, directories, errors
 *   store_file_cleanup.c  leftovers in tmp/ at start
 *   store_file_journal.c  the write-ahead journal: append, sync, segments
 *   store_file_replay.c   the journal left by a crash, at start
 */
#ifndef POSTERN_STORE_FILE_H
#define POSTERN_STORE_FILE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <postern/postern.h>

/* A journal segment: one file, appended to by pool threads. */
struct sf_segment {
    struct sf_segment *next; /* sealed, waiting for their checkpoint */
    char *path;
    int fd;
    pthread_mutex_t lock; /* end, devs: reserving a record's space */
    uint64_t end;
    size_t records;
    /* The file systems its deliveries went to (syncfs at checkpoint),
     * each with a maildir on it. */
    dev_t devs[8];
    char *dev_dirs[8];
    size_t n_devs;
    bool devs_overflow; /* more than 8: sync every file system */
    bool broken;        /* an fdatasync failed: no more appends */
    /* Loop thread only. */
    double opened;  /* postern_now() */
    size_t pending; /* deliveries in it not yet answered */
};

/* The journal of an instance (with "journal": true). Loop thread only,
 * but for what struct sf_segment says. */
struct sf_journal {
    char *dir;
    char boot_id[40];
    unsigned long long started_ns; /* in segment names */
    unsigned long seq;
    double checkpoint; /* seconds between checkpoints */
    struct sf_segment *active;
    struct sf_segment *sealed, **sealed_tail;
    bool checkpointing;
    bool rotating; /* a commit is making the next segment */
    unsigned long checkpoints;
};

struct store_file {
    char *root;
    /* Where quarantined messages go (postern_message_quarantine()): a
     * Maildir++ folder ".<name>" inside each maildir, or, when the config
     * value is an absolute path, a separate root laid out like root. */
    char *quarantine_folder; /* ".Quarantine"; NULL with quarantine_root */
    char *quarantine_root;
    bool per_recipient;
    bool envelope;
    bool fsync;
    bool journal_on; /* 250 once the journal is synced (see journal.c) */
    struct sf_journal journal;
    /* Messages are written as unnamed files (O_TMPFILE) and linked into
     * new/: no name in tmp/ to make and rename. Probed at start. */
    bool unnamed_files;
    char host[256]; /* sanitised host name, for unique file names */
    long pid;       /* of the worker (instances are made after the fork) */
    /* Group commit (see sf_commit_queue()): under queue_lock, from pool
     * threads. */
    pthread_mutex_t queue_lock;
    struct sf_job *written, **written_tail; /* waiting for a commit */
    bool committing;                        /* a pool thread leads one */
    unsigned long rotate_seq; /* journal: make this segment next */
    /* Loop thread only. */
    unsigned long commits, committed; /* commits done, their jobs */
    double commit_seconds;            /* time the commits took */
};

/* The first failure of a delivery: what, where, errno. */
struct sf_error {
    int err;
    const char *op;
    char *path;
};

/* One maildir a delivery goes to. */
struct sf_target {
    char *base;     /* a maildir to make before dir (dir is its folder) */
    char *dir;      /* the maildir */
    char *envelope; /* JSON text, or NULL with "envelope": false */
    char *tmp, *new, *env;
    int fd; /* the unnamed message file until it is linked, or -1 */
    bool tmp_made, env_made, delivered;
};

struct sf_job {
    struct sf_job *next;   /* in the instance's queue, or in a commit */
    struct store_file *sf; /* read only, on pool threads */
    postern_ctx *ctx;
    postern_message_reader *reader;
    char *id;   /* transaction id, for the reply */
    char *name; /* the unique file name */
    bool quarantined;
    bool make_dirs;             /* the target maildirs may not exist yet */
    struct sf_segment *segment; /* its journal segment, or NULL */
    /* With the journal, the whole message when it is small enough
     * (SF_INLINE_MAX): written to the file and the journal from here. */
    char *copy;
    size_t copy_len;
    bool copy_whole;
    struct sf_target *targets;
    size_t n_targets;
    struct sf_error error;
};

/* store_file_fs.c */
int sf_fail(struct sf_error *e, const char *op, const char *path, int err);
char *sf_path(const char *a, const char *b, const char *c);
int sf_mkdir_parents(const char *path, struct sf_error *e);
int sf_make_maildir(const char *dir, bool envelope, bool sync,
                    struct sf_error *e);
int sf_write_all(int fd, const char *buf, size_t len);
int sf_sync_dir(const char *path, struct sf_error *e);
bool sf_unnamed_files_work(const char *maildir);

/* store_file_envelope.c: the envelope for the recipients rcpts[0..n) of
 * the transaction, one line of JSON; NULL when out of memory. */
char *sf_envelope_text(postern_ctx *ctx, const size_t *rcpts, size_t n,
                       const char *received_at);

/* store_file_job.c: NULL when out of memory. */
struct sf_job *sf_job_new(struct store_file *sf, postern_ctx *ctx);
void sf_job_free(struct sf_job *job);

/* A message up to this size is kept in memory while it is written, for
 * the journal; a larger one is read back from its file. */
#define SF_INLINE_MAX (1024 * 1024)

/* store_file_write.c, on a pool thread. sf_write_job() writes every file
 * of a delivery (and without fsync delivers it): 0, or -1 after undoing
 * it. */
int sf_write_job(struct sf_job *job);
int sf_deliver_all(struct sf_job *job);
void sf_undo(struct sf_job *job);

/* store_file_commit.c, on a pool thread: make the written deliveries
 * jobs (a list through next) durable and deliver them; each failure is
 * undone and kept in its job's error. */
void sf_commit(struct sf_job *jobs);

/* store_file_journal.c. Loop thread: open (at start; replays what a
 * crash left), assign a delivery to the active segment, give it back once
 * answered, close (at exit). Pool threads: append a written delivery,
 * sync the segments of a commit. */
int sf_journal_open(struct store_file *sf, char *err, size_t errlen);
struct sf_segment *sf_journal_assign(struct store_file *sf);
void sf_journal_release(struct store_file *sf, struct sf_segment *seg);
bool sf_journal_rotation_due(const struct store_file *sf);
int sf_journal_append(struct sf_job *job);
void sf_journal_sync(struct sf_job *jobs);
struct sf_segment *sf_journal_segment_new(const struct store_file *sf,
                                          unsigned long seq, int *err);
void sf_journal_install(struct store_file *sf, struct sf_segment *next);
void sf_journal_close(struct store_file *sf);

/* store_file_replay.c, at start: every segment no live process holds. */
void sf_replay_orphans(const struct store_file *sf);

/* store_file_cleanup.c, at start */
void sf_clean_leftovers(const struct store_file *sf);

#endif
