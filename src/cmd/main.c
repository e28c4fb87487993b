/* main: the command line (the README, Command line): run, check, cert, version. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "mtlsd/base/defaults.h"
#include "mtlsd/base/exit.h"
#include "mtlsd/base/file.h"
#include "mtlsd/base/json_alloc.h"
#include "mtlsd/base/log.h"
#include "mtlsd/base/netaddr.h"
#include "mtlsd/cmd/certgen.h"
#include "mtlsd/cmd/cmd_iptables.h"
#include "mtlsd/cmd/inject_cli.h"
#include "mtlsd/cmd/server.h"
#include "mtlsd/cmd/webhook.h"
#include "mtlsd/config/app_probes.h"
#include "mtlsd/config/config.h"
#include "mtlsd/tls/tls.h"

static const char usage_text[] =
    "usage: mtlsd [run] [--config FILE] [--log-level debug|info|warn|error] [--log-format "
    "json|text]\n"
    "       mtlsd check [--config FILE]\n"
    "       mtlsd cert ca --out DIR [--trust-domain TD] [--days N]\n"
    "       mtlsd cert issue --ca DIR --out DIR (--spiffe-id URI | --dns NAME)... [--days N]\n"
    "       mtlsd iptables [--print | --apply | --clean] [options]\n"
    "       mtlsd inject [-f FILE] [--config FILE] [-o json|yaml]\n"
    "       mtlsd webhook --listen ADDR --certs DIR [--config FILE]\n"
    "       mtlsd wait-ready [--admin ADDR] [--timeout DURATION]\n"
    "       mtlsd version\n"
    "\n"
    "  run      serve as a mutual TLS sidecar (the default command)\n"
    "  check    validate the configuration and the certificate files; exit 0 when both are\n"
    "           good, 1 when the certificates are bad, 2 when the configuration is\n"
    "  cert     make a development CA and certificates (see mtlsd cert --help)\n"
    "  iptables print or apply the pod's interception rules (see mtlsd iptables --help)\n"
    "  inject   add the sidecar to the pods of Kubernetes manifests (see mtlsd inject --help)\n"
    "  webhook  serve the admission webhook that injects pods as they are created (HTTPS on\n"
    "           ADDR, tls.crt and tls.key from DIR; --config is the injector configuration)\n"
    "  wait-ready  wait until the sidecar's /ready says 200 (a postStart hook that holds\n"
    "           the application's containers until the proxy serves)\n"
    "  version  print the versions of mtlsd and its libraries\n"
    "\n"
    "run and check read the JSON configuration from the environment variable MTLSD_CONFIG\n"
    "when it is set (it replaces --config FILE), else from --config FILE.\n";

static int usage(FILE *out, int code) {
  fputs(usage_text, out);
  return code;
}

struct common_opts {
  const char *config;
  const char *listen; /* webhook only */
  const char *certs;  /* webhook only */
  enum log_level level;
  enum log_format format;
};

/* Parses the options shared by run and check; returns -1 to go on, else an exit code. */
static int parse_common(struct common_opts *opts, int argc, char **argv, const char *cmd) {
  static const struct option long_opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"log-level", required_argument, NULL, 'l'},
      {"log-format", required_argument, NULL, 'f'},
      {"listen", required_argument, NULL, 'L'},
      {"certs", required_argument, NULL, 'C'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  opts->config = NULL;
  opts->listen = NULL;
  opts->certs = NULL;
  opts->level = LOG_INFO;
  opts->format = LOG_FORMAT_TEXT;
  optind = 1;
  opterr = 0;
  for (;;) {
    int c = getopt_long(argc, argv, "c:h", long_opts, NULL);
    if (c == -1) {
      break;
    }
    switch (c) {
      case 'c':
        opts->config = optarg;
        break;
      case 'l':
        if (!log_parse_level(&opts->level, optarg)) {
          fprintf(stderr, "mtlsd %s: --log-level: \"%s\" is not debug, info, warn or error\n", cmd,
                  optarg);
          return MTLSD_EXIT_USAGE;
        }
        break;
      case 'f':
        if (!log_parse_format(&opts->format, optarg)) {
          fprintf(stderr, "mtlsd %s: --log-format: \"%s\" is not json or text\n", cmd, optarg);
          return MTLSD_EXIT_USAGE;
        }
        break;
      case 'L':
      case 'C':
        if (strcmp(cmd, "webhook") != 0) {
          fprintf(stderr, "mtlsd %s: --%s is an option of mtlsd webhook\n", cmd,
                  c == 'L' ? "listen" : "certs");
          return usage(stderr, MTLSD_EXIT_USAGE);
        }
        *(c == 'L' ? &opts->listen : &opts->certs) = optarg;
        break;
      case 'h':
        return usage(stdout, MTLSD_EXIT_OK);
      default:
        fprintf(stderr, "mtlsd %s: unknown or incomplete option \"%s\"\n", cmd, argv[optind - 1]);
        return usage(stderr, MTLSD_EXIT_USAGE);
    }
  }
  if (optind < argc) {
    fprintf(stderr, "mtlsd %s: unexpected argument \"%s\"\n", cmd, argv[optind]);
    return usage(stderr, MTLSD_EXIT_USAGE);
  }
  log_configure(opts->level, opts->format);
  return -1;
}

/* The environment variable an injected sidecar gets its configuration from (the README, Command
 * line); its name stands in for the file's in every message. */
static const char kConfigEnv[] = "MTLSD_CONFIG";
/* The application containers' original probes, put there by the injector (docs/admin.md). */
static const char kProbesEnv[] = "MTLSD_APP_PROBES";
/* The application's own metrics endpoint (its prometheus.io/port and path), which the
 * health port's /metrics serves with mtlsd's (docs/admin.md). */
static const char kMetricsEnv[] = "MTLSD_APP_METRICS";

/* Adds MTLSD_APP_PROBES to |cfg|; false after printing why not. */
static bool load_app_probes(struct config *cfg, const char *cmd) {
  const char *env = getenv(kProbesEnv);
  if (env == NULL || env[0] == '\0') {
    return true;
  }
  char err[1024];
  if (!config_parse_app_probes(cfg, kProbesEnv, env, strlen(env), err, sizeof(err))) {
    fprintf(stderr, "%s\n", err);
    return false;
  }
  if (cfg->app_probe_count > 0 && !cfg->health.enabled) {
    fprintf(stderr,
            "mtlsd %s: %s holds %zu probe%s, but health.listen is not set: they are served on "
            "the health port\n",
            cmd, kProbesEnv, cfg->app_probe_count, cfg->app_probe_count == 1 ? "" : "s");
    return false;
  }
  return true;
}

/* Adds MTLSD_APP_METRICS to |cfg|; false after printing why not. */
static bool load_app_metrics(struct config *cfg, const char *cmd) {
  const char *env = getenv(kMetricsEnv);
  if (env == NULL || env[0] == '\0') {
    return true;
  }
  char err[1024];
  if (!config_parse_app_metrics(cfg, kMetricsEnv, env, strlen(env), err, sizeof(err))) {
    fprintf(stderr, "%s\n", err);
    return false;
  }
  if (!cfg->health.enabled) {
    fprintf(stderr,
            "mtlsd %s: %s is set, but health.listen is not set: the application's metrics are "
            "served on the health port's /metrics\n",
            cmd, kMetricsEnv);
    return false;
  }
  return true;
}

/* Parses run's or check's options and loads the configuration: -1 with |*out| and
 * |*path| set, or the exit code to end with. */
static int load_config(struct config **out, const char **path, int argc, char **argv,
                       const char *cmd) {
  struct common_opts opts;
  int r = parse_common(&opts, argc, argv, cmd);
  if (r >= 0) {
    return r;
  }
  /* MTLSD_CONFIG, when set, replaces --config: the image's default command names its
   * built-in file, and an injected pod's environment must win over it. */
  const char *env = getenv(kConfigEnv);
  char err[1024];
  if (env != NULL) {
    if (env[0] == '\0') {
      fprintf(stderr, "mtlsd %s: %s is set but empty (unset it, or give the JSON document)\n", cmd,
              kConfigEnv);
      return MTLSD_EXIT_USAGE;
    }
    if (opts.config != NULL) {
      log_write(LOG_INFO, "main", "configuration from %s, which replaces --config %s", kConfigEnv,
                opts.config);
    }
    *out = config_parse(kConfigEnv, env, strlen(env), err, sizeof(err));
    *path = kConfigEnv;
  } else if (opts.config != NULL) {
    *out = config_load(opts.config, err, sizeof(err));
    *path = opts.config;
  } else {
    fprintf(stderr, "mtlsd %s: --config FILE or the environment variable %s is required\n", cmd,
            kConfigEnv);
    return usage(stderr, MTLSD_EXIT_USAGE);
  }
  if (*out == NULL) {
    fprintf(stderr, "%s\n", err);
    return MTLSD_EXIT_USAGE;
  }
  if (!load_app_probes(*out, cmd) || !load_app_metrics(*out, cmd)) {
    config_free(*out);
    *out = NULL;
    return MTLSD_EXIT_USAGE;
  }
  return -1;
}

static int cmd_run(int argc, char **argv) {
  struct config *cfg;
  const char *path;
  int r = load_config(&cfg, &path, argc, argv, "run");
  if (r >= 0) {
    return r;
  }
  int code = server_run(cfg);
  config_free(cfg);
  return code;
}

static bool any_cert_file_present(const struct config *cfg) {
  const char *names[] = {cfg->certs.cert_file, cfg->certs.key_file, cfg->certs.ca_file};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    char path[PATH_MAX];
    struct stat st;
    if (file_path_join(path, sizeof(path), cfg->certs.dir, names[i]) && stat(path, &st) == 0) {
      return true;
    }
  }
  return false;
}

static int cmd_check(int argc, char **argv) {
  struct config *cfg;
  const char *path;
  int r = load_config(&cfg, &path, argc, argv, "check");
  if (r >= 0) {
    return r;
  }
  char err[1024];
  printf("%s: configuration ok: %zu listener%s, %u worker%s, trust domain %s\n", path,
         cfg->listener_count, cfg->listener_count == 1 ? "" : "s", cfg->workers,
         cfg->workers == 1 ? "" : "s", cfg->trust_domain);
  if (cfg->app_probe_count > 0) {
    printf("%s: %zu application probe%s\n", kProbesEnv, cfg->app_probe_count,
           cfg->app_probe_count == 1 ? "" : "s");
  }
  if (cfg->app_metrics.port != 0) {
    printf("%s: the application's metrics at port %u, path %s\n", kMetricsEnv,
           cfg->app_metrics.port, cfg->app_metrics.path);
  }
  int code = MTLSD_EXIT_OK;
  if (!any_cert_file_present(cfg)) {
    printf("certificates: none in %s yet (mtlsd starts and waits for them)\n", cfg->certs.dir);
  } else {
    struct tls_certset *set = tls_certset_load(cfg, NULL, err, sizeof(err));
    if (set == NULL) {
      fprintf(stderr, "%s: certificates in %s: %s\n", path, cfg->certs.dir, err);
      code = MTLSD_EXIT_FAILED;
    } else {
      long long left = (long long)(tls_certset_not_after(set) - time(NULL));
      printf("certificates: ok: %s, expires in %lldd %lldh\n", tls_certset_primary_identity(set),
             left / 86400, left % 86400 / 3600);
      tls_certset_free(set);
    }
  }
  config_free(cfg);
  return code;
}

/* Asks |addr|'s /ready once; true on 200. |why| gets the answer's first line otherwise. */
static bool ready_once(const struct hostport *addr, char *why, size_t why_len) {
  struct sockaddr_storage ss;
  socklen_t len;
  netaddr_to_sockaddr(&ss, &len, addr);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(why, why_len, "socket: %s", strerror(errno));
    return false;
  }
  struct timeval tv = {.tv_sec = 1};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  static const char kRequest[] = "GET /ready HTTP/1.0\r\nHost: mtlsd\r\n\r\n";
  char answer[512];
  ssize_t n = -1;
  if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
    snprintf(why, why_len, "connect: %s", strerror(errno));
  } else if (send(fd, kRequest, sizeof(kRequest) - 1, MSG_NOSIGNAL) < 0) {
    snprintf(why, why_len, "send: %s", strerror(errno));
  } else if ((n = recv(fd, answer, sizeof(answer) - 1, MSG_WAITALL)) <= 0) {
    snprintf(why, why_len, "no answer");
  }
  close(fd);
  if (n <= 0) {
    return false;
  }
  answer[n] = '\0';
  if (strncmp(answer, "HTTP/1.", 7) == 0 && strncmp(answer + 8, " 200 ", 5) == 0) {
    return true;
  }
  /* The body says why (after the blank line). */
  const char *body = strstr(answer, "\r\n\r\n");
  snprintf(why, why_len, "%.200s", body != NULL ? body + 4 : answer);
  why[strcspn(why, "\r\n")] = '\0';
  return false;
}

/* mtlsd wait-ready: the postStart hook of a sidecar that is not a native one; the
 * kubelet starts the next container only once it returns. */
static int cmd_wait_ready(int argc, char **argv) {
  const char *admin = "127.0.0.1:" MTLSD_TEXT(MTLSD_ADMIN_PORT);
  duration_ms timeout = 120000;
  for (int i = 1; i < argc; i++) {
    bool has_value = i + 1 < argc;
    if (strcmp(argv[i], "--admin") == 0 && has_value) {
      admin = argv[++i];
    } else if (strcmp(argv[i], "--timeout") == 0 && has_value &&
               duration_parse(&timeout, NULL, argv[i + 1])) {
      i++;
    } else {
      fprintf(stderr, "mtlsd wait-ready: unexpected or invalid argument \"%s\"\n", argv[i]);
      return MTLSD_EXIT_USAGE;
    }
  }
  struct hostport addr;
  const char *err = NULL;
  if (!netaddr_parse_hostport(&addr, &err, admin) || !addr.host_is_ip) {
    fprintf(stderr, "mtlsd wait-ready: --admin \"%s\": expected IP:PORT\n", admin);
    return MTLSD_EXIT_USAGE;
  }
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  char why[256] = "not asked yet";
  for (;;) {
    if (ready_once(&addr, why, sizeof(why))) {
      return MTLSD_EXIT_OK;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t elapsed =
        (int64_t)(now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if (elapsed >= (int64_t)timeout) {
      fprintf(stderr, "mtlsd wait-ready: %s not ready after %lld ms: %s\n", admin,
              (long long)elapsed, why);
      return MTLSD_EXIT_FAILED;
    }
    struct timespec pause = {.tv_nsec = 200L * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
}

static int cmd_version(int argc, char **argv) {
  (void)argv;
  if (argc > 1) {
    fprintf(stderr, "mtlsd version: takes no arguments\n");
    return MTLSD_EXIT_USAGE;
  }
  printf("mtlsd %s\n", MTLSD_VERSION);
  printf("%s\n", tls_library_version());
  printf("libuv %s\n", uv_version_string());
  printf("cJSON %s\n", cJSON_Version());
  return MTLSD_EXIT_OK;
}

static int cmd_webhook(int argc, char **argv) {
  struct common_opts opts;
  int code = parse_common(&opts, argc, argv, "webhook");
  if (code >= 0) {
    return code;
  }
  if (opts.listen == NULL || opts.certs == NULL) {
    fprintf(stderr, "mtlsd webhook: --listen ADDR and --certs DIR are required\n");
    return usage(stderr, MTLSD_EXIT_USAGE);
  }
  struct webhook_options wo = {.certs_dir = opts.certs, .config = opts.config};
  const char *why = NULL;
  if (!netaddr_parse_hostport(&wo.listen, &why, opts.listen)) {
    fprintf(stderr, "mtlsd webhook: --listen: \"%s\": %s\n", opts.listen, why);
    return MTLSD_EXIT_USAGE;
  }
  return webhook_run(&wo);
}

int main(int argc, char **argv) {
  json_alloc_install();
  if (argc < 2) {
    /* "mtlsd" alone is "mtlsd run" when the environment holds the configuration. */
    return getenv(kConfigEnv) != NULL ? cmd_run(argc, argv) : usage(stderr, MTLSD_EXIT_USAGE);
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "run") == 0) {
    return cmd_run(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "check") == 0) {
    return cmd_check(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "cert") == 0) {
    return certgen_main(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "iptables") == 0) {
    return iptables_main(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "inject") == 0) {
    return inject_main(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "webhook") == 0) {
    return cmd_webhook(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "wait-ready") == 0) {
    return cmd_wait_ready(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    return cmd_version(argc - 1, argv + 1);
  }
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    return usage(stdout, MTLSD_EXIT_OK);
  }
  if (cmd[0] == '-') {
    /* "mtlsd --config F" is "mtlsd run --config F". */
    return cmd_run(argc, argv);
  }
  fprintf(stderr, "mtlsd: unknown command \"%s\"\n", cmd);
  return usage(stderr, MTLSD_EXIT_USAGE);
}
