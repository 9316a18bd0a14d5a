/*
 * id.h - session and queue ids: 16 lowercase hex digits of fresh
 * randomness, so that ids neither repeat nor reveal how many connections or
 * transactions came before (an id is shown to clients in "queued as").
 */
#ifndef POSTERN_ID_H
#define POSTERN_ID_H

#define ID_LEN 16

/* Write ID_LEN hex digits and a NUL into out. Loop thread only: ids come
 * from a process-wide batch of getrandom() bytes kept without a lock. A
 * forked child starts a fresh batch, so parent and child never share ids. */
void id_generate(char out[ID_LEN + 1]);

#endif
