/*
 * smtp_envelope.h - MAIL and RCPT: the sender, its parameters (SIZE, BODY,
 * SMTPUTF8, AUTH) and the recipients, each through its hook.
 */
#ifndef POSTERN_SMTP_ENVELOPE_H
#define POSTERN_SMTP_ENVELOPE_H

#include "smtp_parse.h"

struct session;

void envelope_mail(struct session *s, const struct smtp_command *cmd);
void envelope_rcpt(struct session *s, const struct smtp_command *cmd);

#endif
