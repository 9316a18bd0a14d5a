/*
 * message_receipt.h - receiving the message: DATA and BDAT, the two ways a
 * client sends it, through one path. Both run the data hook, stream the
 * content through the same receiver (smtp_data.h: size, header size and
 * line-ending checks) into the spool, then the message and store hooks.
 */
#ifndef POSTERN_MESSAGE_RECEIPT_H
#define POSTERN_MESSAGE_RECEIPT_H

#include <stdbool.h>

#include "smtp_parse.h"

struct session;

void receipt_data(struct session *s, const struct smtp_command *cmd);
void receipt_bdat(struct session *s, const struct smtp_command *cmd);

/* The input loop's steps in the DATA and BDAT states: consume what is
 * buffered; true when the loop should go on, false when it needs more
 * input (or the session now waits, for the spool say). */
bool receipt_data_step(struct session *s);
bool receipt_chunk_step(struct session *s);

#endif
