/*
 * postern/module.h - the module descriptor and its ABI check.
 *
 * Every module .so exports exactly one symbol, the descriptor:
 *
 *     static postern_result check_rcpt(postern_ctx *ctx, void *instance);
 *     POSTERN_MODULE_DEFINE = {
 *         .abi_version = POSTERN_ABI_VERSION,
 *         .name = "my_check",
 *         .create = my_create,
 *         .destroy = my_destroy,
 *         .handlers = {[POSTERN_HOOK_RCPT] = check_rcpt},
 *     };
 *
 * The loader accepts a module whose ABI major equals the core's and whose
 * minor is not newer than the core's; anything else is refused with both
 * versions in the message. A module offers the hooks it has a handler for;
 * a plugins.d file may attach an instance to a subset of them.
 */
#ifndef POSTERN_MODULE_H
#define POSTERN_MODULE_H

#include <jansson.h>

#include "hook.h"

#ifdef __cplusplus
extern "C" {
#endif

#define POSTERN_ABI_MAJOR 1
/* 1.1 added postern_log_value(), postern/dns.h, postern_client_rdns(),
 * postern_client_relay() and postern_init_hostname().
 * 1.2 added postern/http.h and postern/curl.h.
 * 1.3 added postern/message.h (structured headers, message and envelope
 * changes, quarantine), POSTERN_DISCARD, postern_reply_line(), 4xx/5xx
 * with POSTERN_DISCONNECT, and postern_loop_call().
 * 1.4 added postern/metrics.h (a module's own Prometheus counters). */
#define POSTERN_ABI_MINOR 4
#define POSTERN_ABI_VERSION ((POSTERN_ABI_MAJOR << 16) | POSTERN_ABI_MINOR)

/* Room for hooks added by later minor versions; unused slots are NULL. */
#define POSTERN_HOOK_SLOTS 16

/* What create() is given: the instance's config and a way to complain. */
typedef struct postern_module_init postern_module_init;

typedef postern_result (*postern_handler)(postern_ctx *ctx, void *instance);

typedef struct postern_module {
    unsigned abi_version; /* POSTERN_ABI_VERSION at build time */
    const char *name;     /* must equal the .so file name without ".so" */
    const char *description;
    /* Build an instance from postern_init_config(); 0 on success, or -1
     * after postern_init_error(). May be NULL for modules with no state. */
    int (*create)(postern_module_init *init, void **instance);
    /* Free an instance; called once, on the loop thread, at shutdown. */
    void (*destroy)(void *instance);
    postern_handler handlers[POSTERN_HOOK_SLOTS];
} postern_module;

#define POSTERN_MODULE_SYMBOL "postern_module_descriptor"
#ifndef __cplusplus
#define POSTERN_MODULE_DEFINE                                                  \
    __attribute__((visibility("default")))                                     \
    const postern_module postern_module_descriptor
#else
/*
 * C++: a const object at namespace scope has internal linkage and a
 * mangled name, so the descriptor is first declared extern "C" (external
 * linkage, C name, exported); the definition the macro opens refers to
 * that declaration. Designated array initialisers are not C++: build the
 * descriptor with postern_module_make() (below), e.g.
 *
 *     POSTERN_MODULE_DEFINE = postern_module_make(
 *         "my_check", "what it does", my_create, my_destroy,
 *         {{POSTERN_HOOK_RCPT, check_rcpt}});
 */
extern "C" __attribute__((visibility("default")))
const postern_module postern_module_descriptor;
#define POSTERN_MODULE_DEFINE const postern_module postern_module_descriptor
#endif

/* The "config" object of the plugins.d file ({} when it has none). */
const json_t *postern_init_config(const postern_module_init *init);

/* The instance name: the plugins.d file name without ".json". */
const char *postern_init_instance(const postern_module_init *init);

/* True under --check-config: validate, but start nothing. */
int postern_init_check_only(const postern_module_init *init);

/* The gateway's name ("hostname" of the main config): what it calls
 * itself in its greeting and Received headers. Since ABI 1.1. */
const char *postern_init_hostname(const postern_module_init *init);

/*
 * Report a config error. json_path is relative to "config" ("root",
 * "addresses[2]"); the core prefixes the file name and "$.config.", so the
 * operator reads "plugins.d/20-store.json: $.config.root: expected ...".
 */
void postern_init_error(postern_module_init *init, const char *json_path,
                        const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
} /* extern "C" */

#include <initializer_list>

/* C++ only: one hook and its handler, for postern_module_make(). */
struct postern_hook_handler {
    postern_hook hook;
    postern_handler fn;
};

#if __cplusplus >= 201402L
#define POSTERN_CXX14_CONSTEXPR constexpr
#else
#define POSTERN_CXX14_CONSTEXPR
#endif

/*
 * C++ only (header-only, any ABI 1.x core): the descriptor for
 * POSTERN_MODULE_DEFINE, with abi_version set to this header's
 * POSTERN_ABI_VERSION and handlers[hook] = fn for each pair; hooks outside
 * the table are ignored. constexpr from C++14, so the descriptor is
 * constant data, set before the loader reads it.
 */
inline POSTERN_CXX14_CONSTEXPR postern_module
postern_module_make(const char *name, const char *description,
                    int (*create)(postern_module_init *, void **),
                    void (*destroy)(void *),
                    std::initializer_list<postern_hook_handler> handlers)
{
    postern_module m{
        POSTERN_ABI_VERSION, name, description, create, destroy, {}};
    for (const postern_hook_handler &h : handlers)
        if ((unsigned)h.hook < POSTERN_HOOK_SLOTS)
            m.handlers[h.hook] = h.fn;
    return m;
}
#endif
#endif
