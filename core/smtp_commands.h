/*
 * smtp_commands.h - the command table: one command line is parsed and
 * handed to its command.
 */
#ifndef POSTERN_SMTP_COMMANDS_H
#define POSTERN_SMTP_COMMANDS_H

#include <stddef.h>

struct session;

/* One command line (without its line end). */
void smtp_command_line(struct session *s, const char *line, size_t len);

#endif
