/*
 * smtp_auth.h - SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN
 * mechanisms. The exchange lives in the core; the decision is the auth
 * hook's (modules such as auth_file).
 */
#ifndef POSTERN_SMTP_AUTH_H
#define POSTERN_SMTP_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "smtp_parse.h"

struct session;

/* Is AUTH advertised in EHLO for this session now? */
bool smtp_auth_offered(const struct session *s);
void smtp_auth_command(struct session *s, const struct smtp_command *cmd);
/* A client response line inside the exchange (state SESSION_AUTH). */
void smtp_auth_line(struct session *s, const char *line, size_t len);
void smtp_auth_free(struct session *s);
/* Abandon an exchange in progress (a bad line): back to commands. */
void smtp_auth_cancel(struct session *s);

/* Pure SASL decoding, exposed for unit tests. */
typedef enum sasl_status {
    SASL_OK,
    SASL_BAD_BASE64,
    SASL_BAD_MESSAGE /* decodes, but is not a valid PLAIN message */
} sasl_status;

/* Decode base64 into a NUL-terminated buffer of *len bytes (caller frees,
 * after wiping). "=" decodes to an empty string (RFC 4954 4). */
sasl_status sasl_base64_decode(const char *in, size_t in_len, char **out,
                               size_t *len);

/* Split "authzid NUL authcid NUL passwd" (RFC 4616); pointers into msg. */
sasl_status sasl_plain_split(char *msg, size_t len, const char **authzid,
                             const char **authcid, const char **passwd);

#endif
