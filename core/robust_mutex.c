/*
 * robust_mutex.c - process-shared robust mutexes (robust_mutex.h), one
 * copy of the set-up and of the EOWNERDEAD recovery for every shared
 * mapping that needs a lock.
 */
#include <errno.h>

#include "robust_mutex.h"

int
robust_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc != 0)
        return rc;
    rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

int
robust_mutex_lock(pthread_mutex_t *m, bool *owner_died)
{
    bool died = false;
    int rc = pthread_mutex_lock(m);
    if (rc == EOWNERDEAD) {
        died = true;
        rc = pthread_mutex_consistent(m);
    }
    if (owner_died)
        *owner_died = died;
    return rc;
}
