/*
 * milter.h - what the files of the milter module share: the protocol's
 * constants, the packet codec (milter_packet.c), the instance config
 * (milter_config.c) and the connection to the milter with its negotiation
 * (milter_session.c). milter.c has the hooks and maps the milter's
 * answers onto postern's results and message changes.
 *
 * The protocol is the Sendmail milter protocol, version 6, as Postfix
 * speaks it: every packet is a 4-byte big-endian length (of what follows),
 * one command byte, then the command's data.
 */
#ifndef POSTERN_MILTER_H
#define POSTERN_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <postern/postern.h>

/* --- the protocol ---------------------------------------------------------
 */

#define MILTER_VERSION 6

/* Commands, MTA to milter. */
#define SMFIC_ABORT 'A'
#define SMFIC_BODY 'B'
#define SMFIC_CONNECT 'C'
#define SMFIC_MACRO 'D'
#define SMFIC_BODYEOB 'E'
#define SMFIC_HELO 'H'
#define SMFIC_HEADER 'L'
#define SMFIC_MAIL 'M'
#define SMFIC_EOH 'N'
#define SMFIC_OPTNEG 'O'
#define SMFIC_QUIT 'Q'
#define SMFIC_RCPT 'R'
#define SMFIC_DATA 'T'

/* Replies and requests, milter to MTA. */
#define SMFIR_ADDRCPT '+'
#define SMFIR_DELRCPT '-'
#define SMFIR_ADDRCPT_PAR '2'
#define SMFIR_SHUTDOWN '4'
#define SMFIR_ACCEPT 'a'
#define SMFIR_REPLBODY 'b'
#define SMFIR_CONTINUE 'c'
#define SMFIR_DISCARD 'd'
#define SMFIR_CHGFROM 'e'
#define SMFIR_CONN_FAIL 'f'
#define SMFIR_ADDHEADER 'h'
#define SMFIR_INSHEADER 'i'
#define SMFIR_CHGHEADER 'm'
#define SMFIR_PROGRESS 'p'
#define SMFIR_QUARANTINE 'q'
#define SMFIR_REJECT 'r'
#define SMFIR_SKIP 's'
#define SMFIR_TEMPFAIL 't'
#define SMFIR_REPLYCODE 'y'

/* Actions the milter may ask for (SMFIF_). */
#define SMFIF_ADDHDRS 0x001u
#define SMFIF_CHGBODY 0x002u
#define SMFIF_ADDRCPT 0x004u
#define SMFIF_DELRCPT 0x008u
#define SMFIF_CHGHDRS 0x010u
#define SMFIF_QUARANTINE 0x020u
#define SMFIF_CHGFROM 0x040u
#define SMFIF_ADDRCPT_PAR 0x080u
#define SMFIF_SETSYMLIST 0x100u
#define MILTER_ACTIONS_ALL 0x1ffu

/* Protocol flags (SMFIP_): events not to send, replies not to wait for. */
#define SMFIP_NOCONNECT 0x000001u
#define SMFIP_NOHELO 0x000002u
#define SMFIP_NOMAIL 0x000004u
#define SMFIP_NORCPT 0x000008u
#define SMFIP_NOBODY 0x000010u
#define SMFIP_NOHDRS 0x000020u
#define SMFIP_NOEOH 0x000040u
#define SMFIP_NR_HDR 0x000080u
#define SMFIP_NOUNKNOWN 0x000100u
#define SMFIP_NODATA 0x000200u
#define SMFIP_SKIP 0x000400u
#define SMFIP_RCPT_REJ 0x000800u
#define SMFIP_NR_CONN 0x001000u
#define SMFIP_NR_HELO 0x002000u
#define SMFIP_NR_MAIL 0x004000u
#define SMFIP_NR_RCPT 0x008000u
#define SMFIP_NR_DATA 0x010000u
#define SMFIP_NR_UNKN 0x020000u
#define SMFIP_NR_EOH 0x040000u
#define SMFIP_NR_BODY 0x080000u
#define SMFIP_HDR_LEADSPC 0x100000u
/* What postern offers: every event may be skipped or left unanswered,
 * SMFIR_SKIP is understood, header values may keep their leading space.
 * Not offered: rejected recipients (the rcpt hook runs before the
 * decision) and the larger body chunk sizes. */
#define MILTER_PROTOCOL_OFFERED 0x1ff7ffu

/* Macro stages (SMFIM_), as the milter names them in its lists. */
enum milter_stage {
    MILTER_STAGE_CONNECT,
    MILTER_STAGE_HELO,
    MILTER_STAGE_MAIL,
    MILTER_STAGE_RCPT,
    MILTER_STAGE_DATA,
    MILTER_STAGE_EOM,
    MILTER_STAGE_EOH,
    MILTER_STAGE_COUNT
};

/* The largest packet accepted from a milter (data bytes after the
 * length): libmilter sends body chunks of at most 65535 bytes and headers
 * far smaller; anything longer is garbage. */
#define MILTER_MAX_PACKET (256u * 1024u)
/* Body chunks postern sends. */
#define MILTER_CHUNK 65535u

/* --- packets (milter_packet.c) ------------------------------------------- */

/* A growing byte buffer with a read offset. */
struct milter_buf {
    uint8_t *data;
    size_t len, off, cap;
};

void milter_buf_free(struct milter_buf *b);
void milter_buf_consume(struct milter_buf *b, size_t n);
int milter_buf_append(struct milter_buf *b, const void *data, size_t len);

/* Build one packet: begin, add its data, end. Every call returns 0 or -1
 * (out of memory, or a packet over 4 GiB); end fills in the length. */
int milter_packet_begin(struct milter_buf *b, char cmd, size_t *start);
int milter_packet_add(struct milter_buf *b, const void *data, size_t len);
int milter_packet_add_str(struct milter_buf *b, const char *s); /* + NUL */
int milter_packet_add_u16(struct milter_buf *b, uint16_t v);
int milter_packet_add_u32(struct milter_buf *b, uint32_t v);
int milter_packet_end(struct milter_buf *b, size_t start);

/* One packet received: its command and data (borrowed from the input). */
struct milter_packet {
    char cmd;
    const uint8_t *data;
    size_t len;
};

typedef enum milter_decode {
    MILTER_DECODE_OK,   /* *used bytes make one packet */
    MILTER_DECODE_MORE, /* not a whole packet yet */
    MILTER_DECODE_BAD   /* a length of 0 or over max: garbage */
} milter_decode;
milter_decode milter_packet_decode(const uint8_t *in, size_t len, size_t max,
                                   struct milter_packet *out, size_t *used);

/* The milter's answer to SMFIC_OPTNEG. Macro lists are the milter's own
 * (NULL where it sent none), malloc'ed. */
struct milter_optneg {
    uint32_t version, actions, protocol;
    char *macros[MILTER_STAGE_COUNT];
};
/* 0, or -1 with *why set (a short static text). */
int milter_optneg_parse(const struct milter_packet *p, struct milter_optneg *o,
                        const char **why);
void milter_optneg_free(struct milter_optneg *o);

/* What a reply packet asks: its command and decoded arguments. Strings
 * point into the packet's data (NUL-terminated there). */
struct milter_request {
    char cmd;
    uint32_t index;       /* SMFIR_INSHEADER, SMFIR_CHGHEADER */
    const char *name;     /* header name, address, reason */
    const char *value;    /* header value, ESMTP arguments (may be NULL) */
    const uint8_t *bytes; /* SMFIR_REPLBODY, SMFIR_REPLYCODE text */
    size_t n_bytes;
};
/* Check a reply packet's data against its command. 0, or -1 with *why. */
int milter_request_parse(const struct milter_packet *p,
                         struct milter_request *r, const char **why);

/* A reply text of SMFIR_REPLYCODE: "550-5.7.1 first\r\n550 5.7.1 last". */
#define MILTER_REPLY_LINES 16
#define MILTER_REPLY_TEXT 401
struct milter_replycode {
    int code;
    char enhanced[16]; /* of the first line; "" when none */
    size_t n_lines;
    char lines[MILTER_REPLY_LINES][MILTER_REPLY_TEXT]; /* text only */
};
/* Every line: the same 4xx or 5xx code, '-' between lines and ' ' (or
 * nothing) on the last; an enhanced code, when there is one, of the same
 * class. "%%" becomes "%" (Sendmail's format strings). Lines past
 * MILTER_REPLY_LINES, or longer than MILTER_REPLY_TEXT - 1, are cut.
 * 0, or -1 with *why. */
int milter_replycode_parse(const char *text, size_t len,
                           struct milter_replycode *rc, const char **why);

/* Macro names of a list ("j {daemon_name}, v"), one at a time: the name
 * without braces into out. Returns the rest of the list, or NULL at the
 * end or on a name too long or badly braced (*bad set). */
const char *milter_macro_next(const char *list, char *out, size_t size,
                              bool *bad);

/* --- configuration (milter_config.c) ------------------------------------- */

typedef enum milter_default {
    MILTER_DEFAULT_TEMPFAIL,
    MILTER_DEFAULT_ACCEPT,
    MILTER_DEFAULT_REJECT
} milter_default;

struct milter_config {
    char *instance;    /* plugins.d name, for logs */
    char *socket;      /* as configured */
    int family;        /* AF_UNIX, AF_INET or AF_INET6 */
    uint8_t addr[128]; /* struct sockaddr_* */
    unsigned addr_len;
    double connect_timeout, command_timeout, content_timeout;
    milter_default default_action;
    char *macros[MILTER_STAGE_COUNT]; /* names, space-separated */
    uint32_t protocol_mask;           /* events never to send (SMFIP_NO*) */
    char *hostname;                   /* {j} */
    char *daemon_name;                /* {daemon_name} */
};

/* 0, or -1 after postern_init_error(); milter_config_free() either way. */
int milter_config_parse(postern_module_init *init, struct milter_config *cfg);
void milter_config_free(struct milter_config *cfg);
/* The default macro list of a stage (Postfix's). */
const char *milter_config_default_macros(enum milter_stage stage);

/* --- the connection (milter_session.c) ----------------------------------- */

struct milter_conn;

/* What the connection tells its owner. on_packet returns 0 to go on
 * reading, -1 to stop (the owner closed or failed the connection). */
struct milter_conn_ops {
    int (*on_packet)(void *owner, const struct milter_packet *p);
    void (*on_drained)(void *owner); /* all output written */
    void (*on_failure)(void *owner, const char *reason);
};

typedef enum milter_conn_state {
    MILTER_CONN_CLOSED,
    MILTER_CONN_CONNECTING,
    MILTER_CONN_NEGOTIATING,
    MILTER_CONN_READY,
    MILTER_CONN_FAILED
} milter_conn_state;

struct milter_conn {
    const struct milter_config *cfg;
    const struct milter_conn_ops *ops;
    void *owner;
    milter_conn_state state;
    int fd;
    postern_io *io;
    int io_events;
    postern_timer *timer;
    double timeout; /* of the wait in progress; 0: none */
    bool waiting;   /* a reply is due */
    struct milter_buf out, in;
    struct milter_optneg neg; /* once READY */
    bool in_callback;
};

/* Open the connection and send SMFIC_OPTNEG; the owner hears
 * on_packet() with nothing until READY (the negotiation is handled
 * here), then each reply packet. 0, or -1 (then FAILED, no callback). */
int milter_conn_open(struct milter_conn *c, const struct milter_config *cfg,
                     const struct milter_conn_ops *ops, void *owner,
                     const char **why);
/* Queue bytes of whole packets (b's unread part) and write what the
 * socket takes. 0 or -1 (out of memory; the connection failed). */
int milter_conn_send(struct milter_conn *c, struct milter_buf *b);
/* A reply is due within seconds (re-armed by each packet received). */
void milter_conn_expect(struct milter_conn *c, double seconds);
/* No reply is due any more (unexpected bytes are garbage from now on). */
void milter_conn_settle(struct milter_conn *c);
/* Re-arm the timer of the wait in progress (SMFIR_PROGRESS). */
void milter_conn_progress(struct milter_conn *c);
size_t milter_conn_pending_output(const struct milter_conn *c);
/* Mark it failed and close the socket (no callback). */
void milter_conn_fail(struct milter_conn *c);
/* Try to send SMFIC_QUIT (without waiting), then close. */
void milter_conn_quit(struct milter_conn *c);
void milter_conn_close(struct milter_conn *c);

#endif
