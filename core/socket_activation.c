/*
 * socket_activation.c - listening sockets from systemd (see
 * socket_activation.h).
 *
 * A socket is matched to a listener by what it is bound to
 * (getsockname), not by its position or FileDescriptorName=: the main
 * configuration stays the one place that says what postern listens on,
 * and a postern.socket that disagrees with it shows in the log instead of
 * silently serving another port.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"
#include "socket_activation.h"

#define MAX_INHERITED 64

static int inherited[MAX_INHERITED]; /* -1: claimed or closed */
static unsigned n_inherited;

unsigned
socket_activation_take(void)
{
    int n = sd_listen_fds(1);

    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        if (n_inherited == MAX_INHERITED ||
            sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
            log_event(LOG_LEVEL_WARNING, NULL, "inherited_socket_ignored",
                      "fd=%d reason=%s", fd,
                      n_inherited == MAX_INHERITED ? "too_many"
                                                   : "not_a_listening_stream");
            close(fd);
            continue;
        }
        /* the same flags as a socket of our own (listener.c) */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        inherited[n_inherited++] = fd;
    }
    return n_inherited;
}

/* Is fd bound to lc's address and port? */
static bool
bound_to(int fd, const struct listener_config *lc)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    struct in_addr a4;
    struct in6_addr a6;

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return false;
    if (ss.ss_family == AF_INET && inet_pton(AF_INET, lc->address, &a4) == 1) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        return ntohs(in->sin_port) == lc->port &&
               in->sin_addr.s_addr == a4.s_addr;
    }
    if (ss.ss_family == AF_INET6 &&
        inet_pton(AF_INET6, lc->address, &a6) == 1) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        return ntohs(in6->sin6_port) == lc->port &&
               memcmp(&in6->sin6_addr, &a6, sizeof(a6)) == 0;
    }
    return false;
}

int
socket_activation_claim(const struct listener_config *lc)
{
    for (unsigned i = 0; i < n_inherited; i++)
        if (inherited[i] >= 0 && bound_to(inherited[i], lc)) {
            int fd = inherited[i];
            inherited[i] = -1;
            log_event(LOG_LEVEL_INFO, NULL, "listening",
                      "address=%s port=%d inherited=1",
                      postern_log_value(lc->address), lc->port);
            return fd;
        }
    return -1;
}

void
socket_activation_close_unclaimed(void)
{
    for (unsigned i = 0; i < n_inherited; i++) {
        if (inherited[i] < 0)
            continue;
        log_event(LOG_LEVEL_WARNING, NULL, "inherited_socket_unused",
                  "fd=%d reason=no_listener_with_its_address", inherited[i]);
        close(inherited[i]);
        inherited[i] = -1;
    }
    n_inherited = 0;
}
