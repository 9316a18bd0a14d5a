/*
 * shared_state.c - placeholder until the shared limits land: nothing is
 * shared yet, every call succeeds and does nothing.
 */
#include "shared_state.h"

int
shared_state_create(const struct config *cfg, char *err, size_t errlen)
{
    (void)cfg;
    (void)err;
    (void)errlen;
    return 0;
}

void
shared_state_enter_slot(unsigned slot)
{
    (void)slot;
}

void
shared_state_release_slot(unsigned slot)
{
    (void)slot;
}

void
shared_state_destroy(void)
{
}
