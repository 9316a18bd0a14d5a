/*
 * proxy_protocol.c - the PROXY protocol header parser (see
 * proxy_protocol.h). Version 1 is one text line, "PROXY TCP4 src dst
 * sport dport\r\n" (or TCP6, or UNKNOWN followed by anything), at most
 * 107 bytes; version 2 is a 12-byte signature, a version/command byte, a
 * family/transport byte, a big-endian length, the addresses and TLVs.
 * The first byte tells them apart ('P' or CR); anything else is refused
 * at once, so a client that speaks SMTP first is not kept waiting.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "proxy_protocol.h"

static const unsigned char v2_signature[12] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_prefix[] = "PROXY ";

#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_AF_UNSPEC 0x0
#define V2_AF_INET 0x1
#define V2_AF_INET6 0x2
#define V2_AF_UNIX 0x3
#define V2_TRANSPORT_STREAM 0x1
#define V2_TRANSPORT_DGRAM 0x2

/* --- version 1 --------------------------------------------------------- */

/* The next space-separated token of line[*pos..end); false if empty. */
static bool
v1_token(const char *line, size_t end, size_t *pos, const char **tok,
         size_t *tok_len)
{
    size_t start = *pos, i = start;

    while (i < end && line[i] != ' ')
        i++;
    if (i == start)
        return false;
    *tok = line + start;
    *tok_len = i - start;
    *pos = i < end ? i + 1 : i; /* one separating space */
    return true;
}

static bool
v1_port(const char *tok, size_t len, uint16_t *port)
{
    unsigned v = 0;

    if (len == 0 || len > 5 || (len > 1 && tok[0] == '0'))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (tok[i] < '0' || tok[i] > '9')
            return false;
        v = v * 10 + (unsigned)(tok[i] - '0');
    }
    if (v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

static bool
v1_address(int family, const char *tok, size_t len, uint16_t port,
           struct sockaddr_storage *ss, socklen_t *ss_len)
{
    char text[INET6_ADDRSTRLEN];

    if (len >= sizeof(text))
        return false;
    memcpy(text, tok, len);
    text[len] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, text, &in->sin_addr) != 1)
            return false;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        *ss_len = sizeof(*in);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, text, &in6->sin6_addr) != 1)
            return false;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *ss_len = sizeof(*in6);
    }
    return true;
}

static proxy_protocol_status
v1_parse(const unsigned char *buf, size_t len,
         struct proxy_protocol_header *out, size_t *used)
{
    size_t prefix = sizeof(v1_prefix) - 1;
    size_t scan = len < PROXY_PROTOCOL_V1_MAX ? len : PROXY_PROTOCOL_V1_MAX;
    const unsigned char *lf = memchr(buf, '\n', scan);

    if (memcmp(buf, v1_prefix, len < prefix ? len : prefix) != 0)
        return PROXY_PROTOCOL_INVALID;
    if (!lf)
        return len < PROXY_PROTOCOL_V1_MAX ? PROXY_PROTOCOL_NEED_MORE
                                           : PROXY_PROTOCOL_INVALID;
    size_t end = (size_t)(lf - buf); /* index of LF */
    if (end < prefix + 1 || buf[end - 1] != '\r')
        return PROXY_PROTOCOL_INVALID;
    end--; /* the line without CRLF is buf[0..end) */

    const char *line = (const char *)buf, *tok;
    size_t pos = prefix, tok_len;
    memset(out, 0, sizeof(*out));
    out->version = 1;
    *used = end + 2;
    if (!v1_token(line, end, &pos, &tok, &tok_len))
        return PROXY_PROTOCOL_INVALID;
    if (tok_len == 7 && memcmp(tok, "UNKNOWN", 7) == 0)
        return PROXY_PROTOCOL_DONE; /* the rest of the line is ignored */
    int family;
    if (tok_len == 4 && memcmp(tok, "TCP4", 4) == 0)
        family = AF_INET;
    else if (tok_len == 4 && memcmp(tok, "TCP6", 4) == 0)
        family = AF_INET6;
    else
        return PROXY_PROTOCOL_INVALID;

    const char *src, *dst, *sport_tok, *dport_tok;
    size_t src_len, dst_len, sport_len, dport_len;
    uint16_t sport, dport;
    if (!v1_token(line, end, &pos, &src, &src_len) ||
        !v1_token(line, end, &pos, &dst, &dst_len) ||
        !v1_token(line, end, &pos, &sport_tok, &sport_len) ||
        !v1_token(line, end, &pos, &dport_tok, &dport_len) || pos != end ||
        line[end - 1] == ' ' || !v1_port(sport_tok, sport_len, &sport) ||
        !v1_port(dport_tok, dport_len, &dport) ||
        !v1_address(family, src, src_len, sport, &out->source,
                    &out->source_len) ||
        !v1_address(family, dst, dst_len, dport, &out->destination,
                    &out->destination_len))
        return PROXY_PROTOCOL_INVALID;
    out->has_address = true;
    return PROXY_PROTOCOL_DONE;
}

/* --- version 2 --------------------------------------------------------- */

static uint16_t
be16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* TLVs fill the rest of the body: each must fit, none is interpreted. */
static bool
v2_tlvs_fit(const unsigned char *p, size_t len)
{
    size_t off = 0;

    while (off < len) {
        if (len - off < 3)
            return false;
        size_t tlv_len = be16(p + off + 1);
        if (tlv_len > len - off - 3)
            return false;
        off += 3 + tlv_len;
    }
    return true;
}

static void
v2_inet(struct proxy_protocol_header *out, const unsigned char *a)
{
    struct sockaddr_in *src = (struct sockaddr_in *)&out->source;
    struct sockaddr_in *dst = (struct sockaddr_in *)&out->destination;

    src->sin_family = dst->sin_family = AF_INET;
    memcpy(&src->sin_addr, a, 4);
    memcpy(&dst->sin_addr, a + 4, 4);
    memcpy(&src->sin_port, a + 8, 2); /* both in network order */
    memcpy(&dst->sin_port, a + 10, 2);
    out->source_len = out->destination_len = sizeof(*src);
}

static void
v2_inet6(struct proxy_protocol_header *out, const unsigned char *a)
{
    struct sockaddr_in6 *src = (struct sockaddr_in6 *)&out->source;
    struct sockaddr_in6 *dst = (struct sockaddr_in6 *)&out->destination;

    src->sin6_family = dst->sin6_family = AF_INET6;
    memcpy(&src->sin6_addr, a, 16);
    memcpy(&dst->sin6_addr, a + 16, 16);
    memcpy(&src->sin6_port, a + 32, 2);
    memcpy(&dst->sin6_port, a + 34, 2);
    out->source_len = out->destination_len = sizeof(*src);
}

static proxy_protocol_status
v2_parse(const unsigned char *buf, size_t len,
         struct proxy_protocol_header *out, size_t *used)
{
    size_t sig = sizeof(v2_signature);

    if (memcmp(buf, v2_signature, len < sig ? len : sig) != 0)
        return PROXY_PROTOCOL_INVALID;
    if (len > sig && (buf[12] >> 4) != 2)
        return PROXY_PROTOCOL_INVALID; /* version 2 is the only one */
    if (len < 16)
        return PROXY_PROTOCOL_NEED_MORE;

    unsigned command = buf[12] & 0x0F;
    unsigned family = buf[13] >> 4, transport = buf[13] & 0x0F;
    size_t body = be16(buf + 14);

    if (command > V2_CMD_PROXY || family > V2_AF_UNIX ||
        transport > V2_TRANSPORT_DGRAM || body > PROXY_PROTOCOL_V2_MAX_BODY)
        return PROXY_PROTOCOL_INVALID;
    if (len < 16 + body)
        return PROXY_PROTOCOL_NEED_MORE;

    memset(out, 0, sizeof(*out));
    out->version = 2;
    *used = 16 + body;
    if (command == V2_CMD_LOCAL) {
        /* The balancer speaks for itself (a health check): whatever the
         * block says is ignored, as the specification asks. */
        out->local = true;
        return PROXY_PROTOCOL_DONE;
    }
    size_t addr_len = family == V2_AF_INET    ? 12
                      : family == V2_AF_INET6 ? 36
                      : family == V2_AF_UNIX  ? 216
                                              : 0;
    const unsigned char *body_start = buf + 16;
    if (body < addr_len || !v2_tlvs_fit(body_start + addr_len, body - addr_len))
        return PROXY_PROTOCOL_INVALID;
    if (transport != V2_TRANSPORT_STREAM)
        return PROXY_PROTOCOL_DONE; /* no TCP client address to take */
    if (family == V2_AF_INET) {
        v2_inet(out, body_start);
        out->has_address = true;
    } else if (family == V2_AF_INET6) {
        v2_inet6(out, body_start);
        out->has_address = true;
    }
    return PROXY_PROTOCOL_DONE;
}

proxy_protocol_status
proxy_protocol_parse(const unsigned char *buf, size_t len,
                     struct proxy_protocol_header *out, size_t *used)
{
    if (len == 0)
        return PROXY_PROTOCOL_NEED_MORE;
    if (buf[0] == 'P')
        return v1_parse(buf, len, out, used);
    if (buf[0] == v2_signature[0])
        return v2_parse(buf, len, out, used);
    return PROXY_PROTOCOL_INVALID;
}
