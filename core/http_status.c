/*
 * http_status.c - libcurl outcomes and header lines, for core/http.c.
 */
#include <string.h>

#include "http_status.h"

postern_http_status
http_status_from_curl(CURLcode result, bool too_large, bool body_failed)
{
    switch (result) {
    case CURLE_OK:
        return POSTERN_HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return POSTERN_HTTP_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return POSTERN_HTTP_CONNECT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_CLIENTCERT:
        return POSTERN_HTTP_TLS;
    case CURLE_FILESIZE_EXCEEDED:
        return POSTERN_HTTP_TOO_LARGE;
    case CURLE_WRITE_ERROR:
        return too_large ? POSTERN_HTTP_TOO_LARGE : POSTERN_HTTP_ERROR;
    case CURLE_READ_ERROR:
    case CURLE_SEND_FAIL_REWIND:
        return POSTERN_HTTP_BODY;
    case CURLE_ABORTED_BY_CALLBACK:
        return body_failed ? POSTERN_HTTP_BODY : POSTERN_HTTP_ERROR;
    default:
        if (body_failed)
            return POSTERN_HTTP_BODY;
        return too_large ? POSTERN_HTTP_TOO_LARGE : POSTERN_HTTP_ERROR;
    }
}

const char *
http_status_name(postern_http_status status)
{
    static const char *const names[] = {
        "ok",        "timeout", "connect", "tls",
        "too_large", "body",    "error",   "cancelled",
    };
    if ((unsigned)status < sizeof(names) / sizeof(names[0]))
        return names[status];
    return "unknown";
}

int
http_version_number(long v)
{
    switch (v) {
    case CURL_HTTP_VERSION_1_0:
        return 10;
    case CURL_HTTP_VERSION_1_1:
        return 11;
    case CURL_HTTP_VERSION_2_0:
        return 20;
#ifdef CURL_HTTP_VERSION_3
    case CURL_HTTP_VERSION_3:
        return 30;
#endif
    default:
        return 0;
    }
}

static bool
is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int
http_header_line(const char *line, size_t len, const char **name,
                 size_t *name_len, const char **value, size_t *value_len)
{
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len == 0 || is_blank(line[0]))
        return 0;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0)
        return 1;
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line)
        return 0;
    size_t nl = (size_t)(colon - line);
    for (size_t i = 0; i < nl; i++)
        if ((unsigned char)line[i] <= 0x20 || line[i] == 0x7f)
            return 0;
    const char *v = colon + 1, *end = line + len;
    while (v < end && is_blank(*v))
        v++;
    while (end > v && is_blank(end[-1]))
        end--;
    *name = line;
    *name_len = nl;
    *value = v;
    *value_len = (size_t)(end - v);
    return 2;
}
