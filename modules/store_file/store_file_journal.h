/*
 * store_file_journal.h - the write-ahead journal of store_file: its file
 * format, shared by the writer (store_file_journal.c) and the start-up
 * recovery (store_file_replay.c).
 *
 * A journal directory holds segments, "<pid>.<start>.<seq>.journal" (the
 * process, the instance's start time in ns, a sequence number), each locked
 * (flock) by the process appending to it. A segment is
 *
 *   file header   SF_SEGMENT_HEADER_SIZE bytes: SF_SEGMENT_MAGIC, then the
 *                 boot id of the kernel it was written under
 *   records       one per delivery, back to back:
 *     header      struct sf_record_header (native byte order: a journal
 *                 never leaves its machine)
 *     body        the file name, then per target its maildir and envelope
 *                 text, then the message: see sf_record_meta()
 *     trailer     struct sf_record_trailer: the body's checksum
 *
 * A record is complete when its trailer matches its body; an incomplete
 * one (its writer never finished, so it was never acknowledged) is
 * skipped, and its header gives the next record's offset. A header is
 * written before the next record's space is reserved, so any record
 * acknowledged later has every earlier header on disk with it.
 */
#ifndef POSTERN_STORE_FILE_JOURNAL_H
#define POSTERN_STORE_FILE_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#define SF_SEGMENT_MAGIC "postern store_file journal 1\n"
#define SF_SEGMENT_HEADER_SIZE 96
#define SF_BOOT_ID_OFFSET 32 /* 36 characters and a '\n' */
#define SF_BOOT_ID_SIZE 37
#define SF_RECORD_MAGIC 0x314a5350u  /* "PSJ1" */
#define SF_TRAILER_MAGIC 0x454a5350u /* "PSJE" */

struct sf_record_header {
    uint32_t magic;
    uint32_t check; /* of the other fields */
    uint64_t body_len;
    uint32_t n_targets;
    uint32_t reserved;
};

struct sf_record_trailer {
    uint64_t check; /* of the body */
};

/* A running checksum (Fletcher-like, over 64-bit words): enough to tell
 * a torn or unwritten record from a whole one, cheap enough to run over
 * every message. */
struct sf_sum {
    uint64_t a, b;
    unsigned char tail[8];
    size_t tail_len;
};

void sf_sum_init(struct sf_sum *s);
void sf_sum_add(struct sf_sum *s, const void *data, size_t len);
uint64_t sf_sum_final(struct sf_sum *s);
uint32_t sf_record_header_check(const struct sf_record_header *h);

#endif
