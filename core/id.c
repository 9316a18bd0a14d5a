/*
 * id.c - random ids (see id.h). getrandom() fills a batch of bytes; each id
 * takes eight of them, so one system call serves ID_BATCH / 8 ids. The
 * batch is at most 256 bytes: getrandom(2) promises such a read is never
 * short nor interrupted once the kernel's pool is initialised.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#include "id.h"

#define ID_BATCH 256

static unsigned char id_batch[ID_BATCH];
static size_t id_used = ID_BATCH; /* bytes of id_batch already handed out */
static bool id_atfork_registered;

/* In a forked child: drop the inherited batch, which the parent will use
 * too. */
static void
id_atfork_child(void)
{
    id_used = ID_BATCH;
}

static bool
id_read_urandom(unsigned char *buf, size_t len)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    size_t got = 0;

    if (fd < 0)
        return false;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return got == len;
}

static void
id_refill(void)
{
    ssize_t n;

    if (!id_atfork_registered) {
        if (pthread_atfork(NULL, NULL, id_atfork_child) == 0)
            id_atfork_registered = true;
    }
    do
        n = getrandom(id_batch, sizeof(id_batch), 0);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof(id_batch) &&
        !id_read_urandom(id_batch, sizeof(id_batch))) {
        /* No randomness at all (no getrandom and no /dev/urandom): an id
         * that might repeat would mix up messages, so do not go on. */
        fputs("postern: no random bytes for session and queue ids\n", stderr);
        abort();
    }
    id_used = 0;
}

void
id_generate(char out[ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";

    if (id_used + ID_LEN / 2 > ID_BATCH)
        id_refill();
    for (size_t i = 0; i < ID_LEN / 2; i++) {
        unsigned char b = id_batch[id_used + i];
        out[2 * i] = hex[b >> 4];
        out[2 * i + 1] = hex[b & 0xf];
    }
    id_used += ID_LEN / 2;
    out[ID_LEN] = '\0';
}
