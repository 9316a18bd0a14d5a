/*
 * discard.c - a store handler that accepts every message and throws it
 * away.
 *
 * It exists for benchmarks and tests, where the cost of durable storage
 * would hide the cost of the SMTP path. It answers 250 at the store hook,
 * so a message "delivered" here is gone: create() logs a warning to make
 * sure nobody runs it in production by accident.
 */
#include <postern/postern.h>

static int
discard_create(postern_module_init *init, void **instance)
{
    const json_t *config = postern_init_config(init);

    if (config != NULL && !json_is_object(config)) {
        postern_init_error(init, "", "expected an object");
        return -1;
    }
    if (config != NULL && json_object_size(config) > 0) {
        /* Name the first offending key; the module takes none. */
        void *iter = json_object_iter((json_t *)config);
        postern_init_error(init, json_object_iter_key(iter),
                           "unknown key (discard takes no configuration)");
        return -1;
    }
    postern_log(NULL, POSTERN_LOG_WARNING,
                "discard module enabled: accepted messages are thrown away; "
                "for benchmarks and tests only");
    *instance = NULL;
    return 0;
}

static void
discard_destroy(void *instance)
{
    (void)instance; /* no state: nothing to free */
}

static postern_result
discard_store(postern_ctx *ctx, void *instance)
{
    (void)instance;
    const char *id = postern_transaction_id(ctx);

    postern_reply(ctx, 250, "2.0.0", "Ok: discarded %s", id ? id : "");
    return POSTERN_ACCEPT;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "discard",
    .description = "accept every message at the store hook and drop it",
    .create = discard_create,
    .destroy = discard_destroy,
    .handlers = {[POSTERN_HOOK_STORE] = discard_store},
};
