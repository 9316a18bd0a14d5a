/*
 * store_http.h - the parts of the store_http module, shared between its
 * files: the instance (config), the document head, the streamed body and
 * the endpoint's answer. Internal to the module.
 */
#ifndef STORE_HTTP_H
#define STORE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <postern/postern.h>

struct sh_job;

/* The instance: its config and the jobs it has under way. */
struct store_http {
    char **urls;
    size_t n_urls;
    char *token;             /* bearer token, or NULL */
    unsigned char *hmac_key; /* signing key, or NULL */
    size_t hmac_key_len;
    char *ca_file, *cert_file, *key_file;
    double timeout;      /* per attempt, seconds */
    double deadline;     /* all attempts of one message, seconds */
    unsigned retries;    /* rounds over the URLs after the first */
    double retry_delay;  /* before the first retry; doubles each time */
    char *gateway;       /* postern_init_hostname() */
    struct sh_job *jobs; /* live jobs, freed by destroy if still there */
};

/* store_http_config.c: fill mod from the instance config. 0, or -1 after
 * postern_init_error(). */
int sh_config(postern_module_init *init, struct store_http *mod);
void sh_config_free(struct store_http *mod);

/* store_http_document.c: the document around the message: head is
 * everything before the base64 text of the message, tail everything
 * after. Both malloc'ed, not NUL-terminated beyond their length. */
struct sh_document {
    char *head;
    size_t head_len;
    const char *tail; /* static */
    size_t tail_len;
    uint64_t message_size;
};
int sh_document_build(const struct store_http *mod, postern_ctx *ctx,
                      double now, struct sh_document *doc);
void sh_document_free(struct sh_document *doc);

/* store_http_body.c: the bytes of a document, head + base64(message) +
 * tail, produced on demand from a message reader. */
struct sh_body;
/* The body over doc (borrowed) and reader (taken; may be NULL until
 * sh_body_restart()). NULL when out of memory. */
struct sh_body *sh_body_new(const struct sh_document *doc,
                            postern_message_reader *reader);
/* Back to the first byte with a fresh reader (taken, may be NULL: the
 * next read then fails). */
void sh_body_restart(struct sh_body *body, postern_message_reader *reader);
/* Up to len bytes; 0 at the end; -1 when the message cannot be read or
 * is not exactly doc->message_size bytes long. */
ssize_t sh_body_read(struct sh_body *body, char *buf, size_t len);
/* Total size of the body in bytes. */
int64_t sh_body_size(const struct sh_document *doc);
void sh_body_free(struct sh_body *body);

/* HMAC-SHA256 of timestamp "." body, as 64 lowercase hex digits into hex
 * (65 bytes). Reads the whole body; safe on a pool thread. 0 or -1. */
int sh_body_sign(struct sh_body *body, const unsigned char *key, size_t key_len,
                 const char *timestamp, char hex[65]);

/* store_http_answer.c: what the endpoint's response means. */
typedef enum sh_verdict {
    SH_STORED,   /* 2xx: 250 */
    SH_REJECTED, /* "action": "reject": 5xx, not retried */
    SH_DEFERRED, /* "action": "defer" or "tempfail": 4xx, not retried */
    SH_FAILED    /* any other status: try the next endpoint, or again */
} sh_verdict;

struct sh_answer {
    sh_verdict verdict;
    int code;          /* SMTP code for REJECTED/DEFERRED */
    char enhanced[16]; /* "x.y.z" */
    char text[256];    /* printable ASCII, for the reply */
    char id[65];       /* the endpoint's id ("" when none), printable */
};
void sh_answer_read(int status, const char *body, size_t len,
                    struct sh_answer *answer);

#endif
