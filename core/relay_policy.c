/*
 * relay_policy.c - see relay_policy.h.
 */
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "relay_policy.h"
#include "smtp_session.h"

/* user@[192.0.2.1]: local when the literal is the address the client
 * connected to (RFC 5321 4.1.3, as Postfix does for its own addresses). */
static bool
literal_is_local(const struct session *s, const char *lit, size_t len)
{
    char text[INET6_ADDRSTRLEN];
    unsigned char want[16], got[16];
    bool v6 = len > 5 && strncasecmp(lit, "IPv6:", 5) == 0;

    if (v6) {
        lit += 5;
        len -= 5;
    }
    if (len >= sizeof(text))
        return false;
    memcpy(text, lit, len);
    text[len] = '\0';
    int family = v6 ? AF_INET6 : AF_INET;
    return inet_pton(family, text, got) == 1 &&
           inet_pton(family, s->local_ip, want) == 1 &&
           memcmp(got, want, v6 ? 16 : 4) == 0;
}

static bool
domain_is_local(const struct session *s, const char *addr)
{
    const char *at = strrchr(addr, '@');
    if (!at)
        return false;
    const char *domain = at + 1;
    size_t len = strlen(domain);
    if (len > 2 && domain[0] == '[' && domain[len - 1] == ']')
        return literal_is_local(s, domain + 1, len - 2);
    return config_is_local_domain(s->cfg, domain, len);
}

bool
relay_policy_allows(const struct session *s, const char *addr)
{
    if (!strchr(addr, '@'))
        return true; /* <Postmaster> (RFC 5321 4.5.1) */
    return domain_is_local(s, addr) || s->auth_user ||
           cidr_match(s->cfg->relay_networks, s->cfg->n_relay_networks,
                      (const struct sockaddr *)&s->conn.peer);
}
