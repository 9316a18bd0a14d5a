/*
 * auth_file.c - check SMTP AUTH credentials against a passwd-style file.
 *
 * The file holds one "user:hash" per line (further ':' fields are
 * ignored, as in /etc/shadow), '#' comments and blank lines. Hashes are
 * crypt(3) strings: yescrypt, bcrypt ($2b$, $2y$), sha512-crypt and
 * sha256-crypt. The whole file is loaded into a hash table and re-read
 * when it changes (stat() every reload_interval seconds), on the thread
 * pool; the new table replaces the old one on the loop thread.
 *
 * Hashing is slow on purpose, so it never runs on the loop thread: the
 * handler copies the credentials and the stored hash into a job, the
 * core's thread pool runs crypt_r(), and the completion resumes the
 * session. An unknown user is hashed against a dummy hash made at
 * create() time, and gets the same reply as a wrong password, so neither
 * the answer nor (for yescrypt files) its timing tells which users exist.
 */
#include <crypt.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <postern/postern.h>

#define AF_REJECT_TEXT "Error: authentication credentials invalid"
#define AF_TEMPFAIL_TEXT "Temporary authentication failure"

/* --- hash syntax --------------------------------------------------------- */

/* The crypt(3) alphabet: "./0-9A-Za-z". */
static bool
af_is_b64(char c)
{
    return c == '.' || c == '/' || (c >= '0' && c <= '9') ||
           (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Length of the run of crypt(3) alphabet characters at s. */
static size_t
af_b64_span(const char *s)
{
    size_t n = 0;

    while (af_is_b64(s[n]))
        n++;
    return n;
}

/* "$y$" params "$" salt "$" 43 characters. */
static bool
af_valid_yescrypt(const char *h)
{
    const char *p = h + 3;
    size_t n = af_b64_span(p);

    if (n == 0 || p[n] != '$')
        return false;
    p += n + 1;
    n = af_b64_span(p);
    if (n == 0 || p[n] != '$')
        return false;
    p += n + 1;
    return af_b64_span(p) == 43 && p[43] == '\0';
}

/* "$2b$" or "$2y$", a two-digit cost 04..31, "$", 22 + 31 characters. */
static bool
af_valid_bcrypt(const char *h)
{
    if (h[4] < '0' || h[4] > '9' || h[5] < '0' || h[5] > '9' || h[6] != '$')
        return false;
    int cost = (h[4] - '0') * 10 + (h[5] - '0');
    if (cost < 4 || cost > 31)
        return false;
    return af_b64_span(h + 7) == 53 && h[60] == '\0';
}

/* "$6$" or "$5$", optional "rounds=N$", a salt of at most 16 characters,
 * "$", and digest_len characters. */
static bool
af_valid_shacrypt(const char *h, size_t digest_len)
{
    const char *p = h + 3;

    if (strncmp(p, "rounds=", 7) == 0) {
        p += 7;
        unsigned long rounds = 0;
        size_t digits = 0;
        while (p[digits] >= '0' && p[digits] <= '9' && digits < 10)
            rounds = rounds * 10 + (unsigned long)(p[digits++] - '0');
        if (digits == 0 || p[digits] != '$' || p[0] == '0' || rounds < 1000 ||
            rounds > 999999999)
            return false;
        p += digits + 1;
    }
    size_t salt = strcspn(p, "$");
    if (salt > 16 || p[salt] != '$')
        return false;
    for (size_t i = 0; i < salt; i++)
        if (p[i] == ':' || p[i] == '\n' || (unsigned char)p[i] <= ' ' ||
            p[i] == 0x7f)
            return false;
    p += salt + 1;
    return af_b64_span(p) == digest_len && p[digest_len] == '\0';
}

/* NULL when hash is a supported, well-formed crypt(3) hash; else why not. */
static const char *
af_hash_problem(const char *hash)
{
    bool ok;

    if (hash[0] == '\0')
        return "empty password hash";
    if (hash[0] == '!' || hash[0] == '*')
        return "locked or disabled account (no password hash)";
    if (strncmp(hash, "$y$", 3) == 0)
        ok = af_valid_yescrypt(hash);
    else if (strncmp(hash, "$2b$", 4) == 0 || strncmp(hash, "$2y$", 4) == 0)
        ok = af_valid_bcrypt(hash);
    else if (strncmp(hash, "$6$", 3) == 0)
        ok = af_valid_shacrypt(hash, 86);
    else if (strncmp(hash, "$5$", 3) == 0)
        ok = af_valid_shacrypt(hash, 43);
    else
        return "unsupported password hash (expected yescrypt $y$, bcrypt "
               "$2b$/$2y$, sha512-crypt $6$ or sha256-crypt $5$)";
    /* libcrypt's own opinion too: the method must be built in. */
    int check = crypt_checksalt(hash);
    if (!ok || (check != CRYPT_SALT_OK && check != CRYPT_SALT_METHOD_LEGACY))
        return "malformed password hash";
    return NULL;
}

/* --- the user table: open addressing, linear probing --------------------- */

struct af_entry {
    char *user; /* "user\0hash\0" in one allocation; NULL: empty slot */
    const char *hash;
    size_t user_len;
    uint64_t h;
};

struct af_table {
    struct af_entry *slots;
    size_t cap; /* 0 or a power of two, never more than half full */
    size_t used;
};

/* FNV-1a, 64 bit. */
static uint64_t
af_hash_key(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* The slot holding user, or the empty slot where it would go. */
static struct af_entry *
af_table_probe(const struct af_table *t, const char *user, size_t len,
               uint64_t h)
{
    size_t mask = t->cap - 1;

    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct af_entry *e = &t->slots[i];
        if (e->user == NULL || (e->h == h && e->user_len == len &&
                                memcmp(e->user, user, len) == 0))
            return e;
    }
}

static const char *
af_table_find(const struct af_table *t, const char *user)
{
    size_t len = strlen(user);

    if (t->cap == 0)
        return NULL;
    const struct af_entry *e =
        af_table_probe(t, user, len, af_hash_key(user, len));
    return e->user ? e->hash : NULL;
}

static int
af_table_grow(struct af_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 64;
    struct af_entry *slots = calloc(cap, sizeof *slots);

    if (slots == NULL)
        return -1;
    struct af_table bigger = {.slots = slots, .cap = cap, .used = t->used};
    for (size_t i = 0; i < t->cap; i++) {
        struct af_entry *old = &t->slots[i];
        if (old->user != NULL)
            *af_table_probe(&bigger, old->user, old->user_len, old->h) = *old;
    }
    free(t->slots);
    *t = bigger;
    return 0;
}

typedef enum af_add_status {
    AF_ADDED,
    AF_DUPLICATE,
    AF_ADD_NO_MEMORY
} af_add_status;

static af_add_status
af_table_add(struct af_table *t, const char *user, size_t user_len,
             const char *hash, size_t hash_len)
{
    if ((t->used + 1) * 2 > t->cap && af_table_grow(t) != 0)
        return AF_ADD_NO_MEMORY;
    uint64_t h = af_hash_key(user, user_len);
    struct af_entry *e = af_table_probe(t, user, user_len, h);
    if (e->user != NULL)
        return AF_DUPLICATE;
    char *copy = malloc(user_len + 1 + hash_len + 1);
    if (copy == NULL)
        return AF_ADD_NO_MEMORY;
    memcpy(copy, user, user_len);
    copy[user_len] = '\0';
    memcpy(copy + user_len + 1, hash, hash_len);
    copy[user_len + 1 + hash_len] = '\0';
    *e = (struct af_entry){.user = copy,
                           .hash = copy + user_len + 1,
                           .user_len = user_len,
                           .h = h};
    t->used++;
    return AF_ADDED;
}

static void
af_table_free(struct af_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->cap; i++)
        free(t->slots[i].user);
    free(t->slots);
    free(t);
}

/* --- loading the file ---------------------------------------------------- */

static bool
af_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
           c == '\f';
}

/*
 * Parse one line (surrounding whitespace already trimmed, not a comment)
 * into t. NULL on success, else a static description of the problem.
 */
static const char *
af_parse_line(struct af_table *t, char *line, size_t len)
{
    if (memchr(line, '\0', len) != NULL)
        return "NUL byte in line";
    line[len] = '\0';
    char *colon = strchr(line, ':');
    if (colon == NULL)
        return "expected user:hash";
    size_t user_len = (size_t)(colon - line);
    if (user_len == 0)
        return "empty user name";
    for (size_t i = 0; i < user_len; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            return "control character in user name";
    char *hash = colon + 1;
    size_t hash_len = strcspn(hash, ":"); /* later fields are ignored */
    hash[hash_len] = '\0';
    const char *problem = af_hash_problem(hash);
    if (problem != NULL)
        return problem;
    switch (af_table_add(t, line, user_len, hash, hash_len)) {
    case AF_ADDED:
        return NULL;
    case AF_DUPLICATE:
        return "duplicate user";
    default:
        return "out of memory";
    }
}

/* What identifies one version of the file. */
struct af_ident {
    bool valid;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

static struct af_ident
af_ident_of(const struct stat *st)
{
    return (struct af_ident){.valid = true,
                             .dev = st->st_dev,
                             .ino = st->st_ino,
                             .size = st->st_size,
                             .mtime = st->st_mtim};
}

static bool
af_ident_equal(const struct af_ident *a, const struct af_ident *b)
{
    return a->valid && b->valid && a->dev == b->dev && a->ino == b->ino &&
           a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
           a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/*
 * Read path into a new table. On success *ident describes the version
 * read (fstat of the open file, so a rewrite racing with the read shows
 * up as a change at the next check). On failure NULL, with the reason,
 * "path:line: problem" or "cannot read path: error", in err.
 */
static struct af_table *
af_load(const char *path, struct af_ident *ident, char *err, size_t err_size)
{
    struct af_table *t = calloc(1, sizeof *t);
    FILE *f = t ? fopen(path, "re") : NULL;
    struct stat st;

    if (f == NULL || fstat(fileno(f), &st) != 0) {
        snprintf(err, err_size, "cannot read %s: %s", path,
                 t ? strerror(errno) : "out of memory");
        if (f != NULL)
            fclose(f);
        af_table_free(t);
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0;
    const char *problem = NULL;
    bool failed = false;
    errno = 0;
    while (problem == NULL && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t start = 0, end = (size_t)n;
        while (start < end && af_is_space(line[start]))
            start++;
        while (end > start && af_is_space(line[end - 1]))
            end--;
        if (start == end || line[start] == '#')
            continue;
        problem = af_parse_line(t, line + start, end - start);
        errno = 0;
    }
    if (problem != NULL) {
        snprintf(err, err_size, "%s:%d: %s", path, lineno, problem);
        failed = true;
    } else if (ferror(f)) {
        snprintf(err, err_size, "cannot read %s: %s", path,
                 strerror(errno ? errno : EIO));
        failed = true;
    }
    free(line);
    fclose(f);
    if (failed) {
        af_table_free(t);
        return NULL;
    }
    *ident = af_ident_of(&st);
    return t;
}

/* --- the instance -------------------------------------------------------- */

struct af_reload;

/*
 * file, reload_interval and dummy_hash are set by create() and never
 * change after: the pool thread of a reload reads file. The other fields
 * belong to the loop thread alone, so the lookup path takes no lock.
 */
struct auth_file {
    char *file;
    double reload_interval;
    char *dummy_hash; /* what an unknown user is hashed against */

    struct af_table *table;
    struct af_ident loaded;   /* the file version in table */
    struct af_ident failed;   /* a version that did not load: no retry */
    bool stat_failed;         /* warned already */
    double last_check;        /* postern_now() of the last stat() */
    postern_timer *timer;     /* the next periodic check, or NULL */
    struct af_reload *reload; /* the check on the pool, or NULL */
    bool destroyed;           /* destroy() ran while reload was on the pool */
};

/*
 * Reloading. Reading and parsing the file (and even stat(), on a slow or
 * network disk) would stall every session if done on the loop thread, so a
 * check runs on the core's thread pool: af_reload_work() stats the file
 * and, if it changed, loads a whole new table, reading only af->file and
 * the job's own fields. Then af_reload_done(), on the loop thread, swaps
 * the new table in (or keeps the old one and warns). AUTHs meanwhile are
 * judged on the table in use; at most one check is on the pool at a time.
 */
typedef enum af_check {
    AF_CHECK_UNCHANGED,   /* same version as loaded, or as failed */
    AF_CHECK_STAT_FAILED, /* errno in err */
    AF_CHECK_LOADED,      /* table and ident are the new version */
    AF_CHECK_LOAD_FAILED  /* error says why; stat_ident is the version */
} af_check;

struct af_reload {
    struct auth_file *af; /* kept alive until af_reload_done() */
    /* in: copies, as the loop thread may change af's own */
    struct af_ident loaded, failed;
    /* out */
    af_check outcome;
    int err;
    struct af_ident stat_ident, ident;
    struct af_table *table;
    char error[1024];
};

static void
af_free(struct auth_file *af)
{
    if (af->timer != NULL)
        postern_timer_cancel(af->timer);
    free(af->file);
    af_table_free(af->table);
    free(af->dummy_hash);
    free(af);
}

/* On a pool thread: no postern_ calls, nothing of af that can change. */
static void
af_reload_work(void *arg)
{
    struct af_reload *r = arg;
    struct stat st;

    if (stat(r->af->file, &st) != 0) {
        r->outcome = AF_CHECK_STAT_FAILED;
        r->err = errno;
        return;
    }
    r->stat_ident = af_ident_of(&st);
    if (af_ident_equal(&r->stat_ident, &r->loaded) ||
        af_ident_equal(&r->stat_ident, &r->failed)) {
        r->outcome = AF_CHECK_UNCHANGED;
        return;
    }
    r->table = af_load(r->af->file, &r->ident, r->error, sizeof r->error);
    r->outcome = r->table != NULL ? AF_CHECK_LOADED : AF_CHECK_LOAD_FAILED;
}

/* Back on the loop thread: apply the outcome, or finish a destroy(). */
static void
af_reload_done(void *arg)
{
    struct af_reload *r = arg;
    struct auth_file *af = r->af;

    af->reload = NULL;
    if (af->destroyed) {
        af_table_free(r->table);
        free(r);
        af_free(af);
        return;
    }
    switch (r->outcome) {
    case AF_CHECK_STAT_FAILED:
        if (!af->stat_failed)
            postern_log(NULL, POSTERN_LOG_WARNING,
                        "cannot stat the file, keeping the current table: "
                        "file=%s error=%s users=%zu",
                        postern_log_value(af->file),
                        postern_log_value(strerror(r->err)), af->table->used);
        af->stat_failed = true;
        break;
    case AF_CHECK_UNCHANGED:
        af->stat_failed = false;
        break;
    case AF_CHECK_LOAD_FAILED:
        af->stat_failed = false;
        postern_log(NULL, POSTERN_LOG_WARNING,
                    "reload failed, keeping the current table: error=%s "
                    "users=%zu",
                    postern_log_value(r->error), af->table->used);
        af->failed = r->stat_ident; /* warn once per broken version */
        break;
    case AF_CHECK_LOADED:
        af->stat_failed = false;
        af_table_free(af->table);
        af->table = r->table;
        af->loaded = r->ident;
        af->failed = (struct af_ident){0};
        postern_log(NULL, POSTERN_LOG_INFO, "reloaded file=%s users=%zu",
                    postern_log_value(af->file), af->table->used);
        break;
    }
    free(r);
}

/* Start a check on the pool if one is due (the last one started at least
 * reload_interval ago) and none is in progress. Never waits for it. */
static void
af_maybe_reload(struct auth_file *af)
{
    double now = postern_now();

    if (af->reload != NULL ||
        (now >= af->last_check && now - af->last_check < af->reload_interval))
        return;
    struct af_reload *r = calloc(1, sizeof *r);
    if (r == NULL)
        return; /* the next check tries again */
    af->last_check = now;
    r->af = af;
    r->loaded = af->loaded;
    r->failed = af->failed;
    /* Set before submitting: a pool may complete the job at once. */
    af->reload = r;
    if (postern_pool_submit(af_reload_work, af_reload_done, r) != 0) {
        af->reload = NULL;
        free(r);
    }
}

/* The periodic check, so that a change is seen before the next AUTH. */
static void
af_timer_fired(void *arg)
{
    struct auth_file *af = arg;

    af->timer = NULL; /* the core freed it */
    af_maybe_reload(af);
    af->timer = postern_timer_start(af->reload_interval, af_timer_fired, af);
}

/* Called once, on the loop thread. A check still on the pool keeps the
 * instance: its completion frees it. */
static void
af_destroy(void *instance)
{
    struct auth_file *af = instance;

    if (af == NULL)
        return;
    if (af->reload != NULL) {
        if (af->timer != NULL)
            postern_timer_cancel(af->timer);
        af->timer = NULL;
        af->destroyed = true;
        return;
    }
    af_free(af);
}

/* Read the config into af. 0, or -1 after postern_init_error(). */
static int
af_config(postern_module_init *init, struct auth_file *af)
{
    const json_t *config = postern_init_config(init);
    const char *key;
    json_t *value;

    if (!json_is_object(config)) {
        postern_init_error(init, "", "expected an object");
        return -1;
    }
    af->reload_interval = 1.0;
    json_object_foreach((json_t *)config, key, value)
    {
        if (strcmp(key, "file") == 0) {
            if (!json_is_string(value) || json_string_length(value) == 0 ||
                strlen(json_string_value(value)) != json_string_length(value)) {
                postern_init_error(init, "file",
                                   "expected a non-empty string (a path)");
                return -1;
            }
            if ((af->file = strdup(json_string_value(value))) == NULL) {
                postern_init_error(init, "file", "out of memory");
                return -1;
            }
        } else if (strcmp(key, "reload_interval") == 0) {
            if (!json_is_number(value) || json_number_value(value) < 0) {
                postern_init_error(init, "reload_interval",
                                   "expected a number of seconds >= 0");
                return -1;
            }
            af->reload_interval = json_number_value(value);
        } else {
            postern_init_error(init, key,
                               "unknown key (expected file or "
                               "reload_interval)");
            return -1;
        }
    }
    if (af->file == NULL) {
        postern_init_error(init, "file",
                           "required: the path of the password file");
        return -1;
    }
    return 0;
}

/* A yescrypt hash of a random password, at the default cost. */
static char *
af_make_dummy(void)
{
    unsigned char random[24];
    char password[2 * sizeof random + 1];
    struct crypt_data *data = calloc(1, sizeof *data);
    char *dummy = NULL;

    if (data == NULL ||
        getrandom(random, sizeof random, 0) != (ssize_t)sizeof random) {
        free(data);
        return NULL;
    }
    for (size_t i = 0; i < sizeof random; i++)
        snprintf(password + 2 * i, 3, "%02x", random[i]);
    const char *salt = crypt_gensalt("$y$", 0, NULL, 0);
    const char *hash = salt ? crypt_r(password, salt, data) : NULL;
    if (hash != NULL && hash[0] == '$')
        dummy = strdup(hash);
    explicit_bzero(random, sizeof random);
    explicit_bzero(password, sizeof password);
    explicit_bzero(data, sizeof *data);
    free(data);
    return dummy;
}

static int
af_create(postern_module_init *init, void **instance)
{
    struct auth_file *af = calloc(1, sizeof *af);

    if (af == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    if (af_config(init, af) != 0) {
        af_destroy(af);
        return -1;
    }
    char err[1024] = "";
    af->table = af_load(af->file, &af->loaded, err, sizeof err);
    if (af->table == NULL) {
        postern_init_error(init, "file", "%s", err);
        af_destroy(af);
        return -1;
    }
    if ((af->dummy_hash = af_make_dummy()) == NULL) {
        postern_init_error(init, "",
                           "cannot make a yescrypt hash (libcrypt): %s",
                           strerror(errno));
        af_destroy(af);
        return -1;
    }
    /* last_check stays 0: the first AUTH or timer tick checks the file.
     * With reload_interval 0 every AUTH does, and there is no timer.
     * Under --check-config nothing is started. */
    if (af->reload_interval > 0 && !postern_init_check_only(init))
        af->timer =
            postern_timer_start(af->reload_interval, af_timer_fired, af);
    *instance = af;
    return 0;
}

/* --- the auth hook ------------------------------------------------------- */

typedef enum af_outcome { AF_MATCH, AF_MISMATCH, AF_ERROR } af_outcome;

/* One password check, handed to a pool thread and back. Everything the
 * pool thread reads is copied here, so a reload or the client going away
 * cannot pull memory from under it. */
struct af_job {
    postern_ctx *ctx;
    bool known;         /* the user is in the table */
    af_outcome outcome; /* set by af_work */
    int error;          /* errno of a failed crypt_r() */
    size_t size;        /* of this allocation, for the final wipe */
    char *user;         /* the strings below live in buf */
    char *password;
    char *hash; /* the stored hash, or the dummy */
    char buf[];
};

/* Unit tests define this to look at a job's memory after the wipe and
 * before free(); a null address otherwise. Hidden, so never resolved
 * from outside the module. */
extern void auth_file_test_job_wiped(const void *job, size_t size)
    __attribute__((weak, visibility("hidden")));

static void
af_job_free(struct af_job *job)
{
    size_t size = job->size;

    explicit_bzero(job, size);
    if (auth_file_test_job_wiped != NULL)
        auth_file_test_job_wiped(job, size);
    free(job);
}

static struct af_job *
af_job_new(postern_ctx *ctx, const char *user, const char *password,
           const char *hash, bool known)
{
    size_t user_len = strlen(user), password_len = strlen(password);
    size_t hash_len = strlen(hash);
    size_t size =
        sizeof(struct af_job) + user_len + password_len + hash_len + 3;
    struct af_job *job = calloc(1, size);

    if (job == NULL)
        return NULL;
    job->ctx = ctx;
    job->known = known;
    job->size = size;
    job->user = job->buf;
    job->password = job->user + user_len + 1;
    job->hash = job->password + password_len + 1;
    memcpy(job->user, user, user_len + 1);
    memcpy(job->password, password, password_len + 1);
    memcpy(job->hash, hash, hash_len + 1);
    return job;
}

/* Does computed equal expected? Every byte of expected is looked at
 * whatever the answer, so the time taken tells nothing of where they
 * differ. */
static bool
af_equal(const char *computed, const char *expected)
{
    size_t computed_len = strlen(computed), expected_len = strlen(expected);
    unsigned diff = computed_len != expected_len;

    for (size_t i = 0; i < expected_len; i++) {
        unsigned char c = i < computed_len ? (unsigned char)computed[i] : 0;
        diff |= c ^ (unsigned char)expected[i];
    }
    return diff == 0;
}

/* On a pool thread: no postern_ calls here. */
static void
af_work(void *arg)
{
    struct af_job *job = arg;

    /* libcrypt refuses longer passphrases; no stored hash can match one. */
    if (strlen(job->password) >= CRYPT_MAX_PASSPHRASE_SIZE) {
        job->outcome = AF_MISMATCH;
        return;
    }
    /* struct crypt_data is about 32 KiB: too big for a thread's stack. */
    struct crypt_data *data = calloc(1, sizeof *data);
    if (data == NULL) {
        job->outcome = AF_ERROR;
        job->error = ENOMEM;
        return;
    }
    errno = 0;
    const char *computed = crypt_r(job->password, job->hash, data);
    if (computed == NULL || computed[0] == '*') {
        job->outcome = AF_ERROR;
        job->error = errno ? errno : EINVAL;
    } else {
        bool equal = af_equal(computed, job->hash);
        job->outcome = equal && job->known ? AF_MATCH : AF_MISMATCH;
    }
    explicit_bzero(data, sizeof *data); /* it holds the passphrase */
    free(data);
}

/* Back on the loop thread. */
static void
af_done(void *arg)
{
    struct af_job *job = arg;
    postern_ctx *ctx = job->ctx;
    const char *user = postern_log_value(job->user);
    postern_result result;

    bool orphaned = postern_ctx_orphaned(ctx);
    switch (job->outcome) {
    case AF_MATCH:
        postern_log(ctx, POSTERN_LOG_INFO, "user=%s result=accepted", user);
        result = POSTERN_ACCEPT;
        break;
    case AF_MISMATCH:
        postern_log(ctx, POSTERN_LOG_INFO, "user=%s result=rejected reason=%s",
                    user, job->known ? "bad_password" : "unknown_user");
        if (!orphaned)
            postern_reply(ctx, 535, "5.7.8", AF_REJECT_TEXT);
        result = POSTERN_REJECT;
        break;
    case AF_ERROR:
    default:
        postern_log(ctx, POSTERN_LOG_WARNING,
                    "user=%s result=tempfail reason=crypt error=%s", user,
                    postern_log_value(strerror(job->error)));
        if (!orphaned)
            postern_reply(ctx, 454, "4.7.0", AF_TEMPFAIL_TEXT);
        result = POSTERN_TEMPFAIL;
        break;
    }
    af_job_free(job); /* wipes the password copy */
    /* Also when orphaned: the core frees the context in postern_resume(). */
    postern_resume(ctx, result);
}

static postern_result
af_auth(postern_ctx *ctx, void *instance)
{
    struct auth_file *af = instance;
    const char *user = postern_auth_login(ctx);
    const char *password = postern_auth_password(ctx);

    const char *authzid = postern_auth_authzid(ctx);

    if (user == NULL || password == NULL)
        return POSTERN_CONTINUE; /* no credentials to judge */
    /* RFC 4616: acting as someone else needs a rule allowing it, and this
     * module has none. Decided on what the client sent alone, so it tells
     * nothing about the file. */
    if (authzid != NULL && authzid[0] != '\0' && strcmp(authzid, user) != 0) {
        postern_log(ctx, POSTERN_LOG_INFO,
                    "user=%s result=rejected reason=authzid_not_allowed",
                    postern_log_value(user));
        postern_reply(ctx, 535, "5.7.8", AF_REJECT_TEXT);
        return POSTERN_REJECT;
    }

    /* A due check starts on the pool; this AUTH uses the table in use. */
    af_maybe_reload(af);
    const char *stored = af_table_find(af->table, user);
    struct af_job *job = af_job_new(
        ctx, user, password, stored ? stored : af->dummy_hash, stored != NULL);
    if (job == NULL) {
        postern_log(ctx, POSTERN_LOG_ERROR, "out of memory");
        postern_reply(ctx, 454, "4.7.0", AF_TEMPFAIL_TEXT);
        return POSTERN_TEMPFAIL;
    }
    if (postern_pool_submit(af_work, af_done, job) != 0) {
        af_job_free(job);
        postern_log(ctx, POSTERN_LOG_WARNING,
                    "result=tempfail reason=\"thread pool refused the job\"");
        postern_reply(ctx, 454, "4.7.0", AF_TEMPFAIL_TEXT);
        return POSTERN_TEMPFAIL;
    }
    /* job now belongs to the pool (af_done may even have run already). */
    return POSTERN_PENDING;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "auth_file",
    .description = "check AUTH credentials against a file of crypt(3) "
                   "password hashes",
    .create = af_create,
    .destroy = af_destroy,
    .handlers = {[POSTERN_HOOK_AUTH] = af_auth},
};
