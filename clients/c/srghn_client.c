/* srghn_client.c: ACT, STEP and INFO over a ZeroMQ DEALER socket, exactly as docs/protocol.md specifies. */
#include "srghn_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define HEADER_SIZE 16
#define MAX_FRAMES 8
#define MAX_FRAME 65536

enum { ACT = 1, ACTION = 2, STEP = 3, STEP_OK = 4, INFO = 5, INFO_OK = 6, ERROR_REPLY = 255 };

struct srghn_client {
    void *ctx;
    void *sock;
    int timeout_ms;
    uint64_t next_id;
    char error[1100];
    /* the last reply, frame by frame */
    unsigned char frames[MAX_FRAMES][MAX_FRAME];
    size_t sizes[MAX_FRAMES];
    int count;
};

/* -- little-endian encoding, whatever the host's byte order ------------------------------------------------- */

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void put_f32(unsigned char *p, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static float get_f32(const unsigned char *p) {
    uint32_t v = get_u32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

static int fail(srghn_client *c, int code, const char *message) {
    snprintf(c->error, sizeof c->error, "%s", message);
    return code;
}

static int zmq_fail(srghn_client *c, const char *what) {
    snprintf(c->error, sizeof c->error, "%s: %s", what, zmq_strerror(zmq_errno()));
    return SRGHN_EZMQ;
}

/* -- connecting ------------------------------------------------------------------------------------------------ */

/* The Z85 key of a ZPL certificate line `public-key = "..."` (or secret-key); 0 when found. */
static int read_key(const char *path, const char *name, char out[41]) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    int found = -1;
    while (found && fgets(line, sizeof line, f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (strncmp(p, name, strlen(name)) != 0) continue;
        char *q = strchr(p, '"');
        if (q && strlen(q + 1) >= 41 && q[41] == '"') {
            memcpy(out, q + 1, 40);
            out[40] = '\0';
            found = 0;
        }
    }
    fclose(f);
    return found;
}

srghn_client *srghn_connect_with(const char *endpoint, int timeout_ms, const char *routing_id,
                                 const char *server_cert, const char *client_secret_cert) {
    if (!endpoint) return NULL;
    srghn_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->ctx = zmq_ctx_new();
    c->sock = c->ctx ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
    if (!c->sock) goto error;
    c->timeout_ms = timeout_ms;
    c->next_id = 1;
    int linger = 0, ipv6 = strncmp(endpoint, "tcp://[", 7) == 0;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (ipv6) zmq_setsockopt(c->sock, ZMQ_IPV6, &ipv6, sizeof ipv6);
    if (routing_id && zmq_setsockopt(c->sock, ZMQ_ROUTING_ID, routing_id, strlen(routing_id))) goto error;
    if (server_cert || client_secret_cert) {
        char server[41], public_key[41], secret[41];
        if (!server_cert || !client_secret_cert || read_key(server_cert, "public-key", server) ||
            read_key(client_secret_cert, "public-key", public_key) ||
            read_key(client_secret_cert, "secret-key", secret))
            goto error;
        if (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, server, 40) ||
            zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, public_key, 40) ||
            zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, secret, 40))
            goto error;
    }
    if (zmq_connect(c->sock, endpoint)) goto error;
    return c;
error:
    srghn_close(c);
    return NULL;
}

srghn_client *srghn_connect(const char *endpoint, int timeout_ms) {
    return srghn_connect_with(endpoint, timeout_ms, NULL, NULL, NULL);
}

void srghn_close(srghn_client *c) {
    if (!c) return;
    if (c->sock) zmq_close(c->sock);
    if (c->ctx) zmq_ctx_term(c->ctx);
    free(c);
}

const char *srghn_last_error(const srghn_client *c) { return c ? c->error : "no client"; }

/* -- one request, one reply -------------------------------------------------------------------------------------- */

/* Send the frames of one request; wait for the reply with its id (skipping late replies to earlier ones) and
   leave it in c->frames. Returns SRGHN_OK, the code of an ERROR reply, or a local error. */
static int call(srghn_client *c, int type, const unsigned char *const *payload, const size_t *sizes, int n,
                int expected_type) {
    unsigned char header[HEADER_SIZE] = {'S', 'R', 'G', 'H', SRGHN_PROTOCOL_VERSION, (unsigned char)type, 0, 0};
    uint64_t id = c->next_id++;
    put_u64(header + 8, id);
    if (zmq_send(c->sock, header, HEADER_SIZE, n ? ZMQ_SNDMORE : 0) < 0) return zmq_fail(c, "send");
    for (int i = 0; i < n; i++)
        if (zmq_send(c->sock, payload[i], sizes[i], i + 1 < n ? ZMQ_SNDMORE : 0) < 0) return zmq_fail(c, "send");
    for (;;) {
        zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
        int ready = zmq_poll(&item, 1, c->timeout_ms);
        if (ready < 0) return zmq_fail(c, "poll");
        if (ready == 0) return fail(c, SRGHN_ETIMEOUT, "no reply within the timeout");
        c->count = 0;
        int more = 1;
        while (more) {
            int size = zmq_recv(c->sock, c->count < MAX_FRAMES ? c->frames[c->count] : c->frames[MAX_FRAMES - 1],
                                MAX_FRAME, 0);
            if (size < 0) return zmq_fail(c, "recv");
            if (c->count < MAX_FRAMES) c->sizes[c->count++] = (size_t)size > MAX_FRAME ? MAX_FRAME : (size_t)size;
            size_t len = sizeof more;
            zmq_getsockopt(c->sock, ZMQ_RCVMORE, &more, &len);
        }
        const unsigned char *h = c->frames[0];
        if (c->sizes[0] != HEADER_SIZE || memcmp(h, "SRGH", 4) != 0 || h[4] != SRGHN_PROTOCOL_VERSION)
            return fail(c, SRGHN_EREPLY, "reply without a version-1 header");
        if (get_u64(h + 8) != id) continue; /* the late reply to a request we gave up on */
        if (h[5] == ERROR_REPLY) {
            if (c->count != 3 || c->sizes[1] != 2) return fail(c, SRGHN_EREPLY, "malformed ERROR reply");
            int code = c->frames[1][0] | c->frames[1][1] << 8;
            snprintf(c->error, sizeof c->error, "%.*s", (int)c->sizes[2], (const char *)c->frames[2]);
            return code ? code : SRGHN_EREPLY;
        }
        if (h[5] != expected_type) return fail(c, SRGHN_EREPLY, "reply of an unexpected type");
        return SRGHN_OK;
    }
}

int srghn_act(srghn_client *c, const float *obs, size_t obs_dim, srghn_action *reply) {
    if (!c || !obs || !reply || !reply->action) return SRGHN_EARG;
    if (obs_dim * 4 > MAX_FRAME) return fail(c, SRGHN_EARG, "observation too large");
    unsigned char body[MAX_FRAME];
    for (size_t i = 0; i < obs_dim; i++) put_f32(body + 4 * i, obs[i]);
    const unsigned char *payload[] = {body};
    size_t sizes[] = {obs_dim * 4};
    int rc = call(c, ACT, payload, sizes, 1, ACTION);
    if (rc != SRGHN_OK) return rc;
    if (c->count != 4 || c->sizes[1] % 4 || c->sizes[2] != 8) return fail(c, SRGHN_EREPLY, "malformed ACTION");
    size_t count = c->sizes[1] / 4;
    if (count > reply->capacity) return fail(c, SRGHN_EARG, "action buffer too small");
    for (size_t i = 0; i < count; i++) reply->action[i] = get_f32(c->frames[1] + 4 * i);
    reply->count = count;
    reply->source = c->frames[2][0];
    reply->flags = c->frames[2][1];
    reply->serial = get_u32(c->frames[2] + 4);
    size_t n = c->sizes[3] < sizeof reply->champion - 1 ? c->sizes[3] : sizeof reply->champion - 1;
    memcpy(reply->champion, c->frames[3], n);
    reply->champion[n] = '\0';
    return SRGHN_OK;
}

int srghn_step(srghn_client *c, float reward, int terminated, int truncated, const float *next_obs,
               size_t obs_dim) {
    if (!c || !next_obs) return SRGHN_EARG;
    if (obs_dim * 4 > MAX_FRAME) return fail(c, SRGHN_EARG, "observation too large");
    unsigned char outcome[8] = {0};
    put_f32(outcome, reward);
    outcome[4] = terminated ? 1 : 0;
    outcome[5] = truncated ? 1 : 0;
    unsigned char body[MAX_FRAME];
    for (size_t i = 0; i < obs_dim; i++) put_f32(body + 4 * i, next_obs[i]);
    const unsigned char *payload[] = {outcome, body};
    size_t sizes[] = {8, obs_dim * 4};
    int rc = call(c, STEP, payload, sizes, 2, STEP_OK);
    if (rc == SRGHN_OK && c->count != 1) return fail(c, SRGHN_EREPLY, "malformed STEP_OK");
    return rc;
}

/* The integer after "key": in a flat JSON object (INFO_OK's fields are numbers, strings, booleans, lists). */
static int json_int(const char *json, const char *key, int fallback) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *p = strstr(json, pattern);
    return p ? atoi(p + strlen(pattern)) : fallback;
}

int srghn_get_info(srghn_client *c, srghn_info *info) {
    if (!c || !info) return SRGHN_EARG;
    int rc = call(c, INFO, NULL, NULL, 0, INFO_OK);
    if (rc != SRGHN_OK) return rc;
    if (c->count != 2) return fail(c, SRGHN_EREPLY, "malformed INFO_OK");
    size_t n = c->sizes[1] < sizeof info->json - 1 ? c->sizes[1] : sizeof info->json - 1;
    memcpy(info->json, c->frames[1], n);
    info->json[n] = '\0';
    info->protocol = json_int(info->json, "protocol", 0);
    info->obs_dim = json_int(info->json, "obs_dim", 0);
    info->act_dim = json_int(info->json, "act_dim", 0);
    info->discrete = strstr(info->json, "\"discrete\":true") != NULL;
    info->robot[0] = '\0';
    const char *r = strstr(info->json, "\"robot\":\"");
    if (r) sscanf(r + 9, "%63[^\"]", info->robot);
    return SRGHN_OK;
}
