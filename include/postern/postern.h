/*
 * postern/postern.h - everything a postern module may use.
 *
 * Build a module with `pkg-config --cflags postern`, -fPIC -shared and
 * -fvisibility=hidden; the core resolves the postern_ functions at load.
 */
#ifndef POSTERN_POSTERN_H
#define POSTERN_POSTERN_H

#include "hook.h"
#include "log.h"
#include "module.h"
#include "services.h"
#include "dns.h"
#include "http.h"
#include "session.h"
#include "message.h"
#include "metrics.h"

#endif
