/*
 * postern/hook.h - hook points, handler results and replies.
 *
 * A handler is called with a hook context (postern_ctx) and the instance
 * pointer its module's create() returned. It answers with a postern_result.
 * It may attach its own SMTP reply to the result with postern_reply(); if it
 * does not, the core picks the RFC-correct default for the stage.
 *
 * Asynchronous handlers return POSTERN_PENDING and later call
 * postern_resume() exactly once, from the loop thread. The context stays
 * valid until that call, even if the client went away meanwhile (then the
 * context is "orphaned": accessors return empty values and the result is
 * ignored). Never call postern_resume() from inside the handler itself
 * before it returned; resuming later from a timer, a pool completion or an
 * I/O callback is the contract.
 *
 * A context is a handle to one handler call, not to the session: it dies
 * when the call is over (a decision returned, or its resume). Using a dead
 * handle (a second resume, a resume after the session closed, a resume
 * with the context of an earlier hook) is logged (with the module instance
 * when the handle is recent enough to tell) and ignored.
 */
#ifndef POSTERN_HOOK_H
#define POSTERN_HOOK_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum postern_hook {
    POSTERN_HOOK_CONNECT,    /* after accept, before the greeting */
    POSTERN_HOOK_HELO,       /* HELO or EHLO */
    POSTERN_HOOK_AUTH,       /* credentials from a SASL exchange */
    POSTERN_HOOK_MAIL,       /* MAIL FROM */
    POSTERN_HOOK_RCPT,       /* each RCPT TO, before the relay policy */
    POSTERN_HOOK_DATA,       /* DATA or the first BDAT, before the body */
    POSTERN_HOOK_MESSAGE,    /* the whole body is spooled; content checks */
    POSTERN_HOOK_STORE,      /* durable hand-off; 250 only after ACCEPT */
    POSTERN_HOOK_RESET,      /* transaction ended (RSET, message, EHLO) */
    POSTERN_HOOK_DISCONNECT, /* session closed; result ignored */
    POSTERN_HOOK_COUNT
} postern_hook;

/* Bit for a hook in postern_module.hooks. */
#define POSTERN_HOOK_BIT(h) (1u << (h))

typedef enum postern_result {
    POSTERN_CONTINUE,   /* no opinion: the next handler runs */
    POSTERN_ACCEPT,     /* yes: the chain stops here */
    POSTERN_REJECT,     /* permanent failure (5xx) */
    POSTERN_TEMPFAIL,   /* temporary failure (4xx) */
    POSTERN_DISCONNECT, /* 421 (or the 4xx/5xx given with postern_reply)
                           and close the session */
    POSTERN_PENDING,    /* async work started; postern_resume() follows */
    /* Since ABI 1.3, at mail, rcpt, data, message and store: accept, but
     * drop the message. The command gets its success reply, the end of
     * data gets 250, nothing is stored, and the drop is logged. The chain
     * stops here. At any other hook it is logged and acts as TEMPFAIL. */
    POSTERN_DISCARD
} postern_result;

/* The context of one hook call. Opaque; owned by the core. */
typedef struct postern_ctx postern_ctx;

/*
 * Attach a reply to the result about to be returned (or passed to
 * postern_resume()). code is a 3-digit SMTP code whose first digit must
 * match the result (2 for ACCEPT, 4 for TEMPFAIL, 5 for REJECT) or 0 for the
 * stage default; enhanced is "x.y.z" or NULL for the stage default; the text
 * is printf-formatted, CR and LF are replaced, and it is cut at 400 bytes.
 * With POSTERN_DISCONNECT the code may be 4xx or 5xx (since ABI 1.3; 421
 * when 0): the reply is sent and the session closed.
 */
void postern_reply(postern_ctx *ctx, int code, const char *enhanced,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Since ABI 1.3: add one more line to the reply attached with
 * postern_reply() (which must come first), for a multi-line reply
 * ("550-first", "550 last"). Same formatting rules; at most 16 lines in
 * all. 0, or -1 when no reply is attached or the limit is reached.
 */
int postern_reply_line(postern_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Finish a PENDING handler. Exactly once, from the loop thread. */
void postern_resume(postern_ctx *ctx, postern_result result);

/* True once the client went away while this context was pending. */
int postern_ctx_orphaned(const postern_ctx *ctx);

/* The hook this context belongs to. */
postern_hook postern_ctx_hook(const postern_ctx *ctx);

/* Name of a hook ("connect", "helo", ...), or NULL when out of range. */
const char *postern_hook_name(postern_hook hook);

#ifdef __cplusplus
}
#endif
#endif
