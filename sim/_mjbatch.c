/* One control step of every running MuJoCo episode of a runner, in one call (srghn/sim/fast_mujoco.py).
 *
 * For each episode j: copy the pre-step segments of its MjData out (e.g. the torso's x, y), write its action into
 * ctrl (float32 -> float64, as numpy's assignment does), run mj_step nstep times and mj_rnePostConstraint (what
 * gymnasium's MujocoEnv.do_simulation does), then copy the post-step segments out (qpos, qvel, cfrc_ext, ...). The
 * Python loop this replaces made eight calls into MuJoCo's bindings and numpy per episode and step.
 *
 * It links against nothing but Python: MuJoCo's functions are looked up at run time in the libmujoco the mujoco
 * module loaded (bind()), and every MjModel, MjData and array is passed as an address, so no MuJoCo header is
 * needed and the module builds wherever a C compiler and Python's headers are. The addresses come from the mujoco
 * module's own objects (MjModel._address, MjData._address, the arrays' buffers); the caller keeps those objects
 * alive.
 *
 * A MuJoCo error (mju_error) inside an episode's step costs that episode only: the error handler jumps back here
 * and the episode is reported with MuJoCo's message; the caller discards its environment, as it does when the
 * Python binding raises. The handler is installed for the call and answers only this thread; an error on another
 * thread meanwhile goes to the handler that was installed before (or MuJoCo's default). The interpreter lock is
 * released while the physics runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*mj_fn)(const void *m, void *d);
typedef void (*error_fn)(const char *msg);

static struct {
    mj_fn step, rne;
    error_fn *user_error; /* the address of MuJoCo's global mju_user_error */
    int (*version)(void);
} mj;

static __thread jmp_buf *jump_to;
static __thread char error_message[512];
static error_fn previous_handler;

static void on_error(const char *msg) {
    if (jump_to != NULL) {
        snprintf(error_message, sizeof error_message, "%s", msg);
        longjmp(*jump_to, 1);
    }
    if (previous_handler != NULL) {
        previous_handler(msg);
    }
    fprintf(stderr, "ERROR: %s\n", msg); /* MuJoCo's default: report and exit */
    exit(EXIT_FAILURE);
}

static PyObject *bind(PyObject *self, PyObject *args) {
    (void)self;
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path)) {
        return NULL;
    }
    void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD); /* only the library the mujoco module already loaded */
    if (lib == NULL) {
        PyErr_Format(PyExc_ImportError, "libmujoco is not loaded from %s: %s", path, dlerror());
        return NULL;
    }
    mj.step = (mj_fn)dlsym(lib, "mj_step");
    mj.rne = (mj_fn)dlsym(lib, "mj_rnePostConstraint");
    mj.user_error = (error_fn *)dlsym(lib, "mju_user_error");
    mj.version = (int (*)(void))dlsym(lib, "mj_version");
    if (!mj.step || !mj.rne || !mj.user_error || !mj.version) {
        mj.step = NULL;
        PyErr_Format(PyExc_ImportError, "%s lacks mj_step, mj_rnePostConstraint, mju_user_error or mj_version", path);
        return NULL;
    }
    return PyLong_FromLong(mj.version());
}

/* A C-contiguous buffer of ndim dimensions whose items are one of the struct formats in `formats` (numpy writes
 * uint64 as 'L' or 'Q', int64 as 'l' or 'q', depending on the platform's long) of `itemsize` bytes. */
static int get_buffer(PyObject *obj, Py_buffer *view, const char *formats, Py_ssize_t itemsize, int ndim,
                      int writable, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        return -1;
    }
    const char *format = view->format;
    while (*format == '@' || *format == '=' || *format == '<') {
        format++;
    }
    if (view->ndim != ndim || view->itemsize != itemsize || strlen(format) != 1 || !strchr(formats, *format)) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous %d-d array of %zd-byte items (%s)", name, ndim,
                     itemsize, formats);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* step(ptrs, npre, lens, actions, nstep, rne, out_pre, out_post) -> [(row, message), ...]
 *   ptrs:    (k, 3 + nseg) uint64: MjModel*, MjData*, ctrl, then the source of every segment (npre pre-step first)
 *   lens:    (nseg,) int64 doubles per segment
 *   actions: (k, nu) float32
 *   out_pre: (k, sum of the pre-step lengths) float64; out_post: (k, sum of the others) float64
 * Returns the rows whose step raised a MuJoCo error, with its message. */
static PyObject *step(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_ptrs, *o_lens, *o_actions, *o_pre, *o_post;
    Py_ssize_t npre;
    int nstep, rne;
    if (!PyArg_ParseTuple(args, "OnOOipOO", &o_ptrs, &npre, &o_lens, &o_actions, &nstep, &rne, &o_pre, &o_post)) {
        return NULL;
    }
    if (mj.step == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() MuJoCo first");
        return NULL;
    }
    Py_buffer ptrs, lens, actions, pre, post;
    if (get_buffer(o_ptrs, &ptrs, "QL", 8, 2, 0, "ptrs") < 0) {
        return NULL;
    }
    if (get_buffer(o_lens, &lens, "ql", 8, 1, 0, "lens") < 0) {
        PyBuffer_Release(&ptrs);
        return NULL;
    }
    if (get_buffer(o_actions, &actions, "f", 4, 2, 0, "actions") < 0) {
        PyBuffer_Release(&ptrs), PyBuffer_Release(&lens);
        return NULL;
    }
    if (get_buffer(o_pre, &pre, "d", 8, 2, 1, "out_pre") < 0) {
        PyBuffer_Release(&ptrs), PyBuffer_Release(&lens), PyBuffer_Release(&actions);
        return NULL;
    }
    if (get_buffer(o_post, &post, "d", 8, 2, 1, "out_post") < 0) {
        PyBuffer_Release(&ptrs), PyBuffer_Release(&lens), PyBuffer_Release(&actions), PyBuffer_Release(&pre);
        return NULL;
    }
    Py_ssize_t k = ptrs.shape[0], width = ptrs.shape[1], nseg = lens.shape[0], nu = actions.shape[1];
    const int64_t *len = lens.buf;
    Py_ssize_t pre_w = 0, post_w = 0;
    int bad = width != 3 + nseg || npre < 0 || npre > nseg || actions.shape[0] != k || pre.shape[0] != k
              || post.shape[0] != k || nstep < 1;
    for (Py_ssize_t s = 0; s < nseg && !bad; s++) {
        bad = len[s] < 0;
        *(s < npre ? &pre_w : &post_w) += len[s];
    }
    if (bad || pre.shape[1] != pre_w || post.shape[1] != post_w) {
        PyErr_SetString(PyExc_ValueError, "step: array shapes do not agree");
        PyBuffer_Release(&ptrs), PyBuffer_Release(&lens), PyBuffer_Release(&actions), PyBuffer_Release(&pre);
        PyBuffer_Release(&post);
        return NULL;
    }
    unsigned char *failed = calloc(k ? (size_t)k : 1, 1);
    char (*messages)[sizeof error_message] = calloc(k ? (size_t)k : 1, sizeof error_message);
    if (failed == NULL || messages == NULL) {
        free(failed), free(messages);
        PyBuffer_Release(&ptrs), PyBuffer_Release(&lens), PyBuffer_Release(&actions), PyBuffer_Release(&pre);
        PyBuffer_Release(&post);
        return PyErr_NoMemory();
    }
    const uint64_t *table = ptrs.buf;
    const float *act = actions.buf;
    double *out_pre = pre.buf, *out_post = post.buf;

    Py_BEGIN_ALLOW_THREADS
    error_fn installed = *mj.user_error;
    previous_handler = installed == on_error ? NULL : installed;
    *mj.user_error = on_error;
    for (volatile Py_ssize_t j = 0; j < k; j++) {
        const uint64_t *row = table + j * width;
        const void *m = (const void *)(uintptr_t)row[0];
        void *d = (void *)(uintptr_t)row[1];
        double *ctrl = (double *)(uintptr_t)row[2];
        jmp_buf here;
        jump_to = &here;
        if (setjmp(here) == 0) {
            double *o = out_pre + j * pre_w;
            for (Py_ssize_t s = 0; s < npre; o += len[s], s++) {
                memcpy(o, (const double *)(uintptr_t)row[3 + s], (size_t)len[s] * sizeof(double));
            }
            for (Py_ssize_t a = 0; a < nu; a++) {
                ctrl[a] = (double)act[j * nu + a];
            }
            for (int n = 0; n < nstep; n++) {
                mj.step(m, d);
            }
            if (rne) {
                mj.rne(m, d);
            }
            o = out_post + j * post_w;
            for (Py_ssize_t s = npre; s < nseg; o += len[s], s++) {
                memcpy(o, (const double *)(uintptr_t)row[3 + s], (size_t)len[s] * sizeof(double));
            }
        } else {
            failed[j] = 1;
            memcpy(messages[j], error_message, sizeof error_message);
        }
        jump_to = NULL;
    }
    *mj.user_error = installed;
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&ptrs), PyBuffer_Release(&lens), PyBuffer_Release(&actions), PyBuffer_Release(&pre);
    PyBuffer_Release(&post);
    PyObject *errors = PyList_New(0);
    for (Py_ssize_t j = 0; errors != NULL && j < k; j++) {
        if (failed[j]) {
            PyObject *item = Py_BuildValue("(ns)", j, messages[j]);
            if (item == NULL || PyList_Append(errors, item) < 0) {
                Py_CLEAR(errors);
            }
            Py_XDECREF(item);
        }
    }
    free(failed), free(messages);
    return errors;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, "bind(libmujoco_path) -> mj_version(): look MuJoCo's functions up"},
    {"step", step, METH_VARARGS, "step(ptrs, npre, lens, actions, nstep, rne, out_pre, out_post) -> errors"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mjbatch", "MuJoCo episodes stepped in C", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__mjbatch(void) { return PyModule_Create(&module); }
