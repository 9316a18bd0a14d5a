/*
 * proxy_protocol.h - the PROXY protocol header a TCP balancer (HAProxy,
 * a cloud load balancer) sends before the client's first byte, versions 1
 * (text) and 2 (binary), as haproxy's doc/proxy-protocol.txt defines them.
 *
 * A pure parser: no I/O, no allocation. The caller hands it every header
 * byte received so far (the header may arrive in pieces) and learns
 * whether more is needed, how many bytes the header took, or that the
 * bytes are not a header.
 */
#ifndef POSTERN_PROXY_PROTOCOL_H
#define POSTERN_PROXY_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Version 1: "PROXY ... \r\n" is at most 107 bytes, CRLF included. */
#define PROXY_PROTOCOL_V1_MAX 107
/* Version 2: a 16-byte preamble and up to this many bytes of addresses and
 * TLVs (the format allows 65535; real senders send a few dozen, and a
 * bound keeps the reader's buffer small). */
#define PROXY_PROTOCOL_V2_MAX_BODY 2032
#define PROXY_PROTOCOL_MAX (16 + PROXY_PROTOCOL_V2_MAX_BODY)

typedef enum proxy_protocol_status {
    /* Not complete yet. Every byte given belongs to the header, so the
     * caller may consume all of them and read on. */
    PROXY_PROTOCOL_NEED_MORE,
    PROXY_PROTOCOL_DONE,   /* a header of *used bytes; the rest is data */
    PROXY_PROTOCOL_INVALID /* not a PROXY header, or a malformed one */
} proxy_protocol_status;

struct proxy_protocol_header {
    int version; /* 1 or 2 */
    /* true: source and destination hold the real client's address and
     * the address it connected to (v1 TCP4/TCP6, v2 PROXY over TCP on
     * IPv4/IPv6). false: v2 LOCAL (the balancer's own health check), v1
     * UNKNOWN, or a v2 family or transport without an IP address: the
     * connection's own addresses stand. */
    bool has_address;
    bool local; /* v2 LOCAL command */
    struct sockaddr_storage source, destination;
    socklen_t source_len, destination_len;
};

/* Parse the header at the start of buf[0..len). On DONE, *out is filled
 * and *used says how many bytes it took (at most PROXY_PROTOCOL_MAX). */
proxy_protocol_status proxy_protocol_parse(const unsigned char *buf, size_t len,
                                           struct proxy_protocol_header *out,
                                           size_t *used);

#endif
