/* srghn_client: a C client of the srghn control server (wire protocol version 1, docs/protocol.md).
 *
 * One client is one ZeroMQ DEALER socket on the server's control endpoint. Every call sends one request and
 * waits (bounded by the timeout) for the reply with its request id; late replies to earlier requests are
 * skipped. Not thread-safe: use one client per thread.
 *
 *     srghn_client *c = srghn_connect("ipc:///var/lib/srghn/control.sock", 1000);
 *     srghn_info info;             srghn_get_info(c, &info);
 *     float action[8];             srghn_action reply = {.action = action, .capacity = 8};
 *     srghn_act(c, obs, info.obs_dim, &reply);      -> reply.count values, reply.source, reply.champion
 *     srghn_step(c, reward, terminated, truncated, next_obs, info.obs_dim);
 *     srghn_close(c);
 *
 * Return values: SRGHN_OK (0); a positive protocol error code from an ERROR reply (e.g. 6 WRONG_DIMENSION,
 * 15 FORBIDDEN; srghn_last_error() has the server's text); or a negative local error below.
 */
#ifndef SRGHN_CLIENT_H
#define SRGHN_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SRGHN_PROTOCOL_VERSION 1

enum {
    SRGHN_OK = 0,
    SRGHN_ETIMEOUT = -1,  /* no reply within the timeout (server down, restarting, or overloaded) */
    SRGHN_EREPLY = -2,    /* a reply that breaks the protocol (wrong frames, sizes, magic or version) */
    SRGHN_EZMQ = -3,      /* a ZeroMQ call failed (errno is kept in srghn_last_error()) */
    SRGHN_EARG = -4,      /* a bad argument (too small a buffer, a NULL pointer, unreadable key files) */
};

/* Which policy produced an action (ACTION status, byte 0). */
enum { SRGHN_SOURCE_LIVE = 1, SRGHN_SOURCE_LAST_KNOWN_GOOD = 2, SRGHN_SOURCE_SAFE = 3 };
/* Bits of the ACTION status's flags byte. */
enum { SRGHN_FLAG_CLAMPED = 1, SRGHN_FLAG_FALLBACK = 2 };

typedef struct srghn_client srghn_client;

typedef struct {
    float *action;        /* caller's buffer for the action values */
    size_t capacity;      /* its length */
    size_t count;         /* values received (1 for a discrete robot: the action index as a float) */
    uint8_t source;       /* SRGHN_SOURCE_* */
    uint8_t flags;        /* SRGHN_FLAG_* */
    uint32_t serial;      /* increments whenever the server switches the serving policy */
    char champion[256];   /* id of the champion that computed it ("" for the safe action) */
} srghn_action;

typedef struct {
    int protocol;
    int obs_dim;
    int act_dim;          /* floats in an action (1 for a discrete robot) */
    int discrete;
    char robot[64];
    char json[4096];      /* the whole INFO_OK object, as the server sent it (NUL-terminated, cut if longer) */
} srghn_info;

/* Connect to a control endpoint (ipc://PATH, tcp://HOST:PORT, tcp://[::1]:PORT); NULL if the socket cannot be
   made. timeout_ms bounds every call. */
srghn_client *srghn_connect(const char *endpoint, int timeout_ms);
/* Like srghn_connect, with options: routing_id (a printable name the server shows for this robot, or NULL) and
   CURVE certificates (ZeroMQ's ZPL files: the server's public one and this client's secret one, or NULLs). */
srghn_client *srghn_connect_with(const char *endpoint, int timeout_ms, const char *routing_id,
                                 const char *server_cert, const char *client_secret_cert);
void srghn_close(srghn_client *client);

int srghn_get_info(srghn_client *client, srghn_info *info);
int srghn_act(srghn_client *client, const float *obs, size_t obs_dim, srghn_action *reply);
int srghn_step(srghn_client *client, float reward, int terminated, int truncated, const float *next_obs,
               size_t obs_dim);

/* The text of the last error (the server's message for a positive code). */
const char *srghn_last_error(const srghn_client *client);

#ifdef __cplusplus
}
#endif
#endif
