/*
 * tls.c - TLS for sessions (see tls.h).
 *
 * One credentials object holds every configured certificate; GnuTLS picks
 * the one whose names match the client's SNI, and the first one otherwise.
 * After STARTTLS the session forgets everything it learned in plaintext and
 * the client must EHLO again.
 *
 * Resumption uses session tickets (RFC 5077 for TLS 1.2, NewSessionTicket
 * for TLS 1.3), so no server-side cache. The ticket master key is made
 * once per daemon start, in tls_init(), before the supervisor forks its
 * workers: every worker holds the same key, and a ticket issued by one is
 * accepted by all. GnuTLS never encrypts with the master key itself: for
 * each period of 3 x session_lifetime seconds since the epoch it derives
 * the period's key (SHA3-512 of the period number and the master key),
 * issues tickets under it and still accepts those of the previous period;
 * a ticket older than session_lifetime is refused anyway. Reloads keep the
 * master key (clients resume across a SIGHUP); a restart makes a new one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/x509.h>

#include "log.h"
#include "smtp_reply.h"
#include "smtp_session.h"
#include "tls.h"

struct tls_creds {
    gnutls_certificate_credentials_t cert;
    gnutls_priority_t priority;
    bool verify_clients;
    unsigned refs;
};

static struct {
    const struct config *cfg;
    struct tls_creds *current;
    gnutls_datum_t ticket_key; /* the master key, data NULL until made */
} tls;

static void
creds_unref(struct tls_creds *c)
{
    if (!c || --c->refs > 0)
        return;
    gnutls_certificate_free_credentials(c->cert);
    gnutls_priority_deinit(c->priority);
    free(c);
}

static struct tls_creds *
creds_load(const struct config *cfg, char *err, size_t errlen)
{
    const struct tls_config *t = &cfg->tls;
    struct tls_creds *c = calloc(1, sizeof(*c));
    const char *where = NULL;
    int rc;

    if (!c) {
        snprintf(err, errlen, "TLS: out of memory");
        return NULL;
    }
    c->refs = 1;
    rc = gnutls_certificate_allocate_credentials(&c->cert);
    if (rc < 0) {
        snprintf(err, errlen, "TLS: %s", gnutls_strerror(rc));
        free(c);
        return NULL;
    }
    for (size_t i = 0; i < t->n_certs; i++) {
        rc = gnutls_certificate_set_x509_key_file2(
            c->cert, t->certs[i].cert_file, t->certs[i].key_file,
            GNUTLS_X509_FMT_PEM, NULL, 0);
        if (rc < 0) {
            snprintf(err, errlen,
                     "%s: $.tls.certificates[%zu]: cannot load %s / %s: %s",
                     cfg->source, i, t->certs[i].cert_file,
                     t->certs[i].key_file, gnutls_strerror(rc));
            goto fail;
        }
    }
    if (t->client_ca_file) {
        rc = gnutls_certificate_set_x509_trust_file(c->cert, t->client_ca_file,
                                                    GNUTLS_X509_FMT_PEM);
        if (rc <= 0) {
            snprintf(err, errlen,
                     "%s: $.tls.client_ca: no CA certificate loaded from "
                     "%s: %s",
                     cfg->source, t->client_ca_file,
                     rc < 0 ? gnutls_strerror(rc) : "empty file");
            goto fail;
        }
        c->verify_clients = true;
    }
    rc = gnutls_priority_init(&c->priority, t->priorities, &where);
    if (rc < 0) {
        snprintf(err, errlen,
                 "%s: $.tls.priorities: expected a GnuTLS priority string, "
                 "error at \"%s\": %s",
                 cfg->source, where ? where : "", gnutls_strerror(rc));
        c->priority = NULL;
        goto fail;
    }
    return c;
fail:
    gnutls_certificate_free_credentials(c->cert);
    free(c);
    return NULL;
}

static bool
tls_needed(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].tls != TLS_MODE_NONE)
            return true;
    return false;
}

/* The master key, once: reloads and re-inits keep it. */
static int
ticket_key_make(char *err, size_t errlen)
{
    if (tls.ticket_key.data)
        return 0;
    int rc = gnutls_session_ticket_key_generate(&tls.ticket_key);
    if (rc < 0) {
        tls.ticket_key.data = NULL;
        snprintf(err, errlen, "TLS: cannot make the session ticket key: %s",
                 gnutls_strerror(rc));
        return -1;
    }
    return 0;
}

int
tls_init(const struct config *cfg, char *err, size_t errlen)
{
    struct tls_creds *fresh = NULL;

    if (tls_needed(cfg)) {
        fresh = creds_load(cfg, err, errlen);
        if (!fresh)
            return -1;
        if (cfg->tls.session_tickets && ticket_key_make(err, errlen) < 0) {
            creds_unref(fresh);
            return -1;
        }
    }
    /* Sessions under way keep the credentials they started with. */
    creds_unref(tls.current);
    tls.current = fresh;
    tls.cfg = cfg;
    return 0;
}

int
tls_check(const struct config *cfg, char *err, size_t errlen)
{
    if (!tls_needed(cfg))
        return 0;
    struct tls_creds *c = creds_load(cfg, err, errlen);
    if (!c)
        return -1;
    creds_unref(c);
    return 0;
}

int
tls_reload(char *err, size_t errlen)
{
    if (!tls.current)
        return 0;
    struct tls_creds *fresh = creds_load(tls.cfg, err, errlen);
    if (!fresh)
        return -1;
    creds_unref(tls.current);
    tls.current = fresh;
    return 0;
}

void
tls_deinit(void)
{
    creds_unref(tls.current);
    tls.current = NULL;
    tls.cfg = NULL;
    if (tls.ticket_key.data) {
        gnutls_memset(tls.ticket_key.data, 0, tls.ticket_key.size);
        gnutls_free(tls.ticket_key.data);
        tls.ticket_key.data = NULL;
        tls.ticket_key.size = 0;
    }
}

bool
tls_can_starttls(const struct session *s)
{
    return s->listener->tls == TLS_MODE_STARTTLS && !s->conn.tls_active &&
           tls.current != NULL;
}

/* Make a server session with the current credentials. */
static int
tls_session_new(struct session *s)
{
    gnutls_session_t g;

    if (!tls.current)
        return -1;
    if (gnutls_init(&g, GNUTLS_SERVER | GNUTLS_NONBLOCK) < 0)
        return -1;
    if (gnutls_priority_set(g, tls.current->priority) < 0 ||
        gnutls_credentials_set(g, GNUTLS_CRD_CERTIFICATE, tls.current->cert) <
            0) {
        gnutls_deinit(g);
        return -1;
    }
    if (s->cfg->tls.session_tickets && tls.ticket_key.data) {
        /* The lifetime also sets the ticket key's rotation period. */
        gnutls_db_set_cache_expiration(g, (int)s->cfg->tls.session_lifetime);
        if (gnutls_session_ticket_enable_server(g, &tls.ticket_key) < 0) {
            gnutls_deinit(g);
            return -1;
        }
    }
    if (tls.current->verify_clients)
        gnutls_certificate_server_set_request(g, GNUTLS_CERT_REQUEST);
    gnutls_handshake_set_timeout(g, 0); /* the idle timer bounds it */
    s->tls_creds = tls.current;
    tls.current->refs++;
    s->wait = SESSION_WAIT_TLS;
    conn_touch(&s->conn, s->cfg->tls.handshake_timeout);
    conn_start_tls(&s->conn, g);
    return 0;
}

int
tls_start(struct session *s)
{
    return tls_session_new(s);
}

void
tls_begin_handshake(struct session *s)
{
    if (tls_session_new(s) < 0) {
        smtp_reply(&s->conn, 454, "4.7.0", "TLS not available");
        session_close(s, "tls_setup_failed");
    }
}

void
tls_command(struct session *s, const struct smtp_command *cmd)
{
    if (s->conn.tls_active) {
        smtp_reply(&s->conn, 503, "5.5.1", "Error: TLS already active");
        return;
    }
    if (!tls_can_starttls(s)) {
        smtp_reply(&s->conn, 502, "5.5.1", "Error: command not implemented");
        return;
    }
    if (cmd->arg_len > 0) {
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: STARTTLS");
        return;
    }
    if (s->tx) {
        smtp_reply(&s->conn, 503, "5.5.1",
                   "Error: MAIL transaction in progress");
        return;
    }
    smtp_reply(&s->conn, 220, "2.0.0", "Ready to start TLS");
    /* Nothing the client pipelined after STARTTLS may be executed
     * (CVE-2011-0411): input is dropped when the handshake starts. */
    s->wait = SESSION_WAIT_STARTTLS; /* handshake once the 220 is out */
    if (conn_flush(&s->conn) < 0) {
        session_close(s, "write_error");
        return;
    }
    if (conn_pending_output(&s->conn) == 0)
        tls_begin_handshake(s);
}

static char *
tls_peer_dn(gnutls_session_t g)
{
    unsigned status = 0;
    unsigned n = 0;
    const gnutls_datum_t *chain;
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = {NULL, 0};
    char *out = NULL;

    if (gnutls_certificate_verify_peers2(g, &status) < 0 || status != 0)
        return NULL;
    chain = gnutls_certificate_get_peers(g, &n);
    if (!chain || n == 0 || gnutls_x509_crt_init(&crt) < 0)
        return NULL;
    if (gnutls_x509_crt_import(crt, &chain[0], GNUTLS_X509_FMT_DER) == 0 &&
        gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
        out = strndup((const char *)dn.data, dn.size);
        gnutls_free(dn.data);
    }
    gnutls_x509_crt_deinit(crt);
    return out;
}

void
tls_handshake_done(struct session *s, int ok)
{
    gnutls_session_t g = s->conn.tls;
    bool implicit = s->listener->tls == TLS_MODE_IMPLICIT;

    if (!ok) {
        log_event(LOG_LEVEL_INFO, s->id, "tls_failed", "client=%s",
                  s->client_ip);
        session_close(s, "tls_failed");
        return;
    }
    const char *version =
        gnutls_protocol_get_name(gnutls_protocol_get_version(g));
    const char *cipher = gnutls_ciphersuite_get(g);
    char sni[256];
    size_t sni_len = sizeof(sni) - 1;
    unsigned type;

    free(s->tls_version);
    free(s->tls_cipher);
    free(s->tls_sni);
    free(s->tls_peer_dn);
    s->tls_version = strdup(version ? version : "unknown");
    s->tls_cipher = strdup(cipher ? cipher : "unknown");
    s->tls_sni = NULL;
    if (gnutls_server_name_get(g, sni, &sni_len, &type, 0) == 0 &&
        type == GNUTLS_NAME_DNS) {
        sni[sni_len] = '\0';
        s->tls_sni = strdup(sni);
    }
    s->tls_peer_dn =
        s->tls_creds && s->tls_creds->verify_clients ? tls_peer_dn(g) : NULL;
    log_event(LOG_LEVEL_INFO, s->id, "tls",
              "version=%s cipher=%s resumed=%s sni=%s peer=%s", s->tls_version,
              s->tls_cipher, gnutls_session_is_resumed(g) ? "yes" : "no",
              postern_log_value(s->tls_sni), postern_log_value(s->tls_peer_dn));
    conn_touch(&s->conn, s->cfg->limits.command_timeout);
    session_tls_established(s, implicit);
}

void
tls_session_release(struct session *s)
{
    creds_unref(s->tls_creds);
    s->tls_creds = NULL;
}
