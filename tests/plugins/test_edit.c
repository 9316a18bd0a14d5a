/*
 * test_edit.c - test plugin: reads and changes the received message
 * through postern/message.h, as a content filter or a milter host would.
 *
 * Config (every key optional):
 *   "report": "/path"        at the message hook, before any change: the
 *                            header list and the body as the core parsed
 *                            them, written as JSON (see report_write)
 *   "lookups": [["Name", n]] postern_header_get() calls for the report
 *   "insert": [[i, "Name", "value"]]      postern_header_insert() calls
 *   "change": [["Name", n, "value"|null]] postern_header_change() calls
 *   "body": {"text": "...", "repeat": n, "sleep": s}
 *                            replace the body with text written n times,
 *                            from a pool thread (after sleeping s seconds),
 *                            then commit on the loop and resume
 *   "store_report": "/path"  at the store hook: the list as the store
 *                            modules see it, and what change calls answer
 *                            there (they must fail)
 * Each call's result is logged: "test_edit insert=0", "test_edit commit=-1
 * errno=27" ...
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include <postern/message.h>
#include <postern/postern.h>

struct test_edit {
    json_t *cfg;
};

static int
edit_create(postern_module_init *init, void **instance)
{
    struct test_edit *t = calloc(1, sizeof(*t));
    if (!t) {
        postern_init_error(init, NULL, "out of memory");
        return -1;
    }
    t->cfg = json_deep_copy(postern_init_config(init));
    *instance = t;
    return 0;
}

static void
edit_destroy(void *instance)
{
    struct test_edit *t = instance;
    json_decref(t->cfg);
    free(t);
}

static json_t *
string_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* The body through postern_body_open(), as a string. */
static json_t *
body_read(postern_ctx *ctx)
{
    postern_message_reader *r = postern_body_open(ctx);
    char *buf = NULL;
    size_t len = 0;
    char chunk[1000];
    ssize_t n;

    if (!r)
        return json_null();
    while ((n = postern_message_read(r, chunk, sizeof(chunk))) > 0) {
        char *grown = realloc(buf, len + (size_t)n + 1);
        if (!grown)
            break;
        buf = grown;
        memcpy(buf + len, chunk, (size_t)n);
        len += (size_t)n;
    }
    postern_message_close(r);
    json_t *s = json_stringn(buf ? buf : "", len);
    free(buf);
    return s ? s : json_null();
}

/* {"fields": [[name, value, raw]...], "lookups": [...], "body": "...",
 *  "body_size": n, "message_size": n, more...} */
static void
report_write(postern_ctx *ctx, const struct test_edit *t, const char *path,
             json_t *more)
{
    json_t *fields = json_array(), *lookups = json_array();
    size_t count = postern_header_count(ctx), i;
    json_t *v;

    for (i = 0; i < count; i++)
        json_array_append_new(
            fields,
            json_pack("[o o o]", string_or_null(postern_header_name(ctx, i)),
                      string_or_null(postern_header_value(ctx, i)),
                      string_or_null(postern_header_raw(ctx, i))));
    /* One past the end answers NULL. */
    if (postern_header_name(ctx, count) || postern_header_value(ctx, count) ||
        postern_header_raw(ctx, count))
        json_array_append_new(fields, json_string("past the end"));
    json_array_foreach(json_object_get(t->cfg, "lookups"), i, v)
    {
        const char *name = json_string_value(json_array_get(v, 0));
        size_t nth = (size_t)json_integer_value(json_array_get(v, 1));
        json_array_append_new(
            lookups, string_or_null(postern_header_get(ctx, name, nth)));
    }
    json_t *report = json_pack(
        "{s o s o s o s I s I}", "fields", fields, "lookups", lookups, "body",
        body_read(ctx), "body_size", (json_int_t)postern_body_size(ctx),
        "message_size", (json_int_t)postern_message_size(ctx));
    if (more)
        json_object_update(report, more);
    if (json_dump_file(report, path, JSON_INDENT(1)) < 0)
        postern_log(ctx, POSTERN_LOG_ERROR, "test_edit cannot write %s", path);
    json_decref(report);
}

static void
edits_apply(postern_ctx *ctx, const struct test_edit *t)
{
    size_t i;
    json_t *v;

    json_array_foreach(json_object_get(t->cfg, "insert"), i, v)
    {
        int rc = postern_header_insert(
            ctx, (size_t)json_integer_value(json_array_get(v, 0)),
            json_string_value(json_array_get(v, 1)),
            json_string_value(json_array_get(v, 2)));
        postern_log(ctx, POSTERN_LOG_INFO, "test_edit insert=%d", rc);
    }
    json_array_foreach(json_object_get(t->cfg, "change"), i, v)
    {
        int rc = postern_header_change(
            ctx, json_string_value(json_array_get(v, 0)),
            (size_t)json_integer_value(json_array_get(v, 1)),
            json_string_value(json_array_get(v, 2)));
        postern_log(ctx, POSTERN_LOG_INFO, "test_edit change=%d", rc);
    }
}

/* --- the body, written on a pool thread --- */

struct body_job {
    postern_ctx *ctx;
    postern_body_writer *writer;
    char *text;
    long repeat;
    double sleep;
    int rc, error;
};

static void
body_work(void *arg)
{
    struct body_job *j = arg;
    size_t len = strlen(j->text);

    if (j->sleep > 0)
        usleep((useconds_t)(j->sleep * 1e6));
    for (long i = 0; i < j->repeat && j->rc == 0; i++) {
        /* in two pieces, so writes do not line up with the text */
        size_t half = len / 2;
        if (postern_body_write(j->writer, j->text, half) < 0 ||
            postern_body_write(j->writer, j->text + half, len - half) < 0) {
            j->rc = -1;
            j->error = errno;
        }
    }
}

static void
body_done(void *arg)
{
    struct body_job *j = arg;
    postern_ctx *ctx = j->ctx;

    if (j->rc < 0)
        postern_log(ctx, POSTERN_LOG_INFO, "test_edit write=-1 errno=%d",
                    j->error);
    errno = 0;
    int rc = postern_body_commit(ctx, j->writer);
    postern_log(ctx, POSTERN_LOG_INFO, "test_edit commit=%d errno=%d", rc,
                rc < 0 ? errno : 0);
    free(j->text);
    free(j);
    postern_resume(ctx, POSTERN_CONTINUE);
}

static postern_result
edit_message(postern_ctx *ctx, void *instance)
{
    struct test_edit *t = instance;
    const char *report = json_string_value(json_object_get(t->cfg, "report"));
    json_t *body = json_object_get(t->cfg, "body");

    if (report)
        report_write(ctx, t, report, NULL);
    edits_apply(ctx, t);
    if (!body)
        return POSTERN_CONTINUE;

    struct body_job *j = calloc(1, sizeof(*j));
    if (!j)
        return POSTERN_TEMPFAIL;
    j->ctx = ctx;
    j->text = strdup(json_string_value(json_object_get(body, "text")));
    j->repeat = (long)json_integer_value(json_object_get(body, "repeat"));
    j->sleep = json_number_value(json_object_get(body, "sleep"));
    j->writer = postern_body_replace(ctx);
    if (!j->text || !j->writer ||
        postern_pool_submit(body_work, body_done, j) < 0) {
        postern_log(ctx, POSTERN_LOG_ERROR, "test_edit cannot replace");
        postern_body_abort(j->writer);
        free(j->text);
        free(j);
        return POSTERN_TEMPFAIL;
    }
    postern_log(ctx, POSTERN_LOG_INFO, "test_edit replacing");
    return POSTERN_PENDING;
}

static postern_result
edit_store(postern_ctx *ctx, void *instance)
{
    struct test_edit *t = instance;
    const char *path =
        json_string_value(json_object_get(t->cfg, "store_report"));

    if (!path)
        return POSTERN_CONTINUE;
    /* Too late for changes: each must fail and change nothing. */
    const char *first = postern_header_name(ctx, 0);
    postern_body_writer *w = postern_body_replace(ctx);
    json_t *more = json_pack(
        "{s i s i s i s b}", "store_insert",
        postern_header_insert(ctx, 0, "X-Store", "late"), "store_change",
        first ? postern_header_change(ctx, first, 0, "late") : 99,
        "store_delete", first ? postern_header_change(ctx, first, 0, NULL) : 99,
        "store_replace", w != NULL);
    postern_body_abort(w);
    report_write(ctx, t, path, more);
    json_decref(more);
    return POSTERN_CONTINUE;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_edit",
    .description = "test plugin: header and body changes at the message hook",
    .create = edit_create,
    .destroy = edit_destroy,
    .handlers =
        {
            [POSTERN_HOOK_MESSAGE] = edit_message,
            [POSTERN_HOOK_STORE] = edit_store,
        },
};
