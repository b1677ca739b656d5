/* The server's socket loop in C: wait on the control socket (and the server's other sockets), receive a robot's
 * request, hand its frames to the Python handler (srghn.deploy.server.serving.Serving.on_request) and send the frames it
 * returns -- without pyzmq's Python layer, which costs about 35 us of a round trip here (a polling pyzmq echo
 * answers in 79-89 us, a polling C echo in 45-49).
 *
 * It drives the sockets pyzmq made (their libzmq handles, Socket.underlying), through the libzmq pyzmq loaded:
 * the functions are looked up at run time (bind()), so this module links against nothing but Python and builds
 * wherever a C compiler and Python's headers are. What it needs of libzmq is the stable 4.x ABI declared below.
 * Waiting and busy polling run without the interpreter lock; the handler runs with it.
 *
 * The lane: a well-formed ACT from a robot that has a route (its serving champion loaded here as a Session, through
 * ONNX Runtime's C API, in the C library the onnxruntime wheel ships) is answered entirely here, without the
 * interpreter lock, when the champion's action is servable as is; the server's bookkeeping for it (counters, the
 * robot's last observation and action) runs in Python after the reply has gone. Everything else -- other requests,
 * bad observations, actions the watchdog would clamp or refuse -- goes to the Python handler as before, which
 * answers it in full. See srghn/deploy/fastloop.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* libzmq 4.x ABI (zmq.h) */
typedef struct { unsigned char _[64] __attribute__((aligned(sizeof(void *)))); } zmq_msg_t;
typedef struct { void *socket; int fd; short events; short revents; } zmq_pollitem_t;
enum { ZMQ_DONTWAIT = 1, ZMQ_SNDMORE = 2, ZMQ_POLLIN = 1 };

static struct {
    int (*poll)(zmq_pollitem_t *, int, long);
    int (*msg_init)(zmq_msg_t *);
    int (*msg_recv)(zmq_msg_t *, void *, int);
    int (*msg_close)(zmq_msg_t *);
    void *(*msg_data)(zmq_msg_t *);
    size_t (*msg_size)(const zmq_msg_t *);
    int (*msg_more)(const zmq_msg_t *);
    int (*send)(void *, const void *, size_t, int);
    int (*errno_)(void);
    const char *(*strerror)(int);
    void (*version)(int *, int *, int *);
} zmq;


/* ONNX Runtime's C API (onnxruntime_c_api.h): OrtGetApiBase()->GetApi(1) returns the table of the functions of API
 * version 1, whose order ONNX Runtime keeps fixed in every release. The entries used here, by position: */
enum {
    ORT_CREATE_STATUS = 0, ORT_GET_ERROR_CODE = 1, ORT_GET_ERROR_MESSAGE = 2, ORT_CREATE_ENV = 3,
    ORT_CREATE_SESSION_FROM_ARRAY = 8, ORT_RUN = 9, ORT_CREATE_SESSION_OPTIONS = 10, ORT_SET_LOG_SEVERITY = 22,
    ORT_SET_INTRA_OP_THREADS = 24, ORT_SET_INTER_OP_THREADS = 25, ORT_CREATE_TENSOR_WITH_DATA = 49,
    ORT_CREATE_CPU_MEMORY_INFO = 69, ORT_RELEASE_STATUS = 93, ORT_RELEASE_SESSION = 95, ORT_RELEASE_VALUE = 96,
    ORT_RELEASE_SESSION_OPTIONS = 100,
};
enum { ORT_LOGGING_LEVEL_ERROR = 3, ORT_ENGINE_ERROR = 5, ORT_FLOAT = 1, ORT_INT64 = 7 };
typedef struct { const void *const *(*get_api)(uint32_t); const char *(*version)(void); } OrtApiBase;
typedef void *OrtStatusPtr; /* NULL: success */

static struct {
    OrtStatusPtr (*create_status)(int, const char *);
    int (*error_code)(const void *);
    const char *(*error_message)(const void *);
    OrtStatusPtr (*create_env)(int, const char *, void **);
    OrtStatusPtr (*create_session_from_array)(const void *, const void *, size_t, const void *, void **);
    OrtStatusPtr (*run)(void *, const void *, const char *const *, const void *const *, size_t, const char *const *,
                        size_t, void **);
    OrtStatusPtr (*create_session_options)(void **);
    OrtStatusPtr (*set_log_severity)(void *, int);
    OrtStatusPtr (*set_intra_op_threads)(void *, int);
    OrtStatusPtr (*set_inter_op_threads)(void *, int);
    OrtStatusPtr (*create_tensor_with_data)(const void *, void *, size_t, const int64_t *, size_t, int, void **);
    OrtStatusPtr (*create_cpu_memory_info)(int, int, void **);
    void (*release_status)(void *);
    void (*release_session)(void *);
    void (*release_value)(void *);
    void (*release_session_options)(void *);
    void *env, *cpu; /* OrtEnv (the process's one, shared with the onnxruntime module), CPU memory info */
    char version[32];
} ort;

/* An exception from a failed ONNX Runtime status (released); NULL is returned for the caller to pass on. */
static void *ort_failed(OrtStatusPtr status, const char *what) {
    PyErr_Format(PyExc_RuntimeError, "ONNX Runtime: %s: %s", what, ort.error_message(status));
    ort.release_status(status);
    return NULL;
}

/* bind_ort(path): use the ONNX Runtime C library at path (the onnxruntime wheel ships it beside its Python module,
 * which has a copy of its own linked in); its version. */
static PyObject *bind_ort(PyObject *self, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path))
        return NULL;
    if (ort.env != NULL)
        return PyUnicode_FromString(ort.version);
    if (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
        return PyErr_Format(PyExc_ImportError, "the lane reads the wire's little-endian floats in place");
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        return PyErr_Format(PyExc_ImportError, "cannot load %s: %s", path, dlerror());
    const OrtApiBase *(*get_base)(void) = (const OrtApiBase *(*)(void))dlsym(lib, "OrtGetApiBase");
    const void *const *api = get_base == NULL ? NULL : get_base()->get_api(1);
    if (api == NULL)
        return PyErr_Format(PyExc_ImportError, "%s has no ONNX Runtime C API (version 1)", path);
    struct { int index; void **slot; } slots[] = {
        {ORT_CREATE_STATUS, (void **)&ort.create_status}, {ORT_GET_ERROR_CODE, (void **)&ort.error_code},
        {ORT_GET_ERROR_MESSAGE, (void **)&ort.error_message}, {ORT_CREATE_ENV, (void **)&ort.create_env},
        {ORT_CREATE_SESSION_FROM_ARRAY, (void **)&ort.create_session_from_array}, {ORT_RUN, (void **)&ort.run},
        {ORT_CREATE_SESSION_OPTIONS, (void **)&ort.create_session_options},
        {ORT_SET_LOG_SEVERITY, (void **)&ort.set_log_severity},
        {ORT_SET_INTRA_OP_THREADS, (void **)&ort.set_intra_op_threads},
        {ORT_SET_INTER_OP_THREADS, (void **)&ort.set_inter_op_threads},
        {ORT_CREATE_TENSOR_WITH_DATA, (void **)&ort.create_tensor_with_data},
        {ORT_CREATE_CPU_MEMORY_INFO, (void **)&ort.create_cpu_memory_info},
        {ORT_RELEASE_STATUS, (void **)&ort.release_status}, {ORT_RELEASE_SESSION, (void **)&ort.release_session},
        {ORT_RELEASE_VALUE, (void **)&ort.release_value},
        {ORT_RELEASE_SESSION_OPTIONS, (void **)&ort.release_session_options},
    };
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++)
        *slots[i].slot = (void *)api[slots[i].index];
    /* the table is the one declared above: a status made by its first entry reads back through the next two */
    OrtStatusPtr probe = ort.create_status(ORT_ENGINE_ERROR, "srghn");
    int same = probe != NULL && ort.error_code(probe) == ORT_ENGINE_ERROR && strcmp(ort.error_message(probe), "srghn") == 0;
    if (probe != NULL)
        ort.release_status(probe);
    if (!same)
        return PyErr_Format(PyExc_ImportError, "%s: the ONNX Runtime C API table is not the one expected", path);
    OrtStatusPtr status = ort.create_env(ORT_LOGGING_LEVEL_ERROR, "srghn", &ort.env);
    if (status == NULL)
        status = ort.create_cpu_memory_info(0 /* device allocator */, 0 /* default memory */, &ort.cpu);
    if (status != NULL) {
        ort.env = NULL;
        return ort_failed(status, "creating its environment");
    }
    snprintf(ort.version, sizeof ort.version, "%s", get_base()->version());
    return PyUnicode_FromString(ort.version);
}

#define MAX_ACTION_BYTES 4096 /* larger actions are left to Python */

/* A champion's policy in ONNX Runtime, with its own input and output buffers, and what makes its action servable
 * as is (the watchdog's check: an index in range, or finite values within the bounds). */
typedef struct {
    PyObject_HEAD
    void *session, *input, *output; /* OrtSession, OrtValues over obs and out */
    float *obs, *low, *high;
    void *out;
    Py_ssize_t obs_dim, act_dim;
    int discrete;
    char input_name[64], output_name[64];
    PyObject *reply_id; /* bytes: the champion's id, the last frame of its replies */
} Session;

static int Session_init(Session *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"model", "obs_dim", "act_dim", "discrete", "low", "high", "input_name", "output_name",
                             "reply_id", NULL};
    Py_buffer model, low, high;
    const char *input_name, *output_name;
    PyObject *reply_id;
    Py_ssize_t obs_dim, act_dim;
    int discrete;
    if (ort.env == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_ort() ONNX Runtime first");
        return -1;
    }
    if (self->session != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Session is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*nnpy*y*ssS", kwlist, &model, &obs_dim, &act_dim, &discrete,
                                     &low, &high, &input_name, &output_name, &reply_id))
        return -1;
    int rc = -1;
    size_t bounds = discrete ? 0 : (size_t)act_dim * sizeof(float);
    if (obs_dim < 1 || act_dim < 1 || (size_t)low.len != bounds || (size_t)high.len != bounds ||
        strlen(input_name) >= sizeof self->input_name || strlen(output_name) >= sizeof self->output_name) {
        PyErr_SetString(PyExc_ValueError, "obs_dim and act_dim >= 1, low and high act_dim float32 each (none when "
                                          "discrete), names under 64 bytes");
        goto done;
    }
    self->obs_dim = obs_dim;
    self->act_dim = act_dim;
    self->discrete = discrete;
    self->obs = PyMem_Calloc((size_t)obs_dim, sizeof(float));
    self->out = PyMem_Calloc(discrete ? 1 : (size_t)act_dim, discrete ? sizeof(int64_t) : sizeof(float));
    self->low = PyMem_Malloc(bounds + 1);
    self->high = PyMem_Malloc(bounds + 1);
    if (self->obs == NULL || self->out == NULL || self->low == NULL || self->high == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(self->low, low.buf, bounds);
    memcpy(self->high, high.buf, bounds);
    strcpy(self->input_name, input_name);
    strcpy(self->output_name, output_name);
    void *options = NULL, *session = NULL;
    OrtStatusPtr status = ort.create_session_options(&options);
    /* as srghn.controller.onnx_policy.OnnxPolicy: one thread, errors only */
    if (status == NULL)
        status = ort.set_intra_op_threads(options, 1);
    if (status == NULL)
        status = ort.set_inter_op_threads(options, 1);
    if (status == NULL)
        status = ort.set_log_severity(options, ORT_LOGGING_LEVEL_ERROR);
    if (status == NULL) {
        Py_BEGIN_ALLOW_THREADS
        status = ort.create_session_from_array(ort.env, model.buf, (size_t)model.len, options, &session);
        Py_END_ALLOW_THREADS
    }
    ort.release_session_options(options);
    if (status != NULL) {
        ort_failed(status, "loading the model");
        goto done;
    }
    self->session = session;
    int64_t in_shape[2] = {1, obs_dim}, out_shape[2] = {1, act_dim};
    status = ort.create_tensor_with_data(ort.cpu, self->obs, (size_t)obs_dim * sizeof(float), in_shape, 2, ORT_FLOAT,
                                         &self->input);
    if (status == NULL)
        status = discrete ? ort.create_tensor_with_data(ort.cpu, self->out, sizeof(int64_t), out_shape, 1, ORT_INT64,
                                                        &self->output)
                          : ort.create_tensor_with_data(ort.cpu, self->out, (size_t)act_dim * sizeof(float), out_shape,
                                                        2, ORT_FLOAT, &self->output);
    if (status != NULL) {
        ort_failed(status, "binding the buffers");
        goto done;
    }
    Py_INCREF(reply_id);
    self->reply_id = reply_id;
    rc = 0;
done:
    PyBuffer_Release(&model);
    PyBuffer_Release(&low);
    PyBuffer_Release(&high);
    return rc;
}

static void Session_dealloc(Session *self) {
    if (self->input != NULL)
        ort.release_value(self->input);
    if (self->output != NULL)
        ort.release_value(self->output);
    if (self->session != NULL)
        ort.release_session(self->session);
    PyMem_Free(self->obs);
    PyMem_Free(self->out);
    PyMem_Free(self->low);
    PyMem_Free(self->high);
    Py_XDECREF(self->reply_id);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The action for an observation (obs_dim little-endian float32, finite) written to action (act_dim float32 as the
 * wire carries them; one for a discrete index) when it is servable as is: 1; otherwise (out of bounds, not finite,
 * not an index in range, or ONNX Runtime failed) 0. Without the interpreter lock. */
static int session_act(Session *s, const char *obs, char *action) {
    memcpy(s->obs, obs, (size_t)s->obs_dim * sizeof(float));
    const char *in_name = s->input_name, *out_name = s->output_name;
    OrtStatusPtr status = ort.run(s->session, NULL, &in_name, (const void *const *)&s->input, 1, &out_name, 1,
                                  &s->output);
    if (status != NULL) {
        ort.release_status(status);
        return 0;
    }
    if (s->discrete) {
        int64_t index = *(int64_t *)s->out;
        if (index < 0 || index >= s->act_dim)
            return 0;
        float value = (float)index;
        memcpy(action, &value, sizeof value);
        return 1;
    }
    const float *out = s->out;
    for (Py_ssize_t i = 0; i < s->act_dim; i++)
        if (!(s->low[i] <= out[i] && out[i] <= s->high[i])) /* NaN fails both */
            return 0;
    memcpy(action, out, (size_t)s->act_dim * sizeof(float));
    return 1;
}

static Py_ssize_t action_size(const Session *s) { return s->discrete ? (Py_ssize_t)sizeof(float) : s->act_dim * (Py_ssize_t)sizeof(float); }

/* act(obs) -> bytes | None: the servable action for an observation, as the lane would serve it (one thread at a
 * time: the session's buffers are its own). */
static PyObject *Session_act(Session *self, PyObject *arg) {
    Py_buffer obs;
    if (PyObject_GetBuffer(arg, &obs, PyBUF_SIMPLE) < 0)
        return NULL;
    if (obs.len != self->obs_dim * (Py_ssize_t)sizeof(float)) {
        PyBuffer_Release(&obs);
        return PyErr_Format(PyExc_ValueError, "an observation is %zd bytes", self->obs_dim * (Py_ssize_t)sizeof(float));
    }
    char action[MAX_ACTION_BYTES];
    int ok = action_size(self) <= (Py_ssize_t)sizeof action;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        ok = session_act(self, obs.buf, action);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&obs);
    if (!ok)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(action, action_size(self));
}

#define MAX_SOCKETS 8

#define HELD 4       /* parts of a request received before it is known whether the lane answers it */
#define HEADER_SIZE 16 /* srghn.deploy.wire.protocol.HEADER */
#define STATUS_SIZE 8  /* srghn.deploy.wire.protocol.ACTION_STATUS */

typedef struct {
    PyObject *identity; /* bytes: the robot's ROUTER identity */
    Session *session;   /* the champion serving it */
} Route;

typedef struct {
    PyObject_HEAD
    zmq_pollitem_t items[MAX_SOCKETS]; /* the control socket first, then the others */
    int n;
    PyObject *handler;
    long long busy_poll_ns, busy_until;
    unsigned long long handled, lane_answered, oversize;
    /* the whole-message limit, checked while the parts arrive: past max_bytes or max_frames (of the parts after
     * the routing envelope: the identity, and a REQ's empty delimiter) the rest is received and dropped here, and
     * the handler is told the message's size */
    Py_ssize_t max_bytes;
    int max_frames;
    /* the lane: routes by identity (open addressing, a power of two long; 0: off), the served callback */
    Route *routes;
    size_t route_slots;
    Py_ssize_t route_count;
    char act_prefix[8], action_prefix[8], status[STATUS_SIZE];
    Py_ssize_t obs_len;
    PyObject *served;
    /* the parts of the request received last (held: how many; more: whether parts follow them) */
    zmq_msg_t held[HELD];
    int held_n, held_more;
    /* what the lane answered last, for the served callback */
    Route *answered_route;
    char answered_action[MAX_ACTION_BYTES];
    long long answered_ns;
} Loop;

static uint64_t identity_hash(const char *data, size_t len) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)data[i]) * 1099511628211ULL;
    return h;
}

/* The route of an identity, or NULL. Reads only bytes objects the table holds: safe without the interpreter lock
 * on the serving thread, the only one that changes the table. */
static Route *find_route(Loop *self, const char *identity, size_t len) {
    if (self->route_slots == 0)
        return NULL;
    size_t mask = self->route_slots - 1;
    for (size_t i = identity_hash(identity, len) & mask;; i = (i + 1) & mask) {
        Route *r = &self->routes[i];
        if (r->identity == NULL)
            return NULL;
        if ((size_t)PyBytes_GET_SIZE(r->identity) == len && memcmp(PyBytes_AS_STRING(r->identity), identity, len) == 0)
            return r;
    }
}

static void clear_routes(Loop *self) {
    for (size_t i = 0; i < self->route_slots; i++) {
        Py_XDECREF(self->routes[i].identity);
        Py_XDECREF((PyObject *)self->routes[i].session);
    }
    PyMem_Free(self->routes);
    self->routes = NULL;
    self->route_slots = 0;
    self->route_count = 0;
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static PyObject *zmq_error(const char *what) {
    int e = zmq.errno_();
    return PyErr_Format(PyExc_OSError, "%s: %s (errno %d)", what, zmq.strerror(e), e);
}

/* bind(path): look libzmq's functions up in the loaded library at path (or its dependencies); its version. */
static PyObject *bind(PyObject *self, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path))
        return NULL;
    void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL)
        return PyErr_Format(PyExc_ImportError, "%s is not loaded: %s", path, dlerror());
    struct { const char *name; void **slot; } names[] = {
        {"zmq_poll", (void **)&zmq.poll}, {"zmq_msg_init", (void **)&zmq.msg_init},
        {"zmq_msg_recv", (void **)&zmq.msg_recv}, {"zmq_msg_close", (void **)&zmq.msg_close},
        {"zmq_msg_data", (void **)&zmq.msg_data}, {"zmq_msg_size", (void **)&zmq.msg_size},
        {"zmq_msg_more", (void **)&zmq.msg_more}, {"zmq_send", (void **)&zmq.send},
        {"zmq_errno", (void **)&zmq.errno_}, {"zmq_strerror", (void **)&zmq.strerror},
        {"zmq_version", (void **)&zmq.version},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].slot = dlsym(lib, names[i].name);
        if (*names[i].slot == NULL) {
            memset(&zmq, 0, sizeof zmq);
            return PyErr_Format(PyExc_ImportError, "%s has no %s", path, names[i].name);
        }
    }
    int major, minor, patch;
    zmq.version(&major, &minor, &patch);
    return Py_BuildValue("(iii)", major, minor, patch);
}

static int Loop_init(Loop *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"control", "others", "handler", "busy_poll_us", "max_bytes", "max_frames", NULL};
    unsigned long long control;
    PyObject *others, *handler;
    long long busy_poll_us = 0;
    Py_ssize_t max_bytes = 0;
    int max_frames = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KOO|Lni", kwlist, &control, &others, &handler, &busy_poll_us,
                                     &max_bytes, &max_frames))
        return -1;
    if (max_bytes < 0 || max_frames < 0) {
        PyErr_SetString(PyExc_ValueError, "max_bytes and max_frames >= 0 (0: no limit)");
        return -1;
    }
    if (zmq.poll == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() libzmq first");
        return -1;
    }
    if (!PyCallable_Check(handler) || busy_poll_us < 0) {
        PyErr_SetString(PyExc_ValueError, "handler must be callable and busy_poll_us >= 0");
        return -1;
    }
    PyObject *seq = PySequence_Fast(others, "others must be a sequence of socket handles");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (control == 0 || n + 1 > MAX_SOCKETS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "a control socket and at most %d others", MAX_SOCKETS - 1);
        return -1;
    }
    memset(self->items, 0, sizeof self->items);
    self->items[0].socket = (void *)(uintptr_t)control;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long handle = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (PyErr_Occurred() || handle == 0) {
            Py_DECREF(seq);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a socket handle is 0");
            return -1;
        }
        self->items[i + 1].socket = (void *)(uintptr_t)handle;
    }
    Py_DECREF(seq);
    for (int i = 0; i <= n; i++)
        self->items[i].events = ZMQ_POLLIN;
    self->n = (int)n + 1;
    Py_INCREF(handler);
    Py_XDECREF(self->handler);
    self->handler = handler;
    self->busy_poll_ns = busy_poll_us * 1000;
    self->max_bytes = max_bytes;
    self->max_frames = max_frames;
    return 0;
}

static void Loop_dealloc(Loop *self) {
    clear_routes(self);
    for (int i = 0; i < self->held_n; i++)
        zmq.msg_close(&self->held[i]);
    Py_XDECREF(self->handler);
    Py_XDECREF(self->served);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Receive the waiting request's first parts (at most HELD) into held; no interpreter lock needed. 1: received,
 * 0: nothing was waiting, -1: failed (errno in *err). */
static int receive_held(Loop *self, int *err) {
    void *sock = self->items[0].socket;
    self->held_n = 0;
    self->held_more = 1;
    while (self->held_more && self->held_n < HELD) {
        zmq_msg_t *msg = &self->held[self->held_n];
        zmq.msg_init(msg);
        if (zmq.msg_recv(msg, sock, ZMQ_DONTWAIT) < 0) { /* only the first part can be missing: all come at once */
            *err = zmq.errno_();
            zmq.msg_close(msg);
            return self->held_n == 0 && (*err == EAGAIN || *err == EINTR) ? 0 : -1;
        }
        self->held_n++;
        self->held_more = zmq.msg_more(msg);
    }
    return 1;
}

static void release_held(Loop *self) {
    for (int i = 0; i < self->held_n; i++)
        zmq.msg_close(&self->held[i]);
    self->held_n = 0;
}

/* Answer the held request in the lane: a well-formed ACT (its identity, a header with the ACT prefix, an
 * observation of the right length, all finite) from a robot with a route, whose champion's action is servable as
 * is. 1: answered, 0: not for the lane, -1: sending failed (errno in *err). No interpreter lock. */
static int lane_answer(Loop *self, int *err) {
    if (self->route_slots == 0 || self->held_n != 3 || self->held_more)
        return 0;
    long long t0 = now_ns();
    zmq_msg_t *id = &self->held[0], *header = &self->held[1], *obs = &self->held[2];
    if (zmq.msg_size(header) != HEADER_SIZE || zmq.msg_size(obs) != (size_t)self->obs_len ||
        memcmp(zmq.msg_data(header), self->act_prefix, sizeof self->act_prefix) != 0)
        return 0;
    Route *route = find_route(self, zmq.msg_data(id), zmq.msg_size(id));
    if (route == NULL)
        return 0;
    const char *data = zmq.msg_data(obs);
    for (Py_ssize_t i = 0; i < self->obs_len; i += (Py_ssize_t)sizeof(float)) {
        float value;
        memcpy(&value, data + i, sizeof value);
        if (!isfinite(value))
            return 0;
    }
    Session *session = route->session;
    if (!session_act(session, data, self->answered_action))
        return 0;
    char reply[HEADER_SIZE];
    memcpy(reply, self->action_prefix, sizeof self->action_prefix);
    memcpy(reply + 8, (const char *)zmq.msg_data(header) + 8, 8); /* the request's id */
    self->answered_ns = now_ns() - t0;
    self->answered_route = route;
    struct { const void *data; size_t size; } parts[] = {
        {zmq.msg_data(id), zmq.msg_size(id)}, {reply, sizeof reply},
        {self->answered_action, (size_t)action_size(session)}, {self->status, sizeof self->status},
        {PyBytes_AS_STRING(session->reply_id), (size_t)PyBytes_GET_SIZE(session->reply_id)},
    };
    size_t n = sizeof parts / sizeof parts[0];
    for (size_t i = 0; i < n; i++)
        if (zmq.send(self->items[0].socket, parts[i].data, parts[i].size, i + 1 < n ? ZMQ_SNDMORE : 0) < 0 &&
            (*err = zmq.errno_()) != EAGAIN)
            return -1;
    return 1;
}

/* After the lane answered: the served callback (the server's bookkeeping), with the interpreter lock. */
static int lane_served(Loop *self) {
    Route *route = self->answered_route;
    Session *session = route->session;
    PyObject *identity = route->identity, *obs = NULL, *action = NULL, *result = NULL;
    Py_INCREF(identity);
    Py_INCREF(session);
    obs = PyBytes_FromStringAndSize(zmq.msg_data(&self->held[2]), (Py_ssize_t)zmq.msg_size(&self->held[2]));
    action = PyBytes_FromStringAndSize(self->answered_action, action_size(session));
    if (obs != NULL && action != NULL)
        result = PyObject_CallFunction(self->served, "OOOL", identity, obs, action, self->answered_ns);
    Py_DECREF(identity);
    Py_DECREF(session);
    Py_XDECREF(obs);
    Py_XDECREF(action);
    self->lane_answered++;
    self->handled++;
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 1;
}

/* Receive and drop the rest of a message (its parts are all there: ZeroMQ delivers a message whole), counting
 * them into *bytes and *count. 0, or -1 with errno set. No interpreter lock needed. */
static int discard_rest(void *sock, long long *bytes, long long *count) {
    zmq_msg_t msg;
    int more = 1;
    while (more) {
        zmq.msg_init(&msg);
        if (zmq.msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
            errno = zmq.errno_();
            zmq.msg_close(&msg);
            return -1;
        }
        more = zmq.msg_more(&msg);
        *bytes += (long long)zmq.msg_size(&msg);
        *count += 1;
        zmq.msg_close(&msg);
    }
    return 0;
}

/* discard(socket) -> (bytes, parts): drop the rest of the message being received on a libzmq socket handle
 * (the pyzmq loop's way past the whole-message limit: no Python object per part). */
static PyObject *discard(PyObject *module, PyObject *args) {
    unsigned long long handle;
    if (!PyArg_ParseTuple(args, "K", &handle))
        return NULL;
    if (zmq.msg_recv == NULL)
        return PyErr_Format(PyExc_RuntimeError, "bind() libzmq first");
    long long bytes = 0, count = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = discard_rest((void *)(uintptr_t)handle, &bytes, &count);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return zmq_error("discarding the rest of a message");
    return Py_BuildValue("(LL)", bytes, count);
}

/* Give the held request (and the parts that follow) to the handler and send its reply. 1: answered, -1: an
 * exception is set. With the interpreter lock. Past the whole-message limit the parts are no longer kept: the
 * handler gets those kept and (bytes, parts) of the whole message, and answers OVERSIZE. */
static int answer(Loop *self) {
    void *sock = self->items[0].socket;
    PyObject *frames = PyList_New(0);
    if (frames == NULL)
        return -1;
    int failed = 0;
    /* the message's parts: not the identity, nor a REQ delimiter (an empty part right after it) */
    long long bytes = 0, count = self->held_n >= 2 && zmq.msg_size(&self->held[1]) == 0 ? -2 : -1;
    for (int i = 0; i < self->held_n && !failed; i++) {
        PyObject *frame = PyBytes_FromStringAndSize(zmq.msg_data(&self->held[i]),
                                                    (Py_ssize_t)zmq.msg_size(&self->held[i]));
        failed = frame == NULL || PyList_Append(frames, frame) < 0;
        Py_XDECREF(frame);
        bytes += i > 0 ? (long long)zmq.msg_size(&self->held[i]) : 0;
        count++;
    }
    int over = self->max_bytes > 0 && (bytes > self->max_bytes || (self->max_frames > 0 && count > self->max_frames));
    zmq_msg_t msg;
    int more = self->held_more;
    while (more && !over) {
        zmq.msg_init(&msg);
        if (zmq.msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
            zmq.msg_close(&msg);
            Py_DECREF(frames);
            if (!failed)
                zmq_error("receiving a control request");
            return -1;
        }
        more = zmq.msg_more(&msg);
        bytes += (long long)zmq.msg_size(&msg);
        count++;
        over = self->max_bytes > 0 && (bytes > self->max_bytes || (self->max_frames > 0 && count > self->max_frames));
        if (!failed && !over) { /* after a failure the rest is still received, so the next message starts clean */
            PyObject *frame = PyBytes_FromStringAndSize(zmq.msg_data(&msg), (Py_ssize_t)zmq.msg_size(&msg));
            failed = frame == NULL || PyList_Append(frames, frame) < 0;
            Py_XDECREF(frame);
        }
        zmq.msg_close(&msg);
    }
    if (over && more) {
        int rc, e = 0;
        Py_BEGIN_ALLOW_THREADS
        rc = discard_rest(sock, &bytes, &count);
        e = errno;
        Py_END_ALLOW_THREADS
        if (rc < 0) {
            Py_DECREF(frames);
            errno = e;
            if (!failed)
                PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    if (failed) {
        Py_DECREF(frames);
        return -1;
    }
    PyObject *reply;
    if (over) {
        self->oversize++;
        reply = PyObject_CallFunction(self->handler, "OLL", frames, bytes, count);
    } else
        reply = PyObject_CallOneArg(self->handler, frames);
    Py_DECREF(frames);
    if (reply == NULL)
        return -1;
    PyObject *seq = PySequence_Fast(reply, "the handler must return a list of frames");
    Py_DECREF(reply);
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(seq);
            return -1;
        }
        /* a ROUTER drops what it cannot route (ROUTER_MANDATORY 0): a send fails only on a closed socket */
        int rc = zmq.send(sock, view.buf, (size_t)view.len, i + 1 < n ? ZMQ_SNDMORE : 0);
        PyBuffer_Release(&view);
        if (rc < 0 && zmq.errno_() != EAGAIN) {
            Py_DECREF(seq);
            zmq_error("sending a control reply");
            return -1;
        }
    }
    Py_DECREF(seq);
    self->handled++;
    return 1;
}

/* serve(timeout_ms): answer robots until one of the other sockets has something or timeout_ms has passed; the
 * ready others as a bit mask (bit i: others[i]), 0 at the timeout or after a signal. After each answer it keeps
 * polling for busy_poll_us before it sleeps again. */
static PyObject *Loop_serve(Loop *self, PyObject *arg) {
    double timeout_ms = PyFloat_AsDouble(arg);
    if (timeout_ms == -1.0 && PyErr_Occurred())
        return NULL;
    long long deadline = now_ns() + (long long)(timeout_ms > 0 ? timeout_ms * 1e6 : 0);
    for (;;) {
        int rc = 0, got = 0, lane = 0, err = 0;
        long long now = now_ns();
        Py_BEGIN_ALLOW_THREADS
        /* spin while in the busy-poll window: a robot's next request is answered without waking from sleep */
        while (now < self->busy_until && now < deadline && (rc = zmq.poll(self->items, self->n, 0)) == 0)
            now = now_ns();
        if (rc == 0)
            rc = zmq.poll(self->items, self->n, now >= deadline ? 0 : (long)((deadline - now + 999999) / 1000000));
        if (rc > 0 && (self->items[0].revents & ZMQ_POLLIN)) {
            got = receive_held(self, &err);
            if (got == 1)
                lane = lane_answer(self, &err);
        }
        Py_END_ALLOW_THREADS
        if (rc < 0) {
            if (zmq.errno_() != EINTR)
                return zmq_error("polling the server's sockets");
            if (PyErr_CheckSignals() < 0)
                return NULL;
            return PyLong_FromLong(0); /* the caller looks at the flags its signal handlers set */
        }
        unsigned long mask = 0;
        for (int i = 1; i < self->n; i++)
            if (self->items[i].revents & ZMQ_POLLIN)
                mask |= 1UL << (i - 1);
        if (got != 0) {
            int answered = -1;
            if (got < 0 || lane < 0) {
                errno = err;
                zmq_error(got < 0 ? "receiving a control request" : "sending a control reply");
            } else
                answered = lane == 1 ? lane_served(self) : answer(self);
            release_held(self);
            if (answered < 0)
                return NULL;
            if (self->busy_poll_ns)
                self->busy_until = now_ns() + self->busy_poll_ns;
        }
        if (mask)
            return PyLong_FromUnsignedLong(mask);
        if (now_ns() >= deadline)
            return PyLong_FromLong(0);
    }
}

/* lane(act_prefix, action_prefix, obs_len, served): what a well-formed ACT looks like and the callback
 * served(identity, observation, action, handling_ns) the lane calls after each answer. */
static PyObject *Loop_lane(Loop *self, PyObject *args) {
    Py_buffer act, action;
    Py_ssize_t obs_len;
    PyObject *served;
    if (!PyArg_ParseTuple(args, "y*y*nO", &act, &action, &obs_len, &served))
        return NULL;
    PyObject *result = NULL;
    if (act.len != 8 || action.len != 8 || obs_len < 1 || !PyCallable_Check(served)) {
        PyErr_SetString(PyExc_ValueError, "8-byte prefixes, obs_len >= 1 and a callable");
    } else {
        clear_routes(self);
        memcpy(self->act_prefix, act.buf, 8);
        memcpy(self->action_prefix, action.buf, 8);
        self->obs_len = obs_len;
        Py_INCREF(served);
        Py_XSETREF(self->served, served);
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&act);
    PyBuffer_Release(&action);
    return result;
}

static PyTypeObject SessionType;

/* routes(mapping, status): the lane answers robots by these identities (bytes -> Session) with this ACTION
 * status frame; an empty mapping turns it off. Replaces the routes whole. */
static PyObject *Loop_routes(Loop *self, PyObject *args) {
    PyObject *mapping;
    Py_buffer status;
    if (!PyArg_ParseTuple(args, "O!y*", &PyDict_Type, &mapping, &status))
        return NULL;
    if (status.len != STATUS_SIZE) {
        PyBuffer_Release(&status);
        return PyErr_Format(PyExc_ValueError, "the status frame is %d bytes", STATUS_SIZE);
    }
    memcpy(self->status, status.buf, STATUS_SIZE);
    PyBuffer_Release(&status);
    Py_ssize_t count = PyDict_GET_SIZE(mapping), pos = 0;
    if (count > 0 && self->served == NULL)
        return PyErr_Format(PyExc_RuntimeError, "lane() first");
    PyObject *key, *value;
    while (PyDict_Next(mapping, &pos, &key, &value)) {
        if (!PyBytes_CheckExact(key) || !PyObject_TypeCheck(value, &SessionType))
            return PyErr_Format(PyExc_TypeError, "routes map identities (bytes) to Sessions");
        Session *session = (Session *)value;
        if (session->obs_dim * (Py_ssize_t)sizeof(float) != self->obs_len || action_size(session) > MAX_ACTION_BYTES)
            return PyErr_Format(PyExc_ValueError, "a Session for %zd observation bytes, the lane takes %zd",
                                session->obs_dim * (Py_ssize_t)sizeof(float), self->obs_len);
    }
    clear_routes(self);
    if (count == 0)
        Py_RETURN_NONE;
    size_t slots = 4;
    while (slots < 2 * (size_t)count)
        slots *= 2;
    self->routes = PyMem_Calloc(slots, sizeof(Route));
    if (self->routes == NULL)
        return PyErr_NoMemory();
    self->route_slots = slots;
    pos = 0;
    while (PyDict_Next(mapping, &pos, &key, &value)) {
        size_t i = identity_hash(PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key)) & (slots - 1);
        while (self->routes[i].identity != NULL)
            i = (i + 1) & (slots - 1);
        self->routes[i].identity = Py_NewRef(key);
        self->routes[i].session = (Session *)Py_NewRef(value);
    }
    self->route_count = count;
    Py_RETURN_NONE;
}

static PyObject *Loop_get_handled(Loop *self, void *closure) {
    return PyLong_FromUnsignedLongLong(self->handled);
}

static PyObject *Loop_get_lane_answered(Loop *self, void *closure) {
    return PyLong_FromUnsignedLongLong(self->lane_answered);
}

static PyObject *Loop_get_oversize(Loop *self, void *closure) {
    return PyLong_FromUnsignedLongLong(self->oversize);
}

static PyObject *Loop_get_route_count(Loop *self, void *closure) {
    return PyLong_FromSsize_t(self->route_count);
}

static PyMethodDef Loop_methods[] = {
    {"serve", (PyCFunction)Loop_serve, METH_O,
     "serve(timeout_ms) -> int: answer robots until another socket is ready (its bit) or the timeout (0)"},
    {"lane", (PyCFunction)Loop_lane, METH_VARARGS,
     "lane(act_prefix, action_prefix, obs_len, served): set the lane up (no routes yet)"},
    {"routes", (PyCFunction)Loop_routes, METH_VARARGS,
     "routes(mapping, status): the robots (identity -> Session) the lane answers, and its status frame"},
    {NULL},
};

static PyGetSetDef Loop_getset[] = {
    {"handled", (getter)Loop_get_handled, NULL, "control requests answered", NULL},
    {"lane_answered", (getter)Loop_get_lane_answered, NULL, "of those, answered in the lane", NULL},
    {"route_count", (getter)Loop_get_route_count, NULL, "robots the lane answers", NULL},
    {"oversize", (getter)Loop_get_oversize, NULL, "requests past the whole-message limit (dropped as they came)",
     NULL},
    {NULL},
};

static PyTypeObject LoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "srghn.deploy.server._fastloop.Loop",
    .tp_basicsize = sizeof(Loop),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Loop(control, others, handler, busy_poll_us=0, max_bytes=0, max_frames=0): the server's socket loop "
              "(libzmq socket handles)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Loop_init,
    .tp_dealloc = (destructor)Loop_dealloc,
    .tp_methods = Loop_methods,
    .tp_getset = Loop_getset,
};

static PyMethodDef Session_methods[] = {
    {"act", (PyCFunction)Session_act, METH_O, "act(obs) -> bytes | None: the servable action, as the lane serves it"},
    {NULL},
};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "srghn.deploy.server._fastloop.Session",
    .tp_basicsize = sizeof(Session),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Session(model, obs_dim, act_dim, discrete, low, high, input_name, output_name, reply_id): a "
              "champion's policy in ONNX Runtime for the lane",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Session_init,
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_methods = Session_methods,
};

static PyMethodDef module_methods[] = {
    {"bind", bind, METH_VARARGS, "bind(path) -> (major, minor, patch): use the libzmq loaded from path"},
    {"bind_ort", bind_ort, METH_VARARGS, "bind_ort(path) -> version: use the ONNX Runtime C library at path"},
    {"discard", discard, METH_VARARGS,
     "discard(socket_handle) -> (bytes, parts): drop the rest of the message being received"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastloop", "The server's socket loop in C (see srghn.deploy.server.fastloop).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__fastloop(void) {
    if (PyType_Ready(&LoopType) < 0 || PyType_Ready(&SessionType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Loop", (PyObject *)&LoopType) < 0 ||
        PyModule_AddObjectRef(m, "Session", (PyObject *)&SessionType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
