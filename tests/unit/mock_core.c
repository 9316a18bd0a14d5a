/*
 * mock_core.c - the fake postern core behind the module unit tests.
 *
 * Plain global state, set by the tests through mock_core.h; every
 * postern_* function a bundled module calls reads or records it. Strings
 * are copied in fixed buffers or strdup'ed and freed by mock_reset(), so
 * valgrind shows only the module's own leaks.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <setjmp.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "mock_core.h"
#include "mock_http.h"

#define MOCK_MAX_ITEMS 64
#define MOCK_MAX_JOBS 16
#define MOCK_MAX_TIMERS 16

struct postern_ctx {
    int unused;
};

struct postern_module_init {
    const json_t *config;
    int check_only;
};

struct postern_timer {
    double seconds;
    postern_timer_cb cb;
    void *arg;
};

struct mock_job {
    postern_work_fn work;
    postern_done_fn done;
    void *arg;
};

struct postern_message_reader {
    unsigned char *data;
    size_t len, pos;
    mock_reader_mode mode;
    size_t fail_at;
};

static struct postern_ctx mock_the_ctx;
static struct postern_module_init mock_the_init;

static struct {
    char *session_id, *client_ip, *helo, *auth_user, *transaction_id;
    char *mail_from, *rcpt_current;
    char *auth_mechanism, *auth_login, *auth_password, *auth_authzid;
    int client_port, esmtp, tls, orphaned, relay;
    struct sockaddr_storage client_addr;
    char *param_keys[MOCK_MAX_ITEMS], *param_values[MOCK_MAX_ITEMS];
    size_t n_params;
    char *rcpts[MOCK_MAX_ITEMS];
    size_t n_rcpts;
    unsigned char *message;
    size_t message_len;
    double now;

    mock_pool_mode pool_mode;
    struct mock_job jobs[MOCK_MAX_JOBS]; /* queued, oldest first */
    size_t n_jobs;
    /* postern_loop_call(): run after the pool job that made them, or by
     * mock_loop_run() */
    struct mock_job calls[MOCK_MAX_JOBS];
    size_t n_calls;
    bool calls_deferred; /* only mock_loop_run() runs them */
    bool calls_refused;  /* postern_loop_call() fails, as out of memory */
    int submits;

    struct postern_timer *timers[MOCK_MAX_TIMERS]; /* oldest first */
    size_t n_timers;

    mock_reader_mode reader_mode;
    size_t reader_fail_at, read_chunk, readers_open;

    struct mock_reply reply;
    int resumes;
    postern_result last_resume;
    char *logs[256];
    postern_log_level log_levels[256];
    size_t n_logs;
    int init_errors;
    char init_error_path[128];
    char init_error_text[1024];
} mock;

static char *
mock_strdup(const char *s)
{
    char *copy = s ? strdup(s) : NULL;

    if (s != NULL && copy == NULL)
        abort();
    return copy;
}

static void
mock_replace(char **slot, const char *s)
{
    free(*slot);
    *slot = mock_strdup(s);
}

static void mock_notes_free(int scope);
static void mock_dns_clear(void);
static void mock_headers_clear(void);
static void mock_outcome_clear(void);

void
mock_cleanup(void)
{
    mock_outcome_clear();
    mock_notes_free(-1);
    mock_dns_clear();
    mock_http_clear();
    mock_headers_clear();
    free(mock.session_id);
    free(mock.client_ip);
    free(mock.helo);
    free(mock.auth_user);
    free(mock.transaction_id);
    free(mock.mail_from);
    free(mock.rcpt_current);
    free(mock.auth_mechanism);
    free(mock.auth_login);
    free(mock.auth_password);
    free(mock.auth_authzid);
    for (size_t i = 0; i < mock.n_params; i++) {
        free(mock.param_keys[i]);
        free(mock.param_values[i]);
    }
    for (size_t i = 0; i < mock.n_rcpts; i++)
        free(mock.rcpts[i]);
    free(mock.message);
    for (size_t i = 0; i < mock.n_logs; i++)
        free(mock.logs[i]);
    for (size_t i = 0; i < mock.n_timers; i++)
        free(mock.timers[i]);
    mock_set_rdns(NULL);
    mock_set_tls_info(NULL, NULL);
    /* Queued jobs belong to the module: a test that leaves one behind
     * leaks it, and valgrind says so. */
    memset(&mock, 0, sizeof mock);
}

void
mock_reset(void)
{
    mock_cleanup();
    mock.session_id = mock_strdup("0123456789abcdef");
    mock.client_ip = mock_strdup("192.0.2.1");
    mock.client_port = 40000;
    mock.transaction_id = mock_strdup("fedcba9876543210");
    mock.mail_from = mock_strdup("");
    mock.now = 1700000000.0;
    mock.read_chunk = 5000;
}

postern_ctx *
mock_ctx(void)
{
    return &mock_the_ctx;
}

postern_module_init *
mock_init(const json_t *config, int check_only)
{
    mock_the_init.config = config;
    mock_the_init.check_only = check_only;
    return &mock_the_init;
}

/* --- setters ------------------------------------------------------------ */

void
mock_set_session_id(const char *id)
{
    mock_replace(&mock.session_id, id);
}

void
mock_set_client(const char *ip, int port)
{
    mock_replace(&mock.client_ip, ip);
    mock.client_port = port;
}

void
mock_set_relay(int relay)
{
    mock.relay = relay;
}

void
mock_set_helo(const char *name, int esmtp)
{
    mock_replace(&mock.helo, name);
    mock.esmtp = esmtp;
}

void
mock_set_tls(int active)
{
    mock.tls = active;
}

void
mock_set_auth_user(const char *user)
{
    mock_replace(&mock.auth_user, user);
}

void
mock_set_auth(const char *mechanism, const char *login, const char *password,
              const char *authzid)
{
    mock_replace(&mock.auth_mechanism, mechanism);
    mock_replace(&mock.auth_login, login);
    mock_replace(&mock.auth_password, password);
    mock_replace(&mock.auth_authzid, authzid);
}

void
mock_set_transaction_id(const char *id)
{
    mock_replace(&mock.transaction_id, id);
}

void
mock_set_mail_from(const char *from)
{
    mock_replace(&mock.mail_from, from);
}

void
mock_add_mail_param(const char *key, const char *value)
{
    if (mock.n_params == MOCK_MAX_ITEMS)
        abort();
    mock.param_keys[mock.n_params] = mock_strdup(key);
    mock.param_values[mock.n_params] = mock_strdup(value);
    mock.n_params++;
}

void
mock_add_rcpt(const char *addr)
{
    if (mock.n_rcpts == MOCK_MAX_ITEMS)
        abort();
    mock.rcpts[mock.n_rcpts++] = mock_strdup(addr);
}

void
mock_set_rcpt_current(const char *addr)
{
    mock_replace(&mock.rcpt_current, addr);
}

void
mock_set_message(const void *data, size_t len)
{
    free(mock.message);
    mock.message = malloc(len ? len : 1);
    if (mock.message == NULL)
        abort();
    memcpy(mock.message, data, len);
    mock.message_len = len;
}

void
mock_set_orphaned(int orphaned)
{
    mock.orphaned = orphaned;
}

void
mock_set_now(double now)
{
    mock.now = now;
}

void
mock_set_pool_mode(mock_pool_mode mode)
{
    mock.pool_mode = mode;
}

int
mock_pool_run(void)
{
    if (mock.n_jobs == 0)
        return 0;
    struct mock_job job = mock.jobs[0];
    memmove(&mock.jobs[0], &mock.jobs[1],
            (mock.n_jobs - 1) * sizeof mock.jobs[0]);
    mock.n_jobs--;
    job.work(job.arg);
    job.done(job.arg);
    if (!mock.calls_deferred)
        mock_loop_run();
    return 1;
}

void
mock_set_loop_calls_deferred(bool deferred)
{
    mock.calls_deferred = deferred;
}

int
mock_loop_run(void)
{
    int n = 0;

    while (mock.n_calls > 0) {
        struct mock_job call = mock.calls[0];
        memmove(&mock.calls[0], &mock.calls[1],
                (mock.n_calls - 1) * sizeof mock.calls[0]);
        mock.n_calls--;
        call.done(call.arg);
        n++;
    }
    return n;
}

void
mock_set_loop_calls_refused(bool refused)
{
    mock.calls_refused = refused;
}

int
postern_loop_call(postern_done_fn fn, void *arg)
{
    if (mock.calls_refused || mock.n_calls == MOCK_MAX_JOBS)
        return -1;
    mock.calls[mock.n_calls++] = (struct mock_job){.done = fn, .arg = arg};
    return 0;
}

size_t
mock_pool_pending(void)
{
    return mock.n_jobs;
}

size_t
mock_timers_active(void)
{
    return mock.n_timers;
}

double
mock_timer_seconds(void)
{
    return mock.n_timers > 0 ? mock.timers[0]->seconds : -1.0;
}

/* Take timer t off the active list: 0, or -1 if it is not on it. */
static int
mock_timer_remove(const struct postern_timer *t)
{
    for (size_t i = 0; i < mock.n_timers; i++) {
        if (mock.timers[i] != t)
            continue;
        memmove(&mock.timers[i], &mock.timers[i + 1],
                (mock.n_timers - i - 1) * sizeof mock.timers[0]);
        mock.n_timers--;
        return 0;
    }
    return -1;
}

int
mock_timer_fire(void)
{
    if (mock.n_timers == 0)
        return 0;
    struct postern_timer *t = mock.timers[0];
    postern_timer_cb cb = t->cb;
    void *arg = t->arg;
    mock_timer_remove(t);
    free(t); /* before cb, as the core: the callback may start a new one */
    cb(arg);
    return 1;
}

void
mock_set_reader(mock_reader_mode mode, size_t fail_at)
{
    mock.reader_mode = mode;
    mock.reader_fail_at = fail_at;
}

void
mock_set_read_chunk(size_t chunk)
{
    mock.read_chunk = chunk ? chunk : 1;
}

/* --- records ------------------------------------------------------------ */

const struct mock_reply *
mock_last_reply(void)
{
    return &mock.reply;
}

int
mock_resume_count(void)
{
    return mock.resumes;
}

postern_result
mock_last_resume(void)
{
    return mock.last_resume;
}

size_t
mock_log_count(void)
{
    return mock.n_logs;
}

const char *
mock_log_text(size_t i)
{
    return i < mock.n_logs ? mock.logs[i] : NULL;
}

postern_log_level
mock_log_level(size_t i)
{
    return i < mock.n_logs ? mock.log_levels[i] : POSTERN_LOG_DEBUG;
}

int
mock_log_find(postern_log_level level, const char *needle)
{
    for (size_t i = 0; i < mock.n_logs; i++)
        if (mock.log_levels[i] == level && strstr(mock.logs[i], needle))
            return (int)i;
    return -1;
}

int
mock_init_error_count(void)
{
    return mock.init_errors;
}

const char *
mock_init_error_path(void)
{
    return mock.init_error_path;
}

const char *
mock_init_error_text(void)
{
    return mock.init_error_text;
}

size_t
mock_readers_open(void)
{
    return mock.readers_open;
}

int
mock_pool_submit_count(void)
{
    return mock.submits;
}

/* --- the postern API ------------------------------------------------------ */

void
postern_reply(postern_ctx *ctx, int code, const char *enhanced, const char *fmt,
              ...)
{
    va_list ap;

    (void)ctx;
    mock.reply.count++;
    mock.reply.code = code;
    snprintf(mock.reply.enhanced, sizeof mock.reply.enhanced, "%s",
             enhanced ? enhanced : "");
    va_start(ap, fmt);
    vsnprintf(mock.reply.text, sizeof mock.reply.text, fmt, ap);
    va_end(ap);
}

void
postern_resume(postern_ctx *ctx, postern_result result)
{
    (void)ctx;
    mock.resumes++;
    mock.last_resume = result;
}

int
postern_ctx_orphaned(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.orphaned;
}

postern_hook
postern_ctx_hook(const postern_ctx *ctx)
{
    (void)ctx;
    return POSTERN_HOOK_STORE;
}

const char *
postern_hook_name(postern_hook hook)
{
    static const char *const names[] = {
        "connect", "helo",    "auth",  "mail",  "rcpt",
        "data",    "message", "store", "reset", "disconnect"};

    return (unsigned)hook < sizeof names / sizeof names[0] ? names[hook] : NULL;
}

void
postern_log(const postern_ctx *ctx, postern_log_level level, const char *fmt,
            ...)
{
    va_list ap;
    char *line = NULL;

    (void)ctx;
    va_start(ap, fmt);
    if (vasprintf(&line, fmt, ap) < 0)
        abort();
    va_end(ap);
    if (mock.n_logs == sizeof mock.logs / sizeof mock.logs[0]) {
        free(line); /* the first 256 lines are enough for any test */
        return;
    }
    mock.log_levels[mock.n_logs] = level;
    mock.logs[mock.n_logs++] = line;
}

const json_t *
postern_init_config(const postern_module_init *init)
{
    return init->config;
}

const char *
postern_init_instance(const postern_module_init *init)
{
    (void)init;
    return "test";
}

int
postern_init_check_only(const postern_module_init *init)
{
    return init->check_only;
}

const char *
postern_init_hostname(const postern_module_init *init)
{
    (void)init;
    return "mx.mock.test";
}

void
postern_init_error(postern_module_init *init, const char *json_path,
                   const char *fmt, ...)
{
    va_list ap;

    (void)init;
    mock.init_errors++;
    snprintf(mock.init_error_path, sizeof mock.init_error_path, "%s",
             json_path ? json_path : "");
    va_start(ap, fmt);
    vsnprintf(mock.init_error_text, sizeof mock.init_error_text, fmt, ap);
    va_end(ap);
}

double
postern_now(void)
{
    return mock.now;
}

int
postern_pool_submit(postern_work_fn work, postern_done_fn done, void *arg)
{
    switch (mock.pool_mode) {
    case MOCK_POOL_REFUSE:
        return -1;
    case MOCK_POOL_DEFER:
        if (mock.n_jobs == MOCK_MAX_JOBS)
            return -1; /* a full queue, as a pool may refuse */
        mock.jobs[mock.n_jobs++] =
            (struct mock_job){.work = work, .done = done, .arg = arg};
        mock.submits++;
        return 0;
    case MOCK_POOL_RUN:
    default:
        mock.submits++;
        work(arg);
        done(arg);
        if (!mock.calls_deferred)
            mock_loop_run();
        return 0;
    }
}

postern_timer *
postern_timer_start(double seconds, postern_timer_cb cb, void *arg)
{
    if (cb == NULL || seconds < 0 || mock.n_timers == MOCK_MAX_TIMERS)
        return NULL;
    struct postern_timer *t = malloc(sizeof *t);
    if (t == NULL)
        abort();
    *t = (struct postern_timer){.seconds = seconds, .cb = cb, .arg = arg};
    mock.timers[mock.n_timers++] = t;
    return t;
}

void
postern_timer_cancel(postern_timer *timer)
{
    if (timer == NULL)
        return;
    /* Cancelling a timer that fired (and was freed) is a module bug. */
    if (mock_timer_remove(timer) != 0)
        fail_msg("postern_timer_cancel() of a timer that is not active");
    free(timer);
}

const char *
postern_session_id(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.session_id;
}

const char *
postern_client_ip(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.client_ip;
}

int
postern_client_port(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.client_port;
}

const struct sockaddr *
postern_client_addr(const postern_ctx *ctx, socklen_t *len)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&mock.client_addr;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&mock.client_addr;

    (void)ctx;
    memset(&mock.client_addr, 0, sizeof mock.client_addr);
    if (mock.client_ip == NULL)
        return NULL;
    if (inet_pton(AF_INET, mock.client_ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)mock.client_port);
        if (len)
            *len = sizeof *sin;
    } else if (inet_pton(AF_INET6, mock.client_ip, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)mock.client_port);
        if (len)
            *len = sizeof *sin6;
    } else {
        return NULL;
    }
    return (const struct sockaddr *)&mock.client_addr;
}

int
postern_client_relay(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.relay;
}

const char *
postern_helo_name(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.helo;
}

int
postern_is_esmtp(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.esmtp;
}

int
postern_tls_active(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.tls;
}

/* Set by mock_set_rdns() and mock_set_tls_info(); freed by mock_cleanup().
 * With TLS on and nothing set, what a TLS 1.3 session would give. */
static char *mock_rdns, *mock_tls_version, *mock_tls_cipher;

void
mock_set_rdns(const char *name)
{
    mock_replace(&mock_rdns, name);
}

void
mock_set_tls_info(const char *version, const char *cipher)
{
    mock_replace(&mock_tls_version, version);
    mock_replace(&mock_tls_cipher, cipher);
}

const char *
postern_tls_peer_dn(const postern_ctx *ctx)
{
    (void)ctx;
    return NULL;
}

const char *
postern_client_rdns(const postern_ctx *ctx)
{
    (void)ctx;
    return mock_rdns;
}

const char *
postern_tls_version(const postern_ctx *ctx)
{
    (void)ctx;
    if (!mock.tls)
        return NULL;
    return mock_tls_version ? mock_tls_version : "TLS1.3";
}

const char *
postern_tls_cipher(const postern_ctx *ctx)
{
    (void)ctx;
    if (!mock.tls)
        return NULL;
    return mock_tls_cipher ? mock_tls_cipher : "TLS_AES_256_GCM_SHA384";
}

const char *
postern_auth_user(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.auth_user;
}

const char *
postern_auth_mechanism(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.auth_mechanism;
}

const char *
postern_auth_login(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.auth_login;
}

const char *
postern_auth_password(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.auth_password;
}

const char *
postern_auth_authzid(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.auth_authzid;
}

const char *
postern_transaction_id(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.transaction_id;
}

const char *
postern_mail_from(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.mail_from;
}

const char *
postern_mail_param(const postern_ctx *ctx, const char *key)
{
    (void)ctx;
    for (size_t i = 0; i < mock.n_params; i++)
        if (strcasecmp(mock.param_keys[i], key) == 0)
            return mock.param_values[i] ? mock.param_values[i] : "";
    return NULL;
}

size_t
postern_rcpt_count(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.n_rcpts;
}

const char *
postern_rcpt_address(const postern_ctx *ctx, size_t index)
{
    (void)ctx;
    return index < mock.n_rcpts ? mock.rcpts[index] : NULL;
}

const char *
postern_rcpt_current(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.rcpt_current;
}

uint64_t
postern_message_size(const postern_ctx *ctx)
{
    (void)ctx;
    return mock.message_len;
}

postern_message_reader *
postern_message_open(const postern_ctx *ctx)
{
    (void)ctx;
    if (mock.reader_mode == MOCK_READER_OPEN_FAILS)
        return NULL;
    postern_message_reader *r = calloc(1, sizeof *r);
    if (r == NULL || (r->data = malloc(mock.message_len + 1)) == NULL)
        abort();
    /* A copy: the reader outlives the context, as the real one does. */
    if (mock.message_len > 0)
        memcpy(r->data, mock.message, mock.message_len);
    r->len = mock.message_len;
    r->mode = mock.reader_mode;
    r->fail_at = mock.reader_fail_at;
    mock.readers_open++;
    return r;
}

ssize_t
postern_message_read(postern_message_reader *r, void *buf, size_t len)
{
    size_t n = r->len - r->pos;

    if (r->mode == MOCK_READER_READ_FAILS && r->pos >= r->fail_at) {
        errno = EIO;
        return -1;
    }
    if (r->mode == MOCK_READER_READ_FAILS && n > r->fail_at - r->pos)
        n = r->fail_at - r->pos;
    if (n > len)
        n = len;
    if (n > mock.read_chunk)
        n = mock.read_chunk;
    memcpy(buf, r->data + r->pos, n);
    r->pos += n;
    return (ssize_t)n;
}

void
postern_message_close(postern_message_reader *r)
{
    if (r == NULL)
        return;
    mock.readers_open--;
    free(r->data);
    free(r);
}

/* The descriptor of the one module linked into each module test. */
extern const postern_module postern_module_descriptor;

void *
mock_create(const char *config_text, int check_only)
{
    json_error_t jerr;
    json_t *config = json_loads(config_text, 0, &jerr);
    void *instance = NULL;

    if (config == NULL)
        fail_msg("bad test JSON: %s", jerr.text);
    int rc = postern_module_descriptor.create(mock_init(config, check_only),
                                              &instance);
    json_decref(config);
    if (rc != 0) {
        assert_int_equal(rc, -1);
        assert_true(mock_init_error_count() > 0);
        return NULL;
    }
    assert_int_equal(mock_init_error_count(), 0);
    assert_non_null(instance);
    return instance;
}

/* --- notes and headers ------------------------------------------------------
 */

struct mock_note {
    int scope;
    char *key;
    void *value;
    void (*free_fn)(void *);
    struct mock_note *next;
};

static struct mock_note *mock_notes;

/* Free the notes of scope (-1: all). */
static void
mock_notes_free(int scope)
{
    struct mock_note **pp = &mock_notes;

    while (*pp != NULL) {
        struct mock_note *n = *pp;
        if (scope >= 0 && n->scope != scope) {
            pp = &n->next;
            continue;
        }
        *pp = n->next;
        if (n->free_fn != NULL)
            n->free_fn(n->value);
        free(n->key);
        free(n);
    }
}

void
mock_end_transaction(void)
{
    mock_notes_free(POSTERN_NOTE_TRANSACTION);
}

void
mock_end_session(void)
{
    mock_notes_free(-1);
}

int
postern_note_set(postern_ctx *ctx, postern_note_scope scope, const char *key,
                 void *value, void (*free_fn)(void *))
{
    (void)ctx;
    if (mock.orphaned || key == NULL || key[0] == '\0')
        return -1;
    for (struct mock_note *n = mock_notes; n != NULL; n = n->next)
        if (n->scope == (int)scope && strcmp(n->key, key) == 0) {
            if (n->free_fn != NULL && n->value != value)
                n->free_fn(n->value);
            n->value = value;
            n->free_fn = free_fn;
            return 0;
        }
    struct mock_note *n = calloc(1, sizeof *n);
    if (n == NULL)
        abort();
    n->scope = (int)scope;
    n->key = mock_strdup(key);
    n->value = value;
    n->free_fn = free_fn;
    n->next = mock_notes;
    mock_notes = n;
    return 0;
}

void *
postern_note_get(const postern_ctx *ctx, postern_note_scope scope,
                 const char *key)
{
    (void)ctx;
    if (mock.orphaned || key == NULL)
        return NULL;
    for (struct mock_note *n = mock_notes; n != NULL; n = n->next)
        if (n->scope == (int)scope && strcmp(n->key, key) == 0)
            return n->value;
    return NULL;
}

static char *mock_headers[MOCK_MAX_ITEMS][2];
static size_t mock_n_headers;

static void
mock_headers_clear(void)
{
    for (size_t i = 0; i < mock_n_headers; i++) {
        free(mock_headers[i][0]);
        free(mock_headers[i][1]);
    }
    mock_n_headers = 0;
}

int
postern_header_add(postern_ctx *ctx, const char *name, const char *value)
{
    (void)ctx;
    if (mock.orphaned || name == NULL || value == NULL ||
        mock_n_headers == MOCK_MAX_ITEMS)
        return -1;
    /* As the core: folding only as CRLF followed by a space or a tab. */
    for (const char *p = value; *p; p++) {
        if (*p == '\r' && (p[1] != '\n' || (p[2] != ' ' && p[2] != '\t')))
            return -1;
        if (*p == '\r')
            p++;
        else if (*p == '\n')
            return -1;
    }
    mock_headers[mock_n_headers][0] = mock_strdup(name);
    mock_headers[mock_n_headers][1] = mock_strdup(value);
    mock_n_headers++;
    return 0;
}

size_t
mock_header_count(void)
{
    return mock_n_headers;
}

const char *
mock_header_name(size_t i)
{
    return i < mock_n_headers ? mock_headers[i][0] : NULL;
}

const char *
mock_header_value(size_t i)
{
    return i < mock_n_headers ? mock_headers[i][1] : NULL;
}

/* --- DNS ------------------------------------------------------------------
 */

struct mock_rr {
    char *name;
    postern_dns_type type; /* 0: a failure status for the name */
    postern_dns_status status;
    char *value;
    struct mock_rr *next;
};

struct postern_dns_query {
    char *name;
    postern_dns_type type;
    postern_ctx *ctx;
    postern_dns_cb cb;
    void *arg;
    struct postern_dns_query *next;
};

struct postern_dns_result {
    postern_dns_type type;
    size_t count;
    const struct mock_rr *rrs[MOCK_MAX_ITEMS];
};

static struct mock_rr *mock_zone;
static struct postern_dns_query *mock_queries;
static size_t mock_dns_started, mock_dns_cancels;
static double mock_dns_timeout;
static int mock_dns_refusing;

static void
mock_dns_clear(void)
{
    while (mock_zone != NULL) {
        struct mock_rr *rr = mock_zone;
        mock_zone = rr->next;
        free(rr->name);
        free(rr->value);
        free(rr);
    }
    while (mock_queries != NULL) {
        struct postern_dns_query *q = mock_queries;
        mock_queries = q->next;
        free(q->name);
        free(q);
    }
    mock_dns_started = mock_dns_cancels = 0;
    mock_dns_timeout = 0;
    mock_dns_refusing = 0;
}

static void
mock_zone_add(const char *name, postern_dns_type type,
              postern_dns_status status, const char *value)
{
    struct mock_rr *rr = calloc(1, sizeof *rr), **tail = &mock_zone;

    if (rr == NULL)
        abort();
    rr->name = mock_strdup(name);
    rr->type = type;
    rr->status = status;
    rr->value = mock_strdup(value);
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = rr;
}

void
mock_dns_add(const char *name, postern_dns_type type, const char *value)
{
    mock_zone_add(name, type, POSTERN_DNS_OK, value);
}

void
mock_dns_fail(const char *name, postern_dns_status status)
{
    mock_zone_add(name, 0, status, NULL);
}

void
mock_dns_refuse(int refuse)
{
    mock_dns_refusing = refuse;
}

size_t
mock_dns_pending(void)
{
    size_t n = 0;

    for (struct postern_dns_query *q = mock_queries; q != NULL; q = q->next)
        n++;
    return n;
}

size_t
mock_dns_lookup_count(void)
{
    return mock_dns_started;
}

size_t
mock_dns_cancel_count(void)
{
    return mock_dns_cancels;
}

const char *
mock_dns_pending_name(size_t i)
{
    for (struct postern_dns_query *q = mock_queries; q != NULL; q = q->next)
        if (i-- == 0)
            return q->name;
    return NULL;
}

double
mock_dns_last_timeout(void)
{
    return mock_dns_timeout;
}

postern_dns_query *
postern_dns_lookup(postern_ctx *ctx, const char *name, postern_dns_type type,
                   double timeout, postern_dns_cb cb, void *arg)
{
    if (mock_dns_refusing || name == NULL || name[0] == '\0')
        return NULL;
    /* As the core, no name with a space, a backslash or a control byte. */
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '\\')
            return NULL;
    struct postern_dns_query *q = calloc(1, sizeof *q), **tail = &mock_queries;
    if (q == NULL)
        abort();
    q->name = mock_strdup(name);
    q->type = type;
    q->ctx = ctx;
    q->cb = cb;
    q->arg = arg;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = q;
    mock_dns_started++;
    mock_dns_timeout = timeout;
    return q;
}

void
postern_dns_cancel(postern_dns_query *query)
{
    for (struct postern_dns_query **pp = &mock_queries; *pp != NULL;
         pp = &(*pp)->next)
        if (*pp == query) {
            *pp = query->next;
            free(query->name);
            free(query);
            mock_dns_cancels++;
            return;
        }
    fail_msg("postern_dns_cancel() of a lookup that is not in flight");
}

/* Pop the oldest query and answer it with status (or from the zone). */
static void
mock_dns_answer(int cancelled)
{
    struct postern_dns_query *q = mock_queries;
    struct postern_dns_result res = {.type = q->type};
    postern_dns_status status = POSTERN_DNS_NXDOMAIN;

    mock_queries = q->next;
    size_t n = strlen(q->name);
    if (n > 0 && q->name[n - 1] == '.')
        n--;
    for (const struct mock_rr *rr = mock_zone; rr != NULL; rr = rr->next) {
        if (strlen(rr->name) != n || strncasecmp(rr->name, q->name, n) != 0)
            continue;
        if (rr->type == 0) {
            status = rr->status;
            break;
        }
        if (status == POSTERN_DNS_NXDOMAIN)
            status = POSTERN_DNS_NODATA;
        if (rr->type == q->type && res.count < MOCK_MAX_ITEMS) {
            res.rrs[res.count++] = rr;
            status = POSTERN_DNS_OK;
        }
    }
    if (status != POSTERN_DNS_OK)
        res.count = 0;
    if (cancelled)
        status = POSTERN_DNS_CANCELLED;
    postern_dns_cb cb = q->cb;
    void *arg = q->arg;
    free(q->name);
    free(q);
    cb(arg, status, status == POSTERN_DNS_OK ? &res : NULL);
}

int
mock_dns_step(void)
{
    if (mock_queries == NULL)
        return 0;
    mock_dns_answer(0);
    return 1;
}

size_t
mock_dns_run(void)
{
    size_t n = 0;

    while (mock_queries != NULL && n < 10000) {
        mock_dns_answer(0);
        n++;
    }
    return n;
}

size_t
mock_dns_cancel_all(void)
{
    size_t n = 0;

    while (mock_queries != NULL && n < 10000) {
        mock_dns_answer(mock_queries->ctx != NULL);
        n++;
    }
    return n;
}

size_t
postern_dns_count(const postern_dns_result *r)
{
    return r ? r->count : 0;
}

uint32_t
postern_dns_ttl(const postern_dns_result *r)
{
    (void)r;
    return 300;
}

int
postern_dns_addr(const postern_dns_result *r, size_t i,
                 struct sockaddr_storage *out, socklen_t *len)
{
    if (r == NULL || i >= r->count)
        return -1;
    memset(out, 0, sizeof *out);
    if (r->type == POSTERN_DNS_A) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        sin->sin_family = AF_INET;
        if (inet_pton(AF_INET, r->rrs[i]->value, &sin->sin_addr) != 1)
            return -1;
        *len = sizeof *sin;
        return 0;
    }
    if (r->type == POSTERN_DNS_AAAA) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        sin6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, r->rrs[i]->value, &sin6->sin6_addr) != 1)
            return -1;
        *len = sizeof *sin6;
        return 0;
    }
    return -1;
}

const char *
postern_dns_name(const postern_dns_result *r, size_t i)
{
    if (r == NULL || i >= r->count)
        return NULL;
    const char *v = r->rrs[i]->value;
    if (r->type == POSTERN_DNS_MX) {
        const char *sp = strchr(v, ' ');
        return sp ? sp + 1 : v;
    }
    return r->type == POSTERN_DNS_PTR ? v : NULL;
}

unsigned
postern_dns_mx_preference(const postern_dns_result *r, size_t i)
{
    if (r == NULL || i >= r->count || r->type != POSTERN_DNS_MX)
        return 0;
    return (unsigned)strtoul(r->rrs[i]->value, NULL, 10);
}

const char *
postern_dns_txt(const postern_dns_result *r, size_t i, size_t *len)
{
    if (r == NULL || i >= r->count || r->type != POSTERN_DNS_TXT)
        return NULL;
    *len = strlen(r->rrs[i]->value);
    return r->rrs[i]->value;
}

int
postern_dns_reverse_name(const struct sockaddr *addr, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";

    if (addr->sa_family == AF_INET) {
        const uint8_t *b =
            (const uint8_t *)&((const struct sockaddr_in *)addr)->sin_addr;
        int n = snprintf(out, size, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2],
                         b[1], b[0]);
        return n < 0 || (size_t)n >= size ? -1 : 0;
    }
    if (addr->sa_family != AF_INET6 || size < 73)
        return -1;
    const uint8_t *b =
        (const uint8_t *)&((const struct sockaddr_in6 *)addr)->sin6_addr;
    size_t n = 0;
    for (int i = 15; i >= 0; i--) {
        out[n++] = hex[b[i] & 15];
        out[n++] = '.';
        out[n++] = hex[b[i] >> 4];
        out[n++] = '.';
    }
    memcpy(out + n, "ip6.arpa", 9);
    return 0;
}

/* --- envelope changes, outcome and reply lines (postern/message.h) ------ */

static struct {
    char *quarantine;
    int discarded;
    int reply_lines;
    char last_line[512];
} mock_outcome;

static void
mock_outcome_clear(void)
{
    free(mock_outcome.quarantine);
    memset(&mock_outcome, 0, sizeof mock_outcome);
}

void
mock_set_quarantine(const char *reason)
{
    mock_replace(&mock_outcome.quarantine, reason);
}

void
mock_set_discarded(int discarded)
{
    mock_outcome.discarded = discarded;
}

int
mock_reply_line_count(void)
{
    return mock_outcome.reply_lines;
}

const char *
mock_reply_last_line(void)
{
    return mock_outcome.last_line;
}

int
postern_reply_line(postern_ctx *ctx, const char *fmt, ...)
{
    va_list ap;

    (void)ctx;
    if (mock.reply.count == 0 || mock_outcome.reply_lines + 1 >= 16)
        return -1;
    mock_outcome.reply_lines++;
    va_start(ap, fmt);
    vsnprintf(mock_outcome.last_line, sizeof mock_outcome.last_line, fmt, ap);
    va_end(ap);
    return 0;
}

int
postern_mail_from_set(postern_ctx *ctx, const char *address, const char *params)
{
    (void)ctx;
    (void)params;
    if (address == NULL)
        return -1;
    mock_replace(&mock.mail_from, address);
    return 0;
}

int
postern_rcpt_add(postern_ctx *ctx, const char *address)
{
    (void)ctx;
    if (address == NULL || *address == '\0')
        return -1;
    for (size_t i = 0; i < mock.n_rcpts; i++)
        if (strcasecmp(mock.rcpts[i], address) == 0)
            return 0;
    if (mock.n_rcpts == MOCK_MAX_ITEMS)
        return -1;
    mock_add_rcpt(address);
    return 0;
}

int
postern_rcpt_delete(postern_ctx *ctx, const char *address)
{
    (void)ctx;
    for (size_t i = 0; address && i < mock.n_rcpts; i++) {
        if (strcasecmp(mock.rcpts[i], address) != 0)
            continue;
        free(mock.rcpts[i]);
        memmove(&mock.rcpts[i], &mock.rcpts[i + 1],
                (mock.n_rcpts - i - 1) * sizeof mock.rcpts[0]);
        mock.n_rcpts--;
        return 0;
    }
    return -1;
}

int
postern_message_quarantine(postern_ctx *ctx, const char *reason)
{
    (void)ctx;
    if (reason == NULL)
        return -1;
    if (mock_outcome.quarantine == NULL)
        mock_set_quarantine(reason);
    return 0;
}

const char *
postern_message_quarantined(const postern_ctx *ctx)
{
    (void)ctx;
    return mock_outcome.quarantine;
}

int
postern_message_discarded(const postern_ctx *ctx)
{
    (void)ctx;
    return mock_outcome.discarded;
}

/* === milter module fakes (structured headers, body replacement, local
 * address, I/O watchers). Kept in one block to ease merging. ============ */

#define MOCK_MILTER_HEADERS 64
static char *mock_mh[MOCK_MILTER_HEADERS][2]; /* name, raw value */
static size_t mock_n_mh;
static char *mock_new_body;
static size_t mock_new_body_len;
static int mock_ios;

struct postern_body_writer {
    char *data;
    size_t len;
};

struct postern_io {
    int fd, events;
    postern_io_cb cb;
    void *arg;
};

void
mock_milter_clear(void)
{
    for (size_t i = 0; i < mock_n_mh; i++) {
        free(mock_mh[i][0]);
        free(mock_mh[i][1]);
    }
    mock_n_mh = 0;
    free(mock_new_body);
    mock_new_body = NULL;
    mock_new_body_len = 0;
}

void
mock_milter_add_header(const char *name, const char *raw)
{
    if (mock_n_mh < MOCK_MILTER_HEADERS) {
        mock_mh[mock_n_mh][0] = mock_strdup(name);
        mock_mh[mock_n_mh][1] = mock_strdup(raw);
        mock_n_mh++;
    }
}

const char *
mock_milter_new_body(size_t *len)
{
    *len = mock_new_body_len;
    return mock_new_body;
}

int
mock_milter_ios(void)
{
    return mock_ios;
}

const char *
postern_local_ip(const postern_ctx *ctx)
{
    (void)ctx;
    return "127.0.0.1";
}

int
postern_local_port(const postern_ctx *ctx)
{
    (void)ctx;
    return 25;
}

size_t
postern_header_count(const postern_ctx *ctx)
{
    (void)ctx;
    return mock_n_mh;
}

const char *
postern_header_name(const postern_ctx *ctx, size_t index)
{
    (void)ctx;
    return index < mock_n_mh ? mock_mh[index][0] : NULL;
}

const char *
postern_header_raw(const postern_ctx *ctx, size_t index)
{
    (void)ctx;
    return index < mock_n_mh ? mock_mh[index][1] : NULL;
}

int
postern_header_insert(postern_ctx *ctx, size_t index, const char *name,
                      const char *value)
{
    (void)ctx;
    if (mock_n_mh == MOCK_MILTER_HEADERS || name == NULL || value == NULL)
        return -1;
    if (index > mock_n_mh)
        index = mock_n_mh;
    memmove(&mock_mh[index + 1], &mock_mh[index],
            (mock_n_mh - index) * sizeof mock_mh[0]);
    mock_mh[index][0] = mock_strdup(name);
    char *raw = malloc(strlen(value) + 2);
    if (raw == NULL)
        abort();
    raw[0] = ' ';
    strcpy(raw + 1, value);
    mock_mh[index][1] = raw;
    mock_n_mh++;
    return 0;
}

int
postern_header_change(postern_ctx *ctx, const char *name, size_t nth,
                      const char *value)
{
    (void)ctx;
    for (size_t i = 0; i < mock_n_mh; i++) {
        if (strcasecmp(mock_mh[i][0], name) != 0 || nth-- > 0)
            continue;
        if (value == NULL) {
            free(mock_mh[i][0]);
            free(mock_mh[i][1]);
            memmove(&mock_mh[i], &mock_mh[i + 1],
                    (mock_n_mh - i - 1) * sizeof mock_mh[0]);
            mock_n_mh--;
            return 0;
        }
        char *raw = malloc(strlen(value) + 2);
        if (raw == NULL)
            abort();
        raw[0] = ' ';
        strcpy(raw + 1, value);
        free(mock_mh[i][1]);
        mock_mh[i][1] = raw;
        return 0;
    }
    return -1;
}

postern_message_reader *
postern_body_open(const postern_ctx *ctx)
{
    return postern_message_open(ctx);
}

postern_body_writer *
postern_body_replace(postern_ctx *ctx)
{
    (void)ctx;
    postern_body_writer *w = calloc(1, sizeof *w);
    if (w == NULL)
        abort();
    return w;
}

int
postern_body_write(postern_body_writer *w, const void *buf, size_t len)
{
    char *grown = realloc(w->data, w->len + len + 1);
    if (grown == NULL)
        abort();
    memcpy(grown + w->len, buf, len);
    w->data = grown;
    w->len += len;
    return 0;
}

int
postern_body_commit(postern_ctx *ctx, postern_body_writer *w)
{
    (void)ctx;
    free(mock_new_body);
    mock_new_body = w->data;
    mock_new_body_len = w->len;
    free(w);
    return 0;
}

void
postern_body_abort(postern_body_writer *w)
{
    if (w == NULL)
        return;
    free(w->data);
    free(w);
}

/* weak: a test may watch descriptors itself (test_forward) */
__attribute__((weak)) postern_io *
postern_io_start(int fd, int events, postern_io_cb cb, void *arg)
{
    postern_io *io = calloc(1, sizeof *io);
    if (io == NULL)
        abort();
    *io = (postern_io){.fd = fd, .events = events, .cb = cb, .arg = arg};
    mock_ios++;
    return io;
}

/* weak: a test may watch descriptors itself (test_forward) */
__attribute__((weak)) void
postern_io_set(postern_io *io, int events)
{
    io->events = events;
}

/* weak: a test may watch descriptors itself (test_forward) */
__attribute__((weak)) void
postern_io_stop(postern_io *io)
{
    if (io == NULL)
        return;
    mock_ios--;
    free(io);
}
/* === end of the milter module fakes ===================================== */

/* --- counters (postern/metrics.h) ----------------------------------------- */

#define MOCK_COUNTERS 16

struct postern_counter {
    char name[80];
    uint64_t value;
};

static struct postern_counter mock_counters[MOCK_COUNTERS];
static unsigned mock_n_counters;

postern_counter *
postern_init_counter(postern_module_init *init, const char *name,
                     const char *help)
{
    (void)init;
    (void)help;
    if (!name || strlen(name) >= sizeof(mock_counters[0].name))
        return NULL;
    for (unsigned i = 0; i < mock_n_counters; i++)
        if (strcmp(mock_counters[i].name, name) == 0)
            return &mock_counters[i];
    if (mock_n_counters == MOCK_COUNTERS)
        return NULL;
    struct postern_counter *c = &mock_counters[mock_n_counters++];
    snprintf(c->name, sizeof(c->name), "%s", name);
    return c;
}

void
postern_counter_add(postern_counter *counter, uint64_t n)
{
    if (counter)
        __atomic_fetch_add(&counter->value, n, __ATOMIC_RELAXED);
}

long long
mock_counter(const char *name)
{
    for (unsigned i = 0; i < mock_n_counters; i++)
        if (strcmp(mock_counters[i].name, name) == 0)
            return (long long)mock_counters[i].value;
    return -1;
}
