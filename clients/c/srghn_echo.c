/* srghn_echo: a bare libzmq ROUTER that answers every request with an ACTION-shaped reply and does nothing else:
 * the request's own 16-byte header with the type byte set to ACTION, then zero-filled frames of the given sizes
 * (action, status, champion id). The floor the benchmark compares the control server's ACT round trip against.
 *
 *   srghn_echo ENDPOINT SIZE[,SIZE...] [BUSY_POLL_US]        e.g. srghn_echo ipc:///tmp/echo.sock 4,8,10
 *
 * BUSY_POLL_US: after each reply, keep polling this long before blocking (as the control server's
 * --busy-poll-us), so a busy-polling server is compared with an echo that polls the same way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: srghn_echo ENDPOINT SIZE[,SIZE...] [BUSY_POLL_US]\n");
        return 2;
    }
    long long busy_ns = argc == 4 ? atoll(argv[3]) * 1000LL : 0;
    size_t sizes[16], n = 0;
    for (char *s = strtok(argv[2], ","); s && n < 16; s = strtok(NULL, ",")) sizes[n++] = (size_t)atoi(s);
    static unsigned char zeros[65536], identity[256], header[65536], frame[65536];
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_ROUTER);
    int linger = 0, ipv6 = strncmp(argv[1], "tcp://[", 7) == 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_IPV6, &ipv6, sizeof ipv6);
    if (zmq_bind(sock, argv[1])) {
        fprintf(stderr, "cannot bind %s: %s\n", argv[1], zmq_strerror(zmq_errno()));
        return 1;
    }
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    for (;;) {
        for (long long end = now_ns() + busy_ns; busy_ns && now_ns() < end;)
            if (zmq_poll(&item, 1, 0) > 0) break;
        int id_size = zmq_recv(sock, identity, sizeof identity, 0), more = 1;
        if (id_size < 0) return 1;
        size_t len = sizeof more;
        int header_size = zmq_recv(sock, header, sizeof header, 0);
        for (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len); more; zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len))
            zmq_recv(sock, frame, sizeof frame, 0);
        if (header_size >= 6) header[5] = 2; /* ACTION */
        zmq_send(sock, identity, (size_t)id_size, ZMQ_SNDMORE);
        zmq_send(sock, header, header_size < 0 ? 0 : (size_t)header_size, n ? ZMQ_SNDMORE : 0);
        for (size_t i = 0; i < n; i++) zmq_send(sock, zeros, sizes[i], i + 1 < n ? ZMQ_SNDMORE : 0);
    }
}
