/*
 * notes.c - per-session and per-transaction module notes (see notes.h).
 */
#include <stdlib.h>
#include <string.h>

#include "notes.h"

struct note {
    struct note *next;
    void *value;
    void (*free_fn)(void *);
    char key[]; /* copied */
};

static struct note *
notes_find(struct note *list, const char *key)
{
    for (; list; list = list->next)
        if (strcmp(list->key, key) == 0)
            return list;
    return NULL;
}

int
notes_set(struct note **list, const char *key, void *value,
          void (*free_fn)(void *))
{
    struct note *n;

    if (!key || !*key)
        return -1;
    n = notes_find(*list, key);
    if (n) {
        if (n->free_fn && n->value != value)
            n->free_fn(n->value);
        n->value = value;
        n->free_fn = free_fn;
        return 0;
    }
    size_t len = strlen(key);
    n = malloc(sizeof(*n) + len + 1);
    if (!n)
        return -1;
    memcpy(n->key, key, len + 1);
    n->value = value;
    n->free_fn = free_fn;
    n->next = *list;
    *list = n;
    return 0;
}

void *
notes_get(struct note *const *list, const char *key)
{
    struct note *n = key ? notes_find(*list, key) : NULL;
    return n ? n->value : NULL;
}

void
notes_free(struct note **list)
{
    struct note *n = *list;

    while (n) {
        struct note *next = n->next;
        if (n->free_fn)
            n->free_fn(n->value);
        free(n);
        n = next;
    }
    *list = NULL;
}
