/*
 * rcpt_list.c - decide RCPT TO from a list of known recipients.
 *
 * The list holds exact addresses ("user@example.com") and domain
 * catch-alls ("@example.com"), given inline in the config and/or in a file
 * that is re-read when it changes. For each recipient:
 *
 *   listed address or listed catch-all    -> ACCEPT (or CONTINUE, on_match)
 *   domain named by some entry, user not  -> REJECT 550 5.1.1 User unknown
 *   domain not named by any entry         -> CONTINUE (relay policy decides)
 *
 * Every entry is stored in normalised form in one hash set, under up to
 * three keys: "local@domain" (an exact address), "@domain" (a catch-all)
 * and "domain" (the domain is covered). A domain never contains '@', so
 * the three kinds cannot collide, and one lookup per kind answers a
 * recipient in O(1) whatever the size of the list. The file is re-read on
 * the thread pool and the new set replaces the old one on the loop thread
 * (see "Reloading" below).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <postern/postern.h>

/* RFC 5321 4.5.3.1: 64 octets of local part, 255 of domain. */
#define RL_MAX_LOCAL 64
#define RL_MAX_DOMAIN 255

/* --- a set of byte strings: open addressing, linear probing ------------ */

struct rl_slot {
    char *key; /* NULL: empty slot */
    size_t len;
    uint64_t hash;
};

struct rl_set {
    struct rl_slot *slots;
    size_t cap; /* 0 or a power of two, never more than half full */
    size_t used;
};

/* FNV-1a, 64 bit: simple, and good enough on short text keys. */
static uint64_t
rl_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* The slot holding key, or the empty slot where it would go. The set is
 * at most half full, so the probe always ends. */
static struct rl_slot *
rl_set_probe(const struct rl_set *set, const char *key, size_t len,
             uint64_t hash)
{
    size_t mask = set->cap - 1;

    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        struct rl_slot *slot = &set->slots[i];
        if (slot->key == NULL)
            return slot;
        if (slot->hash == hash && slot->len == len &&
            memcmp(slot->key, key, len) == 0)
            return slot;
    }
}

static bool
rl_set_contains(const struct rl_set *set, const char *key, size_t len)
{
    if (set->cap == 0)
        return false;
    return rl_set_probe(set, key, len, rl_hash(key, len))->key != NULL;
}

static int
rl_set_grow(struct rl_set *set)
{
    size_t cap = set->cap ? set->cap * 2 : 64;
    struct rl_slot *slots = calloc(cap, sizeof *slots);

    if (slots == NULL)
        return -1;
    struct rl_set bigger = {.slots = slots, .cap = cap, .used = set->used};
    for (size_t i = 0; i < set->cap; i++) {
        struct rl_slot *old = &set->slots[i];
        if (old->key != NULL)
            *rl_set_probe(&bigger, old->key, old->len, old->hash) = *old;
    }
    free(set->slots);
    *set = bigger;
    return 0;
}

/* Add a copy of key (no-op if present). 0, or -1 when out of memory. */
static int
rl_set_add(struct rl_set *set, const char *key, size_t len)
{
    if ((set->used + 1) * 2 > set->cap && rl_set_grow(set) != 0)
        return -1;
    uint64_t hash = rl_hash(key, len);
    struct rl_slot *slot = rl_set_probe(set, key, len, hash);
    if (slot->key != NULL)
        return 0;
    char *copy = malloc(len ? len : 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, key, len);
    *slot = (struct rl_slot){.key = copy, .len = len, .hash = hash};
    set->used++;
    return 0;
}

static void
rl_set_clear(struct rl_set *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slots[i].key);
    free(set->slots);
    *set = (struct rl_set){0};
}

/* --- addresses ---------------------------------------------------------- */

static char
rl_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool
rl_is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
}

/* A domain name (labels of letters, digits, '-', '_' or UTF-8 bytes) or an
 * address literal "[...]"; the trailing dot is already gone. */
static bool
rl_valid_domain(const char *d, size_t len)
{
    if (len == 0 || len > RL_MAX_DOMAIN)
        return false;
    if (d[0] == '[') {
        if (len < 3 || d[len - 1] != ']')
            return false;
        for (size_t i = 1; i < len - 1; i++) {
            unsigned char c = (unsigned char)d[i];
            if (c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '\\')
                return false;
        }
        return true;
    }
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (!rl_is_alnum(c) && c != '-' && c != '_' && c < 0x80)
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0;
}

/* A dot-atom or a quoted string (RFC 5321 4.1.2), UTF-8 allowed. */
static bool
rl_valid_local(const char *l, size_t len)
{
    if (len == 0 || len > RL_MAX_LOCAL)
        return false;
    if (l[0] == '"') {
        if (len < 2 || l[len - 1] != '"')
            return false;
        for (size_t i = 1; i < len - 1; i++) {
            unsigned char c = (unsigned char)l[i];
            if (c == '\\') {
                if (++i >= len - 1)
                    return false;
                continue;
            }
            if (c == '"' || c < ' ' || c == 0x7f)
                return false;
        }
        return true;
    }
    bool after_dot = true; /* no leading dot, no ".." */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)l[i];
        if (c == '.') {
            if (after_dot)
                return false;
            after_dot = true;
            continue;
        }
        after_dot = false;
        if (!rl_is_alnum(c) && c < 0x80 && !strchr("!#$%&'*+-/=?^_`{|}~", c))
            return false;
    }
    return !after_dot;
}

/*
 * Split "local@domain" at its last '@' (a quoted local part may hold one;
 * a domain never does) and drop one trailing dot from the domain. 0, or
 * -1 when there is no '@'.
 */
static int
rl_split(const char *addr, size_t len, size_t *local_len, const char **domain,
         size_t *domain_len)
{
    const char *at = memrchr(addr, '@', len);

    if (at == NULL)
        return -1;
    *local_len = (size_t)(at - addr);
    *domain = at + 1;
    *domain_len = len - *local_len - 1;
    if (*domain_len > 0 && (*domain)[*domain_len - 1] == '.')
        (*domain_len)--;
    return 0;
}

/*
 * Write the normalised "local@domain" into out (room for local_len + 1 +
 * domain_len bytes): the domain lowercased, the local part lowercased
 * unless case_sensitive or quoted (a quoted local part compares as given).
 * Then out is the exact key, out + local_len the catch-all key and
 * out + local_len + 1 the domain key.
 */
static void
rl_normalise(const char *local, size_t local_len, const char *domain,
             size_t domain_len, bool case_sensitive, char *out)
{
    bool fold = !case_sensitive && !(local_len > 0 && local[0] == '"');

    for (size_t i = 0; i < local_len; i++)
        out[i] = fold ? rl_lower(local[i]) : local[i];
    out[local_len] = '@';
    for (size_t i = 0; i < domain_len; i++)
        out[local_len + 1 + i] = rl_lower(domain[i]);
}

/* --- the list ------------------------------------------------------------ */

typedef enum rl_status {
    RL_OK,
    RL_BAD_ENTRY, /* not "user@domain" nor "@domain" */
    RL_NO_MEMORY,
    RL_IO_ERROR /* errno in rl_error.err */
} rl_status;

struct rl_error {
    rl_status status;
    int line; /* RL_BAD_ENTRY in the file; 0 for inline entries */
    int err;  /* RL_IO_ERROR */
};

struct rl_list {
    struct rl_set set;
    size_t entries;
};

static void
rl_list_free(struct rl_list *list)
{
    if (list == NULL)
        return;
    rl_set_clear(&list->set);
    free(list);
}

/* Split entry (len bytes, whitespace already trimmed) as rl_split does;
 * true when it is a well-formed "user@domain" or "@domain". */
static bool
rl_entry_split(const char *entry, size_t len, size_t *local_len,
               const char **domain, size_t *domain_len)
{
    *local_len = *domain_len = 0;
    *domain = entry;
    if (rl_split(entry, len, local_len, domain, domain_len) != 0)
        return false;
    if (*local_len > 0 && !rl_valid_local(entry, *local_len))
        return false;
    return rl_valid_domain(*domain, *domain_len);
}

static bool
rl_entry_valid(const char *entry, size_t len)
{
    size_t local_len, domain_len;
    const char *domain;

    return rl_entry_split(entry, len, &local_len, &domain, &domain_len);
}

static rl_status
rl_list_add(struct rl_list *list, const char *entry, size_t len,
            bool case_sensitive)
{
    size_t local_len, domain_len;
    const char *domain;

    if (!rl_entry_split(entry, len, &local_len, &domain, &domain_len))
        return RL_BAD_ENTRY;

    /* Bounded by the limits rl_entry_split enforced. */
    char key[RL_MAX_LOCAL + 1 + RL_MAX_DOMAIN];
    rl_normalise(entry, local_len, domain, domain_len, case_sensitive, key);
    if (local_len == 0) { /* "@domain": a catch-all */
        if (rl_set_add(&list->set, key, 1 + domain_len) != 0)
            return RL_NO_MEMORY;
    } else if (rl_set_add(&list->set, key, local_len + 1 + domain_len) != 0 ||
               rl_set_add(&list->set, key + local_len + 1, domain_len) != 0) {
        return RL_NO_MEMORY;
    }
    list->entries++;
    return RL_OK;
}

static bool
rl_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
           c == '\f';
}

/*
 * Add every entry of the file: one per line, surrounding whitespace
 * trimmed, blank lines and lines starting with '#' skipped. On success,
 * *st describes the file that was read (fstat, so a rewrite racing with
 * the read shows up as a change at the next check).
 */
static rl_status
rl_list_load_file(struct rl_list *list, const char *path, bool case_sensitive,
                  struct stat *st, struct rl_error *err)
{
    FILE *f = fopen(path, "re");

    if (f == NULL || fstat(fileno(f), st) != 0) {
        err->err = errno;
        if (f != NULL)
            fclose(f);
        return err->status = RL_IO_ERROR;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0;
    rl_status status = RL_OK;
    errno = 0;
    while (status == RL_OK && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t start = 0, end = (size_t)n;
        while (start < end && rl_is_space(line[start]))
            start++;
        while (end > start && rl_is_space(line[end - 1]))
            end--;
        if (start == end || line[start] == '#')
            continue;
        if (memchr(line + start, '\0', end - start) != NULL)
            status = RL_BAD_ENTRY;
        else
            status =
                rl_list_add(list, line + start, end - start, case_sensitive);
        if (status == RL_BAD_ENTRY)
            err->line = lineno;
        errno = 0;
    }
    if (status == RL_OK && ferror(f)) {
        err->err = errno ? errno : EIO;
        status = RL_IO_ERROR;
    }
    free(line);
    fclose(f);
    return err->status = status;
}

/* --- the instance --------------------------------------------------------- */

/* What identifies one version of the file. */
struct rl_ident {
    bool valid;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

/* How often, at most, the file is stat()ed (loop time). */
#define RL_CHECK_INTERVAL 1.0

struct rl_reload;

/*
 * The fields up to file are set by create() and never change after: the
 * pool thread of a reload reads them. The others belong to the loop thread
 * alone, so the lookup path takes no lock.
 */
struct rcpt_list {
    bool case_sensitive_local;
    bool continue_on_match;
    char **inline_entries; /* "addresses", validated at create */
    size_t n_inline;
    char *file; /* NULL when not configured */

    struct rl_list *list;
    struct rl_ident loaded;   /* the file version in list */
    struct rl_ident failed;   /* a version that did not load: no retry */
    bool stat_failed;         /* warned already */
    double last_check;        /* postern_now() of the last stat() */
    postern_timer *timer;     /* the next periodic check, or NULL */
    struct rl_reload *reload; /* the check on the pool, or NULL */
    bool destroyed;           /* destroy() ran while reload was on the pool */
    /* postern_rcpt_list_unknown_total (postern/metrics.h) */
    postern_counter *unknown;
};

static struct rl_ident
rl_ident_of(const struct stat *st)
{
    return (struct rl_ident){.valid = true,
                             .dev = st->st_dev,
                             .ino = st->st_ino,
                             .size = st->st_size,
                             .mtime = st->st_mtim};
}

static bool
rl_ident_equal(const struct rl_ident *a, const struct rl_ident *b)
{
    return a->valid && b->valid && a->dev == b->dev && a->ino == b->ino &&
           a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
           a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Describe a failed build in buf, the way operators read it. */
static void
rl_error_text(const struct rcpt_list *rl, const struct rl_error *err, char *buf,
              size_t size)
{
    switch (err->status) {
    case RL_BAD_ENTRY:
        snprintf(buf, size, "%s:%d: expected user@domain or @domain", rl->file,
                 err->line);
        break;
    case RL_IO_ERROR:
        snprintf(buf, size, "cannot read %s: %s", rl->file, strerror(err->err));
        break;
    default:
        snprintf(buf, size, "out of memory");
        break;
    }
}

/* Build a list from the inline entries and the file. */
static struct rl_list *
rl_build(const struct rcpt_list *rl, struct rl_ident *ident,
         struct rl_error *err)
{
    struct rl_list *list = calloc(1, sizeof *list);

    *err = (struct rl_error){.status = RL_OK};
    *ident = (struct rl_ident){0};
    if (list == NULL) {
        err->status = RL_NO_MEMORY;
        return NULL;
    }
    for (size_t i = 0; i < rl->n_inline && err->status == RL_OK; i++) {
        const char *entry = rl->inline_entries[i];
        err->status =
            rl_list_add(list, entry, strlen(entry), rl->case_sensitive_local);
    }
    if (err->status == RL_OK && rl->file != NULL) {
        struct stat st;
        if (rl_list_load_file(list, rl->file, rl->case_sensitive_local, &st,
                              err) == RL_OK)
            *ident = rl_ident_of(&st);
    }
    if (err->status != RL_OK) {
        rl_list_free(list);
        return NULL;
    }
    return list;
}

/*
 * Reloading. Reading and parsing the file (and even stat(), on a slow or
 * network disk) would stall every session if done on the loop thread, so a
 * check runs on the core's thread pool: rl_reload_work() stats the file
 * and, if it changed, builds a whole new list from the inline entries and
 * the file, reading only what create() set and the job's own fields. Then
 * rl_reload_done(), on the loop thread, swaps the new list in (or keeps
 * the old one and warns). Lookups meanwhile answer from the list in use;
 * at most one check is on the pool at a time.
 */
typedef enum rl_check {
    RL_CHECK_UNCHANGED,   /* same version as loaded, or as failed */
    RL_CHECK_STAT_FAILED, /* errno in err */
    RL_CHECK_LOADED,      /* list and ident are the new version */
    RL_CHECK_LOAD_FAILED  /* error says why; stat_ident is the version */
} rl_check;

struct rl_reload {
    struct rcpt_list *rl; /* kept alive until rl_reload_done() */
    /* in: copies, as the loop thread may change rl's own */
    struct rl_ident loaded, failed;
    /* out */
    rl_check outcome;
    int err;
    struct rl_ident stat_ident, ident;
    struct rl_error error;
    struct rl_list *list;
};

static void
rl_free(struct rcpt_list *rl)
{
    if (rl->timer != NULL)
        postern_timer_cancel(rl->timer);
    for (size_t i = 0; i < rl->n_inline; i++)
        free(rl->inline_entries[i]);
    free(rl->inline_entries);
    free(rl->file);
    rl_list_free(rl->list);
    free(rl);
}

/* On a pool thread: no postern_ calls, nothing of rl that can change. */
static void
rl_reload_work(void *arg)
{
    struct rl_reload *r = arg;
    struct stat st;

    if (stat(r->rl->file, &st) != 0) {
        r->outcome = RL_CHECK_STAT_FAILED;
        r->err = errno;
        return;
    }
    r->stat_ident = rl_ident_of(&st);
    if (rl_ident_equal(&r->stat_ident, &r->loaded) ||
        rl_ident_equal(&r->stat_ident, &r->failed)) {
        r->outcome = RL_CHECK_UNCHANGED;
        return;
    }
    r->list = rl_build(r->rl, &r->ident, &r->error);
    r->outcome = r->list != NULL ? RL_CHECK_LOADED : RL_CHECK_LOAD_FAILED;
}

/* Back on the loop thread: apply the outcome, or finish a destroy(). */
static void
rl_reload_done(void *arg)
{
    struct rl_reload *r = arg;
    struct rcpt_list *rl = r->rl;

    rl->reload = NULL;
    if (rl->destroyed) {
        rl_list_free(r->list);
        free(r);
        rl_free(rl);
        return;
    }
    switch (r->outcome) {
    case RL_CHECK_STAT_FAILED:
        if (!rl->stat_failed)
            postern_log(NULL, POSTERN_LOG_WARNING,
                        "cannot stat the file, keeping the current list: "
                        "file=%s error=%s entries=%zu",
                        postern_log_value(rl->file),
                        postern_log_value(strerror(r->err)), rl->list->entries);
        rl->stat_failed = true;
        break;
    case RL_CHECK_UNCHANGED:
        rl->stat_failed = false;
        break;
    case RL_CHECK_LOAD_FAILED: {
        char text[512];
        rl->stat_failed = false;
        rl_error_text(rl, &r->error, text, sizeof text);
        postern_log(NULL, POSTERN_LOG_WARNING,
                    "reload failed, keeping the current list: error=%s "
                    "entries=%zu",
                    postern_log_value(text), rl->list->entries);
        /* Warn once per broken version, not once per second. */
        rl->failed = r->stat_ident;
        break;
    }
    case RL_CHECK_LOADED:
        rl->stat_failed = false;
        rl_list_free(rl->list);
        rl->list = r->list;
        rl->loaded = r->ident;
        rl->failed = (struct rl_ident){0};
        postern_log(NULL, POSTERN_LOG_INFO, "reloaded file=%s entries=%zu",
                    postern_log_value(rl->file), rl->list->entries);
        break;
    }
    free(r);
}

/* Start a check on the pool if one is due (at most one stat() per second)
 * and none is in progress. Never waits for it. */
static void
rl_maybe_reload(struct rcpt_list *rl)
{
    double now = postern_now();

    if (rl->file == NULL || rl->reload != NULL ||
        (now >= rl->last_check && now - rl->last_check < RL_CHECK_INTERVAL))
        return;
    struct rl_reload *r = calloc(1, sizeof *r);
    if (r == NULL)
        return; /* the next check tries again */
    rl->last_check = now;
    *r = (struct rl_reload){
        .rl = rl, .loaded = rl->loaded, .failed = rl->failed};
    /* Set before submitting: a pool may complete the job at once. */
    rl->reload = r;
    if (postern_pool_submit(rl_reload_work, rl_reload_done, r) != 0) {
        rl->reload = NULL;
        free(r);
    }
}

/* The periodic check, so that a change is seen without waiting for a
 * recipient to trigger it. */
static void
rl_timer_fired(void *arg)
{
    struct rcpt_list *rl = arg;

    rl->timer = NULL; /* the core freed it */
    rl_maybe_reload(rl);
    rl->timer = postern_timer_start(RL_CHECK_INTERVAL, rl_timer_fired, rl);
}

/* Called once, on the loop thread. A check still on the pool keeps the
 * instance: its completion frees it. */
static void
rl_destroy(void *instance)
{
    struct rcpt_list *rl = instance;

    if (rl == NULL)
        return;
    if (rl->reload != NULL) {
        if (rl->timer != NULL)
            postern_timer_cancel(rl->timer);
        rl->timer = NULL;
        rl->destroyed = true;
        return;
    }
    rl_free(rl);
}

/* Copy the "addresses" array, checking each entry. 0 or -1. */
static int
rl_config_addresses(postern_module_init *init, struct rcpt_list *rl,
                    const json_t *value)
{
    if (!json_is_array(value)) {
        postern_init_error(init, "addresses", "expected an array of strings");
        return -1;
    }
    size_t n = json_array_size(value);
    rl->inline_entries = calloc(n ? n : 1, sizeof *rl->inline_entries);
    if (rl->inline_entries == NULL) {
        postern_init_error(init, "addresses", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(value, i);
        char path[32];
        snprintf(path, sizeof path, "addresses[%zu]", i);
        if (!json_is_string(item)) {
            postern_init_error(init, path,
                               "expected a string (user@domain or @domain)");
            return -1;
        }
        const char *s = json_string_value(item);
        size_t len = json_string_length(item);
        if (strlen(s) != len || !rl_entry_valid(s, len)) {
            postern_init_error(
                init, path, "expected user@domain or @domain, got \"%.100s\"",
                s);
            return -1;
        }
        if ((rl->inline_entries[i] = strdup(s)) == NULL) {
            postern_init_error(init, path, "out of memory");
            return -1;
        }
        rl->n_inline++;
    }
    return 0;
}

/* Read the config into rl. 0, or -1 after postern_init_error(). */
static int
rl_config(postern_module_init *init, struct rcpt_list *rl)
{
    const json_t *config = postern_init_config(init);
    bool have_addresses = false;
    const char *key;
    json_t *value;

    if (!json_is_object(config)) {
        postern_init_error(init, "", "expected an object");
        return -1;
    }
    json_object_foreach((json_t *)config, key, value)
    {
        if (strcmp(key, "addresses") == 0) {
            if (rl_config_addresses(init, rl, value) != 0)
                return -1;
            have_addresses = true;
        } else if (strcmp(key, "file") == 0) {
            if (!json_is_string(value) || json_string_length(value) == 0 ||
                strlen(json_string_value(value)) != json_string_length(value)) {
                postern_init_error(init, "file",
                                   "expected a non-empty string (a path)");
                return -1;
            }
            if ((rl->file = strdup(json_string_value(value))) == NULL) {
                postern_init_error(init, "file", "out of memory");
                return -1;
            }
        } else if (strcmp(key, "case_sensitive_local") == 0) {
            if (!json_is_boolean(value)) {
                postern_init_error(init, "case_sensitive_local",
                                   "expected true or false");
                return -1;
            }
            rl->case_sensitive_local = json_is_true(value);
        } else if (strcmp(key, "on_match") == 0) {
            const char *s = json_string_value(value);
            if (s != NULL && strcmp(s, "accept") == 0) {
                rl->continue_on_match = false;
            } else if (s != NULL && strcmp(s, "continue") == 0) {
                rl->continue_on_match = true;
            } else {
                postern_init_error(init, "on_match",
                                   "expected \"accept\" or \"continue\"");
                return -1;
            }
        } else {
            postern_init_error(init, key,
                               "unknown key (expected addresses, file, "
                               "case_sensitive_local or on_match)");
            return -1;
        }
    }
    if (!have_addresses && rl->file == NULL) {
        postern_init_error(init, "addresses",
                           "expected \"addresses\" or \"file\" (at least one "
                           "is required)");
        return -1;
    }
    return 0;
}

static int
rl_create(postern_module_init *init, void **instance)
{
    struct rcpt_list *rl = calloc(1, sizeof *rl);

    if (rl == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    if (rl_config(init, rl) != 0) {
        rl_destroy(rl);
        return -1;
    }
    struct rl_error err;
    rl->list = rl_build(rl, &rl->loaded, &err);
    if (rl->list == NULL) {
        char text[512];
        rl_error_text(rl, &err, text, sizeof text);
        postern_init_error(init, err.status == RL_NO_MEMORY ? "" : "file", "%s",
                           text);
        rl_destroy(rl);
        return -1;
    }
    rl->unknown = postern_init_counter(
        init, "unknown_total",
        "Recipients refused as unknown users of a listed domain.");
    if (rl->unknown == NULL) {
        rl_destroy(rl);
        return -1;
    }
    /* last_check stays 0: the first recipient or timer tick checks the
     * file. Under --check-config nothing is started. */
    if (rl->file != NULL && !postern_init_check_only(init))
        rl->timer = postern_timer_start(RL_CHECK_INTERVAL, rl_timer_fired, rl);
    *instance = rl;
    return 0;
}

/* --- the rcpt hook ----------------------------------------------------- */

typedef enum rl_match {
    RL_LISTED,      /* exact address or catch-all */
    RL_UNKNOWN,     /* the domain is covered, the address is not listed */
    RL_NOT_COVERED, /* no entry names the domain (or no domain at all) */
    RL_LOOKUP_NO_MEMORY
} rl_match;

static rl_match
rl_lookup(const struct rcpt_list *rl, const char *addr)
{
    size_t len = strlen(addr), local_len, domain_len;
    const char *domain;

    /* "Postmaster" (no domain) and malformed addresses are not ours. */
    if (rl_split(addr, len, &local_len, &domain, &domain_len) != 0 ||
        local_len == 0 || domain_len == 0)
        return RL_NOT_COVERED;

    char stack[512];
    size_t key_len = local_len + 1 + domain_len;
    char *key = key_len <= sizeof stack ? stack : malloc(key_len);
    if (key == NULL)
        return RL_LOOKUP_NO_MEMORY;
    rl_normalise(addr, local_len, domain, domain_len, rl->case_sensitive_local,
                 key);

    const struct rl_set *set = &rl->list->set;
    rl_match match;
    if (rl_set_contains(set, key, key_len) ||
        rl_set_contains(set, key + local_len, 1 + domain_len))
        match = RL_LISTED;
    else if (rl_set_contains(set, key + local_len + 1, domain_len))
        match = RL_UNKNOWN;
    else
        match = RL_NOT_COVERED;
    if (key != stack)
        free(key);
    return match;
}

static postern_result
rl_rcpt(postern_ctx *ctx, void *instance)
{
    struct rcpt_list *rl = instance;
    const char *addr = postern_rcpt_current(ctx);

    rl_maybe_reload(rl);
    if (addr == NULL)
        return POSTERN_CONTINUE;
    switch (rl_lookup(rl, addr)) {
    case RL_LISTED:
        return rl->continue_on_match ? POSTERN_CONTINUE : POSTERN_ACCEPT;
    case RL_UNKNOWN:
        postern_counter_add(rl->unknown, 1);
        postern_reply(ctx, 550, "5.1.1",
                      "<%s>: Recipient address rejected: User unknown", addr);
        return POSTERN_REJECT;
    case RL_NOT_COVERED:
        return POSTERN_CONTINUE;
    case RL_LOOKUP_NO_MEMORY:
    default:
        return POSTERN_TEMPFAIL;
    }
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "rcpt_list",
    .description = "accept listed recipients, reject unknown users of "
                   "listed domains",
    .create = rl_create,
    .destroy = rl_destroy,
    .handlers = {[POSTERN_HOOK_RCPT] = rl_rcpt},
};
