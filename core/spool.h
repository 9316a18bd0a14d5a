/*
 * spool.h - the spool file a message body streams into during DATA/BDAT.
 *
 * The file is anonymous (O_TMPFILE, or created and unlinked at once), so a
 * connection that dies mid-DATA, or a crash, leaves nothing behind. Writes
 * are buffered and go out in large blocks; readers use the descriptor.
 *
 * Creating an anonymous file costs a journal update on most filesystems,
 * so spool files are recycled: when the last user lets go of a small one,
 * it is kept (bounded) and rewritten from offset 0 by the next message.
 * Bytes past a message's size are never read. A spool is reference
 * counted: the transaction holds one reference and each message reader
 * (possibly on a pool thread) another.
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
/* The transaction lets go (loop thread): recycled if nobody reads it. */
void spool_free(struct spool *sp);

/* A reader takes and drops its own reference (any thread). */
void spool_ref(struct spool *sp);
void spool_unref(struct spool *sp);

/* Close the recycled spool files (at exit). */
void spool_spares_free(void);

#endif
