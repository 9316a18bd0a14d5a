/*
 * message_edit.c - the header calls of include/postern/message.h: reading
 * the header section (message and store hooks) and changing it (message
 * hook only). The fields live in the transaction's content
 * (message_content.c), parsed on the first call.
 */
#include <stdint.h>

#include "postern/message.h"

#include "hook.h"
#include "message.h"
#include "message_content.h"
#include "smtp_session.h"

/* The content a handle may read: after the end of the data. */
static struct message_content *
content_readable(const postern_ctx *ctx)
{
    struct session *s = hook_ctx_session(ctx);
    if (!s || !s->tx)
        return NULL;
    return message_content_get(s->tx);
}

/* The content a handle may change: at the message hook only, so every
 * store module sees the same message. */
static struct message_content *
content_changeable(const postern_ctx *ctx, struct transaction **tx)
{
    struct session *s = hook_ctx_session(ctx);
    if (!s || !s->tx || postern_ctx_hook(ctx) != POSTERN_HOOK_MESSAGE)
        return NULL;
    *tx = s->tx;
    return message_content_get(s->tx);
}

static const struct header_field *
field_at(const postern_ctx *ctx, size_t index)
{
    struct message_content *c = content_readable(ctx);
    if (!c || index >= c->headers.n)
        return NULL;
    return c->headers.fields[index];
}

size_t
postern_header_count(const postern_ctx *ctx)
{
    struct message_content *c = content_readable(ctx);
    return c ? c->headers.n : 0;
}

const char *
postern_header_name(const postern_ctx *ctx, size_t index)
{
    const struct header_field *f = field_at(ctx, index);
    return f ? f->name : NULL;
}

const char *
postern_header_value(const postern_ctx *ctx, size_t index)
{
    const struct header_field *f = field_at(ctx, index);
    return f ? f->value : NULL;
}

const char *
postern_header_raw(const postern_ctx *ctx, size_t index)
{
    const struct header_field *f = field_at(ctx, index);
    return f ? f->raw_value : NULL;
}

const char *
postern_header_get(const postern_ctx *ctx, const char *name, size_t nth)
{
    struct message_content *c = content_readable(ctx);
    if (!c || !name)
        return NULL;
    size_t i = header_list_find(&c->headers, name, nth);
    return i == SIZE_MAX ? NULL : c->headers.fields[i]->value;
}

int
postern_header_insert(postern_ctx *ctx, size_t index, const char *name,
                      const char *value)
{
    struct transaction *tx;
    struct message_content *c = content_changeable(ctx, &tx);
    if (!c || !name || !value || !header_name_valid(name) ||
        !header_value_valid(value))
        return -1;
    size_t size = header_field_size(name, value);
    if (!message_content_room(tx, c, size))
        return -1;
    if (index > c->headers.n)
        index = c->headers.n;
    if (header_list_insert(&c->headers, index, name, value) < 0)
        return -1;
    if (index <= c->added_end)
        c->added_end++;
    c->added_bytes += size;
    c->changed = true;
    return 0;
}

int
postern_header_change(postern_ctx *ctx, const char *name, size_t nth,
                      const char *value)
{
    struct transaction *tx;
    struct message_content *c = content_changeable(ctx, &tx);
    if (!c || !name)
        return -1;
    size_t i = header_list_find(&c->headers, name, nth);
    if (i == SIZE_MAX)
        return -1;
    if (!value) {
        header_list_delete(&c->headers, i);
        if (i < c->added_end)
            c->added_end--;
        c->changed = true;
        return 0;
    }
    size_t size = header_field_size(c->headers.fields[i]->name, value);
    if (!header_value_valid(value) || !message_content_room(tx, c, size) ||
        header_list_replace(&c->headers, i, value) < 0)
        return -1;
    c->added_bytes += size;
    c->changed = true;
    return 0;
}
