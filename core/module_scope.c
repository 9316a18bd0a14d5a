/*
 * module_scope.c - the current module instance of this thread (see
 * module_scope.h).
 */
#include <stddef.h>

#include "module.h"
#include "module_scope.h"

static _Thread_local const struct module_instance *current;

const struct module_instance *
module_scope(void)
{
    return current;
}

const struct module_instance *
module_scope_enter(const struct module_instance *mi)
{
    const struct module_instance *previous = current;
    current = mi;
    return previous;
}

void
module_scope_leave(const struct module_instance *previous)
{
    current = previous;
}

const char *
module_scope_name(void)
{
    return current ? current->instance : NULL;
}
