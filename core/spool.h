/*
 * spool.h - the spool file a message body streams into during DATA/BDAT.
 *
 * The file is anonymous (O_TMPFILE, or created and unlinked at once), so a
 * connection that dies mid-DATA, or a crash, leaves nothing behind. Writes
 * are buffered and go out in large blocks; readers use the descriptor.
 */
#ifndef POSTERN_SPOOL_H
#define POSTERN_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool;

/* Make sure dir exists (mkdir -p, mode 0700); 0 or -1 with errno. */
int spool_prepare_dir(const char *dir);

struct spool *spool_open(const char *dir);
/* Append bytes; 0, or -1 once any write failed (errno kept in the spool). */
int spool_write(struct spool *sp, const char *buf, size_t len);
/* Flush buffered bytes; 0 or -1. */
int spool_finish(struct spool *sp);
int spool_fd(const struct spool *sp);
uint64_t spool_size(const struct spool *sp);
int spool_error(const struct spool *sp); /* errno of the first failure */
void spool_free(struct spool *sp);

#endif
