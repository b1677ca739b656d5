/* srghn_tool: the C client from the command line, for tests and benchmarks.
 *
 *   srghn_tool [--timeout MS] [--id NAME] [--keys SERVER_CERT CLIENT_SECRET_CERT] info ENDPOINT
 *       print the server's INFO_OK object
 *   srghn_tool [...] run ENDPOINT       read requests from stdin, one per line, print one JSON reply per line:
 *       "act F1 F2 ..."                 -> {"rc":0,"action":[...],"source":1,"flags":0,"serial":3,"champion":"..."}
 *       "step REWARD TERM TRUNC F1 ..." -> {"rc":0}          (an error: {"rc":CODE,"error":"..."})
 *   srghn_tool [...] bench ENDPOINT OBS_DIM N WARMUP
 *       ACT round trips (N after WARMUP unmeasured ones), as JSON: p50, p90, p99, mean, max and every sample,
 *       in microseconds
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "srghn_client.h"

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

static int run(srghn_client *c) {
    char line[1 << 16];
    float values[4096], action[4096];
    while (fgets(line, sizeof line, stdin)) {
        char *p = line, *end;
        char kind[8] = "";
        int used = 0;
        if (sscanf(p, "%7s%n", kind, &used) != 1) continue;
        p += used;
        size_t n = 0;
        for (float v = strtof(p, &end); end != p && n < 4096; v = strtof(p, &end)) {
            values[n++] = v;
            p = end;
        }
        int rc;
        if (strcmp(kind, "act") == 0) {
            srghn_action reply = {.action = action, .capacity = 4096};
            rc = srghn_act(c, values, n, &reply);
            if (rc == SRGHN_OK) {
                printf("{\"rc\":0,\"action\":[");
                for (size_t i = 0; i < reply.count; i++) printf("%s%.9g", i ? "," : "", reply.action[i]);
                printf("],\"source\":%d,\"flags\":%d,\"serial\":%u,\"champion\":", reply.source, reply.flags,
                       reply.serial);
                print_json_string(reply.champion);
                printf("}\n");
                fflush(stdout);
                continue;
            }
        } else if (strcmp(kind, "step") == 0 && n >= 3) {
            rc = srghn_step(c, values[0], values[1] != 0, values[2] != 0, values + 3, n - 3);
            if (rc == SRGHN_OK) {
                printf("{\"rc\":0}\n");
                fflush(stdout);
                continue;
            }
        } else {
            fprintf(stderr, "unknown request: %s", line);
            return 2;
        }
        printf("{\"rc\":%d,\"error\":", rc);
        print_json_string(srghn_last_error(c));
        printf("}\n");
        fflush(stdout);
    }
    return 0;
}

static int bench(srghn_client *c, size_t obs_dim, int n, int warmup) {
    float obs[4096] = {0}, action[4096];
    double *rtt = malloc(sizeof(double) * (size_t)n);
    if (!rtt || obs_dim > 4096) return 2;
    for (size_t i = 0; i < obs_dim; i++) obs[i] = 0.01f * (float)i;
    srghn_action reply = {.action = action, .capacity = 4096};
    for (int i = 0; i < warmup + n; i++) {
        double t0 = now_us();
        int rc = srghn_act(c, obs, obs_dim, &reply);
        double t1 = now_us();
        if (rc != SRGHN_OK) {
            fprintf(stderr, "act failed (%d): %s\n", rc, srghn_last_error(c));
            return 1;
        }
        if (i >= warmup) rtt[i - warmup] = t1 - t0;
    }
    double sum = 0;
    printf("{\"samples_us\":[");
    for (int i = 0; i < n; i++) {
        sum += rtt[i];
        printf("%s%.2f", i ? "," : "", rtt[i]);
    }
    qsort(rtt, (size_t)n, sizeof *rtt, compare);
    printf("],\"n\":%d,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"mean_us\":%.1f,\"max_us\":%.1f}\n", n,
           rtt[n / 2], rtt[(int)(n * 0.9)], rtt[(int)(n * 0.99)], sum / n, rtt[n - 1]);
    free(rtt);
    return 0;
}

int main(int argc, char **argv) {
    int timeout = 2000, i = 1;
    const char *id = NULL, *server_cert = NULL, *client_cert = NULL;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) timeout = atoi(argv[++i]);
        else if (strcmp(argv[i], "--id") == 0 && i + 1 < argc) id = argv[++i];
        else if (strcmp(argv[i], "--keys") == 0 && i + 2 < argc) {
            server_cert = argv[++i];
            client_cert = argv[++i];
        } else break;
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "usage: srghn_tool [--timeout MS] [--id NAME] [--keys SERVER CLIENT] "
                        "info|run|bench ENDPOINT [OBS_DIM N WARMUP]\n");
        return 2;
    }
    const char *command = argv[i], *endpoint = argv[i + 1];
    srghn_client *c = srghn_connect_with(endpoint, timeout, id, server_cert, client_cert);
    if (!c) {
        fprintf(stderr, "cannot connect to %s (or read the CURVE certificates)\n", endpoint);
        return 2;
    }
    int rc = 2;
    if (strcmp(command, "info") == 0) {
        srghn_info info;
        rc = srghn_get_info(c, &info);
        if (rc == SRGHN_OK) printf("%s\n", info.json);
        else fprintf(stderr, "info failed (%d): %s\n", rc, srghn_last_error(c));
        rc = rc ? 1 : 0;
    } else if (strcmp(command, "run") == 0) {
        rc = run(c);
    } else if (strcmp(command, "bench") == 0 && i + 4 < argc) {
        rc = bench(c, (size_t)atoi(argv[i + 2]), atoi(argv[i + 3]), atoi(argv[i + 4]));
    } else {
        fprintf(stderr, "unknown command %s\n", command);
    }
    srghn_close(c);
    return rc;
}
