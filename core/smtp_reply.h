/*
 * smtp_reply.h - the one place SMTP replies are formatted. A reply is
 * appended to the connection's output buffer; the session flushes once per
 * batch of input, so a pipelined group is answered in one write.
 */
#ifndef POSTERN_SMTP_REPLY_H
#define POSTERN_SMTP_REPLY_H

#include "conn.h"
#include "hook.h"

/* "code enhanced text\r\n"; enhanced may be NULL or "" to leave it out. */
void smtp_reply(struct conn *c, int code, const char *enhanced, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));

/* Multi-line reply: "code-line" for all but the last, "code line". */
void smtp_reply_lines(struct conn *c, int code, const char *const *lines,
                      size_t n);

/*
 * The reply for a hook outcome: the module's own parts where it gave them
 * and their class matches, the stage defaults otherwise.
 */
/* The code smtp_reply_hook() sends for r with this default. */
int smtp_reply_hook_code(const struct hook_reply *r, int default_code);

void smtp_reply_hook(struct conn *c, const struct hook_reply *r,
                     int default_code, const char *default_enhanced,
                     const char *default_text);

#endif
