/*
 * test_shared_state.c - core/shared_state.c under client_limit.c with real
 * processes: children forked after shared_state_create() count on the one
 * mapping, so the limits hold exactly across them; a child killed while
 * holding connections gives them back through shared_state_release_slot();
 * a child killed while holding the lock does not wedge the others.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "client_limit.h"
#include "config.h"
#include "shared_state.h"

#define CHILDREN 3

static struct sockaddr_storage
sa(const char *ip)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof ss);
    if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, ip,
                       &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        fail_msg("bad test address %s", ip);
    return ss;
}

static client_limit_verdict
acquire(const struct config *cfg, const char *ip, bool *per_ip)
{
    struct sockaddr_storage ss = sa(ip);
    return client_limit_acquire(cfg, (const struct sockaddr *)&ss, per_ip);
}

static void
release(const char *ip, bool per_ip)
{
    struct sockaddr_storage ss = sa(ip);
    client_limit_release((const struct sockaddr *)&ss, per_ip);
}

/* Rates off, 192.0.2.0/24 counted, 198.51.100.0/24 exempt. */
static struct config *
config_with(unsigned total, unsigned per_ip)
{
    struct config *cfg = config_defaults();
    assert_non_null(cfg);
    cfg->limits.connections = total;
    cfg->limits.connections_per_ip = per_ip;
    cfg->limits.connection_rate = 0;
    cfg->limits.message_rate = 0;
    cfg->limits.auth_failure_rate = 0;
    cfg->limits.exempt_networks[0].family = AF_INET;
    inet_pton(AF_INET, "198.51.100.0", cfg->limits.exempt_networks[0].addr);
    cfg->limits.exempt_networks[0].prefix = 24;
    cfg->limits.n_exempt_networks = 1;
    return cfg;
}

static struct config *
fresh_state(unsigned total, unsigned per_ip)
{
    char err[256];
    struct config *cfg = config_with(total, per_ip);
    shared_state_destroy();
    assert_int_equal(shared_state_create(cfg, err, sizeof err), 0);
    shared_state_enter_slot(0);
    return cfg;
}

static void
write_byte(int fd, unsigned char b)
{
    ssize_t w = write(fd, &b, 1);
    (void)w;
}

/* A byte from the child, or -1 if it died first. */
static int
read_byte(int fd)
{
    unsigned char b;
    return read(fd, &b, 1) == 1 ? b : -1;
}

static int
wait_child(pid_t pid)
{
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

/* Each child asks for more than the limits allow, all at once (released
 * from one pipe); together they get exactly what the limits allow. */
static void
test_limits_hold_across_processes(void **state)
{
    struct config *cfg = fresh_state(12, 5);
    int go[2], done[2];
    pid_t pids[CHILDREN];

    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    for (int i = 0; i < CHILDREN; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            shared_state_enter_slot((unsigned)i + 1);
            unsigned char got = 0;
            bool per_ip;
            if (read_byte(go[0]) < 0)
                _exit(90);
            /* 10 tries from one counted address, 10 exempt */
            for (int n = 0; n < 10; n++) {
                if (acquire(cfg, "192.0.2.1", &per_ip) == CLIENT_LIMIT_OK)
                    got += 1;
                if (acquire(cfg, "198.51.100.9", &per_ip) == CLIENT_LIMIT_OK)
                    got += 16;
            }
            write_byte(done[1], got);
            pause(); /* hold them until killed */
            _exit(0);
        }
    }
    for (int i = 0; i < CHILDREN; i++)
        write_byte(go[1], 1);
    unsigned per_addr = 0, exempt = 0;
    for (int i = 0; i < CHILDREN; i++) {
        int got = read_byte(done[0]);
        assert_true(got >= 0);
        per_addr += (unsigned)got % 16;
        exempt += (unsigned)got / 16;
    }
    /* per address: exactly connections_per_ip; the rest of the total went
     * to the exempt address */
    assert_int_equal(per_addr, 5);
    assert_int_equal(exempt, 12 - 5);
    assert_int_equal(client_limit_total(), 12);
    bool per_ip;
    assert_int_equal(acquire(cfg, "192.0.2.200", &per_ip), CLIENT_LIMIT_TOTAL);

    for (int i = 0; i < CHILDREN; i++) {
        kill(pids[i], SIGKILL);
        wait_child(pids[i]);
        shared_state_release_slot((unsigned)i + 1);
    }
    assert_int_equal(client_limit_total(), 0);
    for (int n = 0; n < 5; n++)
        assert_int_equal(acquire(cfg, "192.0.2.1", &per_ip), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "192.0.2.1", &per_ip), CLIENT_LIMIT_PER_IP);
    for (int n = 0; n < 5; n++)
        release("192.0.2.1", true);
    assert_int_equal(client_limit_total(), 0);
    close(go[0]);
    close(go[1]);
    close(done[0]);
    close(done[1]);
    config_free(cfg);
}

/* Children take and give back connections as fast as they can, and keep
 * their own count of what is open per address in shared memory: it never
 * passes connections_per_ip, and at the end everything is free. */
static void
test_churn_never_passes_limit(void **state)
{
    struct config *cfg = fresh_state(1000, 3);
    static const char *const addrs[] = {"192.0.2.10", "192.0.2.11",
                                        "2001:db8:5::1", "2001:db8:5::2"};
    /* [0..2]: open per key (the two IPv6 addresses share a /64) */
    unsigned *open_now = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(open_now != MAP_FAILED);
    pid_t pids[CHILDREN];

    for (int i = 0; i < CHILDREN; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            shared_state_enter_slot((unsigned)i + 1);
            int held[4] = {0};
            unsigned seed = (unsigned)i * 7919u + 1;
            for (int n = 0; n < 10000; n++) {
                seed = seed * 1103515245u + 12345u;
                int a = (int)((seed >> 16) % 4), k = a < 2 ? a : 2;
                bool per_ip;
                if ((seed >> 8) & 1 || held[a] == 0) {
                    if (acquire(cfg, addrs[a], &per_ip) != CLIENT_LIMIT_OK)
                        continue;
                    if (__atomic_add_fetch(&open_now[k], 1, __ATOMIC_SEQ_CST) >
                        3)
                        _exit(1);
                    held[a]++;
                } else {
                    __atomic_sub_fetch(&open_now[k], 1, __ATOMIC_SEQ_CST);
                    release(addrs[a], true);
                    held[a]--;
                }
            }
            for (int a = 0; a < 4; a++)
                while (held[a]-- > 0) {
                    __atomic_sub_fetch(&open_now[a < 2 ? a : 2], 1,
                                       __ATOMIC_SEQ_CST);
                    release(addrs[a], true);
                }
            _exit(0);
        }
    }
    for (int i = 0; i < CHILDREN; i++) {
        int status = wait_child(pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    assert_int_equal(client_limit_total(), 0);
    bool per_ip;
    for (int n = 0; n < 3; n++)
        assert_int_equal(acquire(cfg, "2001:db8:5::9", &per_ip),
                         CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "2001:db8:5::a", &per_ip),
                     CLIENT_LIMIT_PER_IP);
    for (int n = 0; n < 3; n++)
        release("2001:db8:5::9", true);
    munmap(open_now, 4096);
    config_free(cfg);
}

/* A worker killed with connections open: the supervisor gives them back
 * with release_slot, and nothing of another worker's. */
static void
test_release_slot_after_kill(void **state)
{
    struct config *cfg = fresh_state(100, 3);
    int ready[2];
    bool per_ip;

    assert_int_equal(pipe(ready), 0);
    /* the parent (slot 0) holds one of 192.0.2.7 */
    assert_int_equal(acquire(cfg, "192.0.2.7", &per_ip), CLIENT_LIMIT_OK);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        shared_state_enter_slot(5);
        int got = 0;
        got += acquire(cfg, "192.0.2.7", &per_ip) == CLIENT_LIMIT_OK;
        got += acquire(cfg, "192.0.2.7", &per_ip) == CLIENT_LIMIT_OK;
        got += acquire(cfg, "192.0.2.8", &per_ip) == CLIENT_LIMIT_OK;
        got += acquire(cfg, "198.51.100.1", &per_ip) == CLIENT_LIMIT_OK;
        write_byte(ready[1], (unsigned char)got);
        pause();
        _exit(0);
    }
    assert_int_equal(read_byte(ready[0]), 4);
    assert_int_equal(client_limit_total(), 5);
    assert_int_equal(acquire(cfg, "192.0.2.7", &per_ip), CLIENT_LIMIT_PER_IP);
    kill(pid, SIGKILL);
    wait_child(pid);
    /* dead, but still counted until the supervisor says so */
    assert_int_equal(client_limit_total(), 5);
    shared_state_release_slot(5);
    assert_int_equal(client_limit_total(), 1);
    assert_int_equal(acquire(cfg, "192.0.2.7", &per_ip), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "192.0.2.7", &per_ip), CLIENT_LIMIT_OK);
    /* the parent's own one still counts: 3 open */
    assert_int_equal(acquire(cfg, "192.0.2.7", &per_ip), CLIENT_LIMIT_PER_IP);
    for (int n = 0; n < 3; n++)
        release("192.0.2.7", true);
    assert_int_equal(client_limit_total(), 0);
    /* releasing again, or an unused slot, changes nothing */
    shared_state_release_slot(5);
    shared_state_release_slot(200);
    assert_int_equal(client_limit_total(), 0);
    close(ready[0]);
    close(ready[1]);
    config_free(cfg);
}

/* A worker killed while it holds the lock, half-way through booking a
 * connection: the next locker gets the lock (EOWNERDEAD), repairs, and the
 * counts are right once the slot is released. */
static void
test_kill_while_holding_lock(void **state)
{
    struct config *cfg = fresh_state(100, 2);
    int ready[2];
    bool per_ip;

    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        shared_state_enter_slot(9);
        int got = acquire(cfg, "192.0.2.50", &per_ip) == CLIENT_LIMIT_OK;
        if (!shared_state_lock(cfg))
            _exit(2);
        /* an insert of a new client without the rest of the booking */
        unsigned char key[16] = {[10] = 0xff, [11] = 0xff, 192, 0, 2, 51};
        shared_state_client(key, true, 1.0);
        write_byte(ready[1], (unsigned char)got);
        pause();
        _exit(0);
    }
    assert_int_equal(read_byte(ready[0]), 1);
    kill(pid, SIGKILL);
    wait_child(pid);
    /* without a robust lock this would hang */
    assert_int_equal(acquire(cfg, "192.0.2.50", &per_ip), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "192.0.2.50", &per_ip), CLIENT_LIMIT_PER_IP);
    assert_int_equal(client_limit_total(), 2);
    shared_state_release_slot(9);
    assert_int_equal(client_limit_total(), 1);
    assert_int_equal(acquire(cfg, "192.0.2.50", &per_ip), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "192.0.2.51", &per_ip), CLIENT_LIMIT_OK);
    release("192.0.2.50", true);
    release("192.0.2.50", true);
    release("192.0.2.51", true);
    assert_int_equal(client_limit_total(), 0);
    close(ready[0]);
    close(ready[1]);
    config_free(cfg);
}

/* The table is bounded: far more addresses than it holds come and go
 * (rate state only), and connections are still counted right. */
static void
test_table_bounded(void **state)
{
    struct config *cfg = fresh_state(10, 2);
    cfg->limits.message_rate = 60;
    size_t cap = shared_state_capacity();
    bool per_ip;

    assert_true(cap >= 256);
    assert_int_equal(acquire(cfg, "192.0.2.1", &per_ip), CLIENT_LIMIT_OK);
    for (unsigned n = 0; n < 4 * cap; n++) {
        struct sockaddr_storage ss = sa("2001:db8::");
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_addr.s6_addr[4] = (unsigned char)(n >> 16);
        in6->sin6_addr.s6_addr[5] = (unsigned char)(n >> 8);
        in6->sin6_addr.s6_addr[6] = (unsigned char)n;
        assert_int_equal(client_limit_message(cfg, (struct sockaddr *)&ss),
                         CLIENT_LIMIT_OK);
    }
    assert_int_equal(shared_state_capacity(), cap);
    /* new clients still find room: a fresh one is limited */
    struct sockaddr_storage fresh = sa("2001:db8:ffff::1");
    for (int n = 0; n < 60; n++)
        assert_int_equal(client_limit_message(cfg, (struct sockaddr *)&fresh),
                         CLIENT_LIMIT_OK);
    assert_int_equal(client_limit_message(cfg, (struct sockaddr *)&fresh),
                     CLIENT_LIMIT_MESSAGE_RATE);
    /* the connection held meanwhile was never forgotten */
    assert_int_equal(acquire(cfg, "192.0.2.1", &per_ip), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "192.0.2.1", &per_ip), CLIENT_LIMIT_PER_IP);
    release("192.0.2.1", true);
    release("192.0.2.1", true);
    assert_int_equal(client_limit_total(), 0);
    config_free(cfg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_hold_across_processes),
        cmocka_unit_test(test_churn_never_passes_limit),
        cmocka_unit_test(test_release_slot_after_kill),
        cmocka_unit_test(test_kill_while_holding_lock),
        cmocka_unit_test(test_table_bounded),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    shared_state_destroy();
    return rc;
}
