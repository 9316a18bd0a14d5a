/*
 * http.h - the core's side of postern/http.h (core/http.c).
 */
#ifndef POSTERN_HTTP_INTERNAL_H
#define POSTERN_HTTP_INTERNAL_H

/* Free the easy handles kept for reuse; after curl_loop_shutdown(). */
void http_spares_free(void);

#endif
