/*
 * mock_core.h - a fake postern core for the bundled modules' unit tests.
 *
 * mock_core.c implements the postern_* functions the modules call, over
 * one fake session/transaction whose state the tests set here, and it
 * records what the module did: replies, resumes, log lines, config errors.
 * The thread pool runs work() then done() synchronously inside
 * postern_pool_submit() (or refuses, or queues jobs until mock_pool_run()).
 * Timers never fire by themselves: mock_timer_fire() fires them.
 * DNS lookups are answered from an in-memory zone, later: they wait in a
 * queue until mock_dns_run(), never inside postern_dns_lookup().
 */
#ifndef POSTERN_MOCK_CORE_H
#define POSTERN_MOCK_CORE_H

#include <stdbool.h>
#include <stddef.h>

#include <postern/postern.h>

/* The module under test (linked into the test executable). */
extern const postern_module postern_module_descriptor;

/* Forget everything: state back to defaults, records freed. */
void mock_reset(void);
/* Free everything the mock holds and leave no defaults (end of a test). */
void mock_cleanup(void);

/* The one hook context, and a module init over config (borrowed; keep it
 * alive while create() runs). */
postern_ctx *mock_ctx(void);
postern_module_init *mock_init(const json_t *config, int check_only);

/* Create an instance of the module under test from JSON text. Returns it,
 * or NULL when create() refused the config (after checking that it said
 * why); a create() that fails without a message fails the test. */
void *mock_create(const char *config_text, int check_only);

/* The value of a counter the module registered (postern/metrics.h) by
 * name, "unknown_total"; -1 when it registered none by that name. The
 * counters survive mock_reset() (a module registers them once, in
 * create()). */
long long mock_counter(const char *name);

/* --- fake state ---------------------------------------------------------- */

void mock_set_session_id(const char *id);
/* The client address: postern_client_ip() returns ip as given;
 * postern_client_addr() parses it ("::ffff:192.0.2.1" stays IPv6; an
 * unparsable ip gives NULL). */
void mock_set_client(const char *ip, int port);
/* What postern_client_relay() answers (default 0). */
void mock_set_relay(int relay);
void mock_set_helo(const char *name, int esmtp);
void mock_set_tls(int active);
/* What postern_tls_version/cipher() answer while TLS is active. */
void mock_set_tls_info(const char *version, const char *cipher);
/* What postern_client_rdns() answers (NULL: unknown, the default). */
void mock_set_rdns(const char *name);
void mock_set_auth_user(const char *user); /* NULL: not authenticated */
/* Credentials under decision in the auth hook (NULL: none). */
void mock_set_auth(const char *mechanism, const char *login,
                   const char *password, const char *authzid);
void mock_set_transaction_id(const char *id);
void mock_set_mail_from(const char *from);
void mock_add_mail_param(const char *key, const char *value);
void mock_add_rcpt(const char *addr);
void mock_set_rcpt_current(const char *addr);
void mock_set_message(const void *data, size_t len);
void mock_set_orphaned(int orphaned);
void mock_set_now(double now);

typedef enum mock_pool_mode {
    MOCK_POOL_RUN,    /* work() then done() inside postern_pool_submit() */
    MOCK_POOL_REFUSE, /* postern_pool_submit() returns -1 */
    MOCK_POOL_DEFER   /* queue the job until mock_pool_run() */
} mock_pool_mode;
void mock_set_pool_mode(mock_pool_mode mode);
/* Run the oldest queued job (work, then done): 1 if one ran, 0 if none. */
int mock_pool_run(void);
/* Run the postern_loop_call()s queued (mock_pool_run() does after each
 * job); how many ran. */
int mock_loop_run(void);
/* true: loop calls wait for mock_loop_run() (until mock_reset()). */
void mock_set_loop_calls_deferred(bool deferred);
/* true: postern_loop_call() fails (as when out of memory). */
void mock_set_loop_calls_refused(bool refused);
/* Jobs queued and not run yet. */
size_t mock_pool_pending(void);

/* Timers started and neither fired nor cancelled. */
size_t mock_timers_active(void);
/* Seconds the oldest active timer was started with; -1 if none. */
double mock_timer_seconds(void);
/* Fire the oldest active timer (freed before its callback runs, as the
 * core does): 1 if one fired, 0 if none. */
int mock_timer_fire(void);

typedef enum mock_reader_mode {
    MOCK_READER_OK,
    MOCK_READER_OPEN_FAILS, /* postern_message_open() returns NULL */
    MOCK_READER_READ_FAILS  /* read fails (EIO) once fail_at bytes are out */
} mock_reader_mode;
void mock_set_reader(mock_reader_mode mode, size_t fail_at);
/* Largest chunk one postern_message_read() returns (default 5000). */
void mock_set_read_chunk(size_t chunk);

/* --- records ---------------------------------------------------------------
 */

struct mock_reply {
    int count; /* postern_reply() calls since reset */
    int code;
    char enhanced[16]; /* "" when NULL was given */
    char text[512];
};
const struct mock_reply *mock_last_reply(void);

int mock_resume_count(void);
postern_result mock_last_resume(void);

size_t mock_log_count(void);
const char *mock_log_text(size_t i);
postern_log_level mock_log_level(size_t i);
/* Index of the first log line at level containing needle, or -1. */
int mock_log_find(postern_log_level level, const char *needle);

int mock_init_error_count(void);
const char *mock_init_error_path(void); /* of the last error */
const char *mock_init_error_text(void);

size_t mock_readers_open(void);   /* opened and not closed yet */
int mock_pool_submit_count(void); /* accepted submissions */

/* --- notes and headers ------------------------------------------------------
 * postern_note_set/get keep notes per scope (freed, with their free_fn,
 * by mock_reset/mock_cleanup or mock_end_transaction); postern_header_add
 * records headers in order. */
void mock_end_transaction(void); /* free the transaction's notes */
void mock_end_session(void);     /* free every note, as a closed session */
size_t mock_header_count(void);
const char *mock_header_name(size_t i);
const char *mock_header_value(size_t i);

/* --- envelope changes and outcome (postern/message.h) --------------------
 * postern_mail_from_set/rcpt_add/rcpt_delete change the fake envelope
 * above; postern_message_quarantine keeps the first reason. */
void mock_set_quarantine(const char *reason); /* NULL: not quarantined */
void mock_set_discarded(int discarded);
/* postern_reply_line() calls since reset, and the text of the last. */
int mock_reply_line_count(void);
const char *mock_reply_last_line(void);

/* --- DNS ------------------------------------------------------------------
 */

/* Add a record to the zone: TXT text, MX "pref name", PTR name, or an
 * A/AAAA address. */
void mock_dns_add(const char *name, postern_dns_type type, const char *value);
/* Every lookup of name answers status (TEMPFAIL, ERROR...). */
void mock_dns_fail(const char *name, postern_dns_status status);
/* postern_dns_lookup() returns NULL while refuse is set (and, as the
 * core, for a name with a space, a backslash or a control byte). */
void mock_dns_refuse(int refuse);
/* Answer queued lookups, oldest first, including those started by the
 * callbacks, until none is left: the number answered. */
size_t mock_dns_run(void);
/* Answer only the oldest queued lookup: 1, or 0 if none. */
int mock_dns_step(void);
/* What the core does when the context is orphaned: every queued lookup
 * that carries a context is answered POSTERN_DNS_CANCELLED. */
size_t mock_dns_cancel_all(void);
size_t mock_dns_pending(void);
size_t mock_dns_lookup_count(void); /* started since reset */
size_t mock_dns_cancel_count(void); /* postern_dns_cancel() calls */
/* The name of the i-th queued lookup (oldest first), or NULL. */
const char *mock_dns_pending_name(size_t i);
/* The timeout the last lookup started with (0: the core's default). */
double mock_dns_last_timeout(void);

/* --- milter module fakes (mock_core.c's last block) ----------------------
 * A header section of (name, raw value) for postern_header_*, edited by
 * postern_header_insert/change; postern_body_open reads the message set
 * with mock_set_message; a committed replacement body is kept. */
void mock_milter_clear(void);
void mock_milter_add_header(const char *name, const char *raw);
const char *mock_milter_new_body(size_t *len);
int mock_milter_ios(void); /* I/O watchers started and not stopped */

#endif
