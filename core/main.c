/*
 * main.c - the command line: run the daemon, check a configuration, print
 * the hook map or the effective configuration, print a password hash for
 * auth files, or say the version.
 */
#include <crypt.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postern/module.h"

#include "config.h"
#include "config_check.h"
#include "log.h"
#include "postern_build.h"
#include "supervisor.h"

static void
usage(FILE *out)
{
    fprintf(
        out,
        "usage: postern [-c FILE] [--check-config | --print-hooks |\n"
        "                          --print-config]\n"
        "       postern hash-password [yescrypt|bcrypt|sha512crypt]\n"
        "       postern --version | --help\n"
        "\n"
        "  -c, --config FILE   main configuration (JSON); without it the\n"
        "                      built-in defaults are used: 127.0.0.1:2525,\n"
        "                      plugins.d/ and var/spool in the current\n"
        "                      directory\n"
        "  -t, --check-config  validate the configuration, load every\n"
        "                      module and let it check its own config,\n"
        "                      then exit (0 when all is well)\n"
        "      --print-hooks   load the modules as --check-config does and\n"
        "                      print, for each hook point, the module\n"
        "                      instances in the order they run, with the\n"
        "                      plugins.d file of each\n"
        "      --print-config  print the effective main configuration as\n"
        "                      JSON, every default filled in\n"
        "  hash-password       read a password from stdin, print its\n"
        "                      crypt(3) hash for an auth_file line\n"
        "  -V, --version       print the version\n"
        "  -h, --help          this text\n");
}

/* --check-config: 0 or 1 (exit code). */
static int
check_config(const struct config *cfg)
{
    char err[2048];
    size_t n;

    if (services_start(err, sizeof(err)) < 0 ||
        config_check(cfg, &n, err, sizeof(err)) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        return 1;
    }
    printf("postern: configuration %s is valid (%zu module instance%s)\n",
           cfg->source, n, n == 1 ? "" : "s");
    return 0;
}

/* --print-hooks: 0 or 1 (exit code). */
static int
print_hooks(const struct config *cfg)
{
    char err[2048];

    if (services_start(err, sizeof(err)) < 0 ||
        config_print_hooks(cfg, stdout, err, sizeof(err)) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

/* --print-config: 0 or 1 (exit code). */
static int
print_config(const struct config *cfg)
{
    json_t *j = config_to_json(cfg);
    int rc = j && json_dumpf(j, stdout, JSON_INDENT(2)) == 0 &&
                     fputc('\n', stdout) != EOF && fflush(stdout) == 0
                 ? 0
                 : 1;
    if (rc)
        fprintf(stderr, "postern: cannot print the configuration\n");
    json_decref(j);
    return rc;
}

/* Read one line from stdin and print a crypt(3) hash of it. */
static int
hash_password(const char *scheme)
{
    const char *prefix = "$y$"; /* yescrypt: Debian's default */
    if (scheme && strcmp(scheme, "bcrypt") == 0)
        prefix = "$2b$";
    else if (scheme && strcmp(scheme, "sha512crypt") == 0)
        prefix = "$6$";
    else if (scheme && strcmp(scheme, "yescrypt") != 0) {
        fprintf(stderr, "postern: unknown hash scheme %s\n", scheme);
        return 2;
    }
    char password[1024];
    if (!fgets(password, sizeof(password), stdin)) {
        fprintf(stderr, "postern: no password on standard input\n");
        return 1;
    }
    password[strcspn(password, "\r\n")] = '\0';
    if (!*password) {
        fprintf(stderr, "postern: empty password\n");
        return 1;
    }
    const char *salt = crypt_gensalt(prefix, 0, NULL, 0);
    struct crypt_data data;
    memset(&data, 0, sizeof(data));
    const char *hash = salt ? crypt_r(password, salt, &data) : NULL;
    explicit_bzero(password, sizeof(password));
    if (!hash || hash[0] == '*') {
        fprintf(stderr, "postern: hashing failed: %s\n", strerror(errno));
        return 1;
    }
    printf("%s\n", hash);
    explicit_bzero(&data, sizeof(data));
    return 0;
}

/* Long options without a short form. */
enum { OPT_PRINT_HOOKS = 256, OPT_PRINT_CONFIG };

int
main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 't'},
        {"print-hooks", no_argument, NULL, OPT_PRINT_HOOKS},
        {"print-config", no_argument, NULL, OPT_PRINT_CONFIG},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    int mode = 0; /* 0: run; 't' or OPT_PRINT_*: check or print, exit */
    int opt;

    if (argc >= 2 && strcmp(argv[1], "hash-password") == 0)
        return hash_password(argc >= 3 ? argv[2] : NULL);
    while ((opt = getopt_long(argc, argv, "c:tVh", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 't':
        case OPT_PRINT_HOOKS:
        case OPT_PRINT_CONFIG:
            if (mode && mode != opt) {
                fprintf(stderr, "postern: --check-config, --print-hooks and "
                                "--print-config exclude each other\n");
                return 2;
            }
            mode = opt;
            break;
        case 'V':
            printf("postern %s (module ABI %d.%d)\n", POSTERN_VERSION,
                   POSTERN_ABI_MAJOR, POSTERN_ABI_MINOR);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "postern: unexpected argument %s\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    char err[2048];
    struct config *cfg = config_load(config_path, err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "postern: %s\n", err);
        return 1;
    }
    log_set_level(cfg->log_level);

    if (mode == 0) {
        if (config_apply_log(cfg, err, sizeof(err)) < 0) {
            fprintf(stderr, "postern: %s: %s\n", cfg->source, err);
            config_free(cfg);
            return 1;
        }
        return supervisor_run(config_path, cfg); /* it owns cfg */
    }
    int rc = mode == 't'               ? check_config(cfg)
             : mode == OPT_PRINT_HOOKS ? print_hooks(cfg)
                                       : print_config(cfg);
    config_free(cfg);
    return rc;
}
