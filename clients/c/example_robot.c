/* example_robot: a robot control loop on the srghn C client. The robot is a cart-pole simulated right here (the
 * classic equations, as Gymnasium's CartPole-v1 has them): every tick it asks the server for an action, applies
 * it, and reports what followed, so the daemon can follow the robot's dynamics. Ctrl-C stops it.
 *
 *   example_robot ENDPOINT [STEPS [RATE_HZ]]      e.g. example_robot ipc:///var/lib/srghn/control.sock 2000 50
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "srghn_client.h"

static volatile sig_atomic_t stop = 0;
static void on_signal(int sig) { (void)sig; stop = 1; }

typedef struct { float x, x_dot, theta, theta_dot; } cartpole;

/* One 20 ms step of the cart-pole under a push of +-10 N; returns 1 when the pole fell or the cart left. */
static int cartpole_step(cartpole *s, int push_right) {
    const float g = 9.8f, m_cart = 1.0f, m_pole = 0.1f, half_len = 0.5f, tau = 0.02f;
    float force = push_right ? 10.0f : -10.0f, cos_t = cosf(s->theta), sin_t = sinf(s->theta);
    float temp = (force + m_pole * half_len * s->theta_dot * s->theta_dot * sin_t) / (m_cart + m_pole);
    float theta_acc = (g * sin_t - cos_t * temp) /
                      (half_len * (4.0f / 3.0f - m_pole * cos_t * cos_t / (m_cart + m_pole)));
    float x_acc = temp - m_pole * half_len * theta_acc * cos_t / (m_cart + m_pole);
    s->x += tau * s->x_dot;
    s->x_dot += tau * x_acc;
    s->theta += tau * s->theta_dot;
    s->theta_dot += tau * theta_acc;
    return fabsf(s->x) > 2.4f || fabsf(s->theta) > 12.0f * 3.14159265f / 180.0f;
}

static void reset(cartpole *s, unsigned *seed) {
    float *v = &s->x;
    for (int i = 0; i < 4; i++) v[i] = ((float)rand_r(seed) / (float)RAND_MAX - 0.5f) * 0.1f;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: example_robot ENDPOINT [STEPS [RATE_HZ]]\n");
        return 2;
    }
    long steps = argc > 2 ? atol(argv[2]) : 1000;
    double rate = argc > 3 ? atof(argv[3]) : 50.0;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    srghn_client *client = srghn_connect_with(argv[1], 1000, "example-robot", NULL, NULL);
    if (!client) return 2;
    srghn_info info;
    int rc = srghn_get_info(client, &info);
    if (rc != SRGHN_OK || strcmp(info.robot, "cartpole") != 0 || info.obs_dim != 4) {
        fprintf(stderr, "this example drives a cartpole; the server says (%d) %s\n", rc,
                rc ? srghn_last_error(client) : info.json);
        srghn_close(client);
        return 1;
    }
    cartpole state;
    unsigned seed = 0;
    reset(&state, &seed);
    float action[1];
    srghn_action reply = {.action = action, .capacity = 1};
    long episode_steps = 0, episodes = 0, timeouts = 0;
    struct timespec tick;
    clock_gettime(CLOCK_MONOTONIC, &tick);
    for (long step = 0; step < steps && !stop; step++) {
        if (rate > 0) { /* a real robot ticks at its control rate */
            tick.tv_nsec += (long)(1e9 / rate);
            while (tick.tv_nsec >= 1000000000L) { tick.tv_nsec -= 1000000000L; tick.tv_sec++; }
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL);
        }
        rc = srghn_act(client, &state.x, 4, &reply);
        if (rc == SRGHN_ETIMEOUT) { /* the server restarts within a second: keep the last action meanwhile */
            timeouts++;
            continue;
        }
        if (rc != SRGHN_OK) {
            fprintf(stderr, "act failed (%d): %s\n", rc, srghn_last_error(client));
            break;
        }
        int done = cartpole_step(&state, action[0] >= 0.5f);
        int truncated = ++episode_steps >= 500;
        rc = srghn_step(client, 1.0f, done, truncated && !done, &state.x, 4);
        if (rc != SRGHN_OK && rc != SRGHN_ETIMEOUT) fprintf(stderr, "step failed (%d)\n", rc);
        if (done || truncated) {
            printf("episode %ld: %ld steps (served by %s)\n", ++episodes, episode_steps,
                   reply.champion[0] ? reply.champion : "the safe action");
            fflush(stdout);
            episode_steps = 0;
            reset(&state, &seed);
        }
    }
    printf("%ld episodes, %ld timeouts\n", episodes, timeouts);
    srghn_close(client);
    return 0;
}
