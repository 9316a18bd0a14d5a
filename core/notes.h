/*
 * notes.h - a module's named values attached to a session or transaction.
 * A short singly linked list: a handful of notes per scope at most.
 */
#ifndef POSTERN_NOTES_H
#define POSTERN_NOTES_H

struct note;

int notes_set(struct note **list, const char *key, void *value,
              void (*free_fn)(void *));
void *notes_get(struct note *const *list, const char *key);
void notes_free(struct note **list);

#endif
