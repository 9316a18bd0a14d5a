/*
 * spool.h - the spool file a message body streams into during DATA/BDAT.
 *
 * The file is anonymous (O_TMPFILE, or created and unlinked at once), so a
 * connection that dies mid-DATA, or a crash, leaves nothing behind.
 *
 * No spool call blocks the loop on the disk. Bytes are copied into a
 * 64 KiB block; a full block is written by a pool thread (pwrite) while
 * the next one fills. When both blocks are busy the writer has no room and
 * must wait: spool_room() says how much it may write now, and the wake
 * callback runs on the loop when a block write finishes. The file is made
 * by the first block write (a journal update on most filesystems), on the
 * pool too. The last block is never written: readers find it in memory,
 * so a message that fits in one block needs no file I/O at all.
 *
 * Creating an anonymous file costs a journal update, so spool files are
 * recycled: when the last user lets go of a small one, it is kept
 * (bounded) and rewritten from offset 0 by the next message. Bytes past a
 * message's size are never read. A spool is reference counted: the
 * transaction holds one reference, each message reader (possibly on a pool
 * thread) and each block write in flight another.
 *
 * Without a running pool (unit tests, start-up checks) the same work runs
 * synchronously on the calling thread.
 */
#ifndef POSTERN_SPOOL_H
#define POSTERN_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct spool;

/* The block a spool fills in memory before it is written. */
#define SPOOL_BLOCK_SIZE (64 * 1024)

/* Called on the loop thread when background spool work finished. */
typedef void (*spool_wake_fn)(void *arg);

/* Make sure dir exists (mkdir -p, mode 0700); 0 or -1 with errno. */
int spool_prepare_dir(const char *dir);

/* Start-up check: create and drop one anonymous file in dir (blocking). */
int spool_check_dir(const char *dir);

/* A spool for one message (loop thread, no I/O). NULL: out of memory. */
struct spool *spool_open(const char *dir);

/* Make sure the file exists. 1: it does (or creating it failed: see
 * spool_error()); 0: it is being created and wake(arg) follows. */
int spool_create(struct spool *sp, spool_wake_fn wake, void *arg);

/* Bytes spool_write() accepts now without waiting. */
size_t spool_room(const struct spool *sp);

/* Append len <= spool_room() bytes; 0, or -1 once any write failed. When
 * room runs out, wake(arg) (see spool_on_wake) runs once a write is done. */
int spool_write(struct spool *sp, const char *buf, size_t len);

/* Who to wake when a block write finishes (NULL: nobody). */
void spool_on_wake(struct spool *sp, spool_wake_fn wake, void *arg);

/* No more bytes: wait for a block write in flight. 1: done (check
 * spool_error()); 0: under way, wake(arg) follows. */
int spool_finish(struct spool *sp, spool_wake_fn wake, void *arg);

/* Read message bytes at off, from the file or the block in memory; after
 * spool_finish(), from any thread. Bytes read, 0 at the end, or -1. */
ssize_t spool_pread(const struct spool *sp, void *buf, size_t len,
                    uint64_t off);

/* A new anonymous file in dir (blocking: not on the loop thread); the
 * descriptor, or -1 with errno. */
int spool_anonymous_file(const char *dir);

/* Write all len bytes at off (blocking); 0, or -1 with errno. */
int spool_pwrite_all(int fd, const char *buf, size_t len, uint64_t off);

/* A finished spool made of what another writer wrote (loop thread): the
 * file fd (-1: none) holds the first flushed bytes, block (malloc'd,
 * SPOOL_BLOCK_SIZE bytes) the next filled ones. The spool then owns fd
 * and block; NULL (out of memory) leaves them to the caller. */
struct spool *spool_adopt(const char *dir, int fd, uint64_t flushed,
                          char *block, size_t filled);

/* The file (-1 while there is none); for tests. */
int spool_fd(const struct spool *sp);
uint64_t spool_size(const struct spool *sp);
int spool_error(const struct spool *sp); /* errno of the first failure */

/* The transaction lets go (loop thread): recycled if nobody reads it. No
 * wake callback runs after this. */
void spool_free(struct spool *sp);

/* A reader takes and drops its own reference (any thread). */
void spool_ref(struct spool *sp);
void spool_unref(struct spool *sp);

/* Close the recycled spool files (at exit). */
void spool_spares_free(void);

#endif
