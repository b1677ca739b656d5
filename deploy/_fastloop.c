/* The server's socket loop in C: wait on the control socket (and the server's other sockets), receive a robot's
 * request, hand its frames to the Python handler (srghn.deploy.serving.Serving.on_request) and send the frames it
 * returns -- without pyzmq's Python layer, which costs about 35 us of a round trip here (a polling pyzmq echo
 * answers in 79-89 us, a polling C echo in 45-49).
 *
 * It drives the sockets pyzmq made (their libzmq handles, Socket.underlying), through the libzmq pyzmq loaded:
 * the functions are looked up at run time (bind()), so this module links against nothing but Python and builds
 * wherever a C compiler and Python's headers are. What it needs of libzmq is the stable 4.x ABI declared below.
 * Waiting and busy polling run without the interpreter lock; the handler runs with it.
 * See srghn/deploy/fastloop.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
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

#define MAX_SOCKETS 8

typedef struct {
    PyObject_HEAD
    zmq_pollitem_t items[MAX_SOCKETS]; /* the control socket first, then the others */
    int n;
    PyObject *handler;
    long long busy_poll_ns, busy_until;
    unsigned long long handled;
} Loop;

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
    static char *kwlist[] = {"control", "others", "handler", "busy_poll_us", NULL};
    unsigned long long control;
    PyObject *others, *handler;
    long long busy_poll_us = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KOO|L", kwlist, &control, &others, &handler, &busy_poll_us))
        return -1;
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
    return 0;
}

static void Loop_dealloc(Loop *self) {
    Py_XDECREF(self->handler);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Receive the waiting request, give it to the handler, send its reply. 1: answered, 0: nothing was waiting,
 * -1: an exception is set. With the interpreter lock. */
static int answer(Loop *self) {
    void *sock = self->items[0].socket;
    PyObject *frames = PyList_New(0);
    if (frames == NULL)
        return -1;
    zmq_msg_t msg;
    int more = 1, failed = 0;
    while (more) {
        zmq.msg_init(&msg);
        if (zmq.msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) { /* only the first part can be missing: all come at once */
            int e = zmq.errno_();
            zmq.msg_close(&msg);
            Py_ssize_t got = PyList_GET_SIZE(frames);
            Py_DECREF(frames);
            if ((e == EAGAIN || e == EINTR) && got == 0 && !failed)
                return 0;
            if (!failed)
                zmq_error("receiving a control request");
            return -1;
        }
        more = zmq.msg_more(&msg);
        if (!failed) { /* after a failure the rest of the message is still received, so the next one starts clean */
            PyObject *frame = PyBytes_FromStringAndSize(zmq.msg_data(&msg), (Py_ssize_t)zmq.msg_size(&msg));
            failed = frame == NULL || PyList_Append(frames, frame) < 0;
            Py_XDECREF(frame);
        }
        zmq.msg_close(&msg);
    }
    if (failed) {
        Py_DECREF(frames);
        return -1;
    }
    PyObject *reply = PyObject_CallOneArg(self->handler, frames);
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
        int rc = 0;
        long long now = now_ns();
        Py_BEGIN_ALLOW_THREADS
        /* spin while in the busy-poll window: a robot's next request is answered without waking from sleep */
        while (now < self->busy_until && now < deadline && (rc = zmq.poll(self->items, self->n, 0)) == 0)
            now = now_ns();
        if (rc == 0)
            rc = zmq.poll(self->items, self->n, now >= deadline ? 0 : (long)((deadline - now + 999999) / 1000000));
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
        if (self->items[0].revents & ZMQ_POLLIN) {
            if (answer(self) < 0)
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

static PyObject *Loop_get_handled(Loop *self, void *closure) {
    return PyLong_FromUnsignedLongLong(self->handled);
}

static PyMethodDef Loop_methods[] = {
    {"serve", (PyCFunction)Loop_serve, METH_O,
     "serve(timeout_ms) -> int: answer robots until another socket is ready (its bit) or the timeout (0)"},
    {NULL},
};

static PyGetSetDef Loop_getset[] = {
    {"handled", (getter)Loop_get_handled, NULL, "control requests answered", NULL},
    {NULL},
};

static PyTypeObject LoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "srghn.deploy._fastloop.Loop",
    .tp_basicsize = sizeof(Loop),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Loop(control, others, handler, busy_poll_us=0): the server's socket loop (libzmq socket handles)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Loop_init,
    .tp_dealloc = (destructor)Loop_dealloc,
    .tp_methods = Loop_methods,
    .tp_getset = Loop_getset,
};

static PyMethodDef module_methods[] = {
    {"bind", bind, METH_VARARGS, "bind(path) -> (major, minor, patch): use the libzmq loaded from path"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastloop", "The server's socket loop in C (see srghn.deploy.fastloop).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__fastloop(void) {
    if (PyType_Ready(&LoopType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Loop", (PyObject *)&LoopType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
