/* threadpool_db._sight: what a borrow records for the leak detector, in C; and the handle's
 * with-block methods (handle_methods, at the end of this file).
 *
 * The same answer as leaks.LeakDetector._sight_python (pure Python, the fallback
 * when this module was not built), at a fraction of the cost: in Python every frame field is a
 * descriptor call (about 25 ns each on CPython 3.11), and the site alone took about 0.3 us.
 *
 * Sight(prefix, depth, limit, every, rate) is called with no arguments on the borrowing
 * thread, from the pool's getconn (a Python function in threadpool_db). It returns a sighting,
 * a Site: a read-only sequence of four, like the pure-Python path's tuple
 *   [0] code, [1] lasti, [2] frame id: the first frame, from sys._getframe(depth) outwards,
 *       whose file starts with no `prefix` (a str, or a tuple of them: threadpool_db's own
 *       folder, and those of a framework layered on the pool, such as SQLAlchemy's);
 *   [3] the stack, ((code, lasti), ...) of that frame and its callers, innermost first, at
 *       most `limit` of them: for every borrow when `every` is true, else for a share of them
 *       (a 32-bit xorshift draw below rate * 2**32); else None.
 * or None when the whole stack is ours. One small object a borrow (a tuple and two ints would
 * be three, and their allocation was most of the cost). No frame object is kept (a frame pins
 * its locals); lasti is what frame.f_lasti says, so leaks._line() turns it into a line number
 * only when somebody reads a report.
 *
 * Public C API only (PyFrame_GetBack, PyFrame_GetCode, PyFrame_GetLasti: 3.11+), and
 * sys._getframe called like any callable.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>

#if PY_VERSION_HEX < 0x030B0000
#error "threadpool_db._sight needs CPython 3.11 or newer (the pure-Python path serves 3.10)"
#endif

/* -- Site: (code, lasti, frame id, stack) ------------------------------------------------------ */
typedef struct {
    PyObject_HEAD
    PyObject *code;   /* the borrowing frame's code object */
    PyObject *stack;  /* the captured stack, or NULL */
    void *fid;        /* the frame's address, as id(frame) says it: compared, never followed */
    int lasti;        /* frame.f_lasti */
} SiteObject;

static PyTypeObject SiteType;

static Py_ssize_t
site_length(PyObject *self)
{
    (void)self;
    return 4;
}

static PyObject *
site_item(PyObject *op, Py_ssize_t i)
{
    SiteObject *self = (SiteObject *)op;
    switch (i) {
    case 0:
        return Py_NewRef(self->code);
    case 1:
        return PyLong_FromLong(self->lasti);
    case 2:
        return PyLong_FromVoidPtr(self->fid);
    case 3:
        return Py_NewRef(self->stack ? self->stack : Py_None);
    }
    PyErr_SetString(PyExc_IndexError, "Site index out of range");
    return NULL;
}

static PyObject *
site_repr(PyObject *op)
{
    SiteObject *self = (SiteObject *)op;
    return PyUnicode_FromFormat("Site(%R, %d, %p, %s)", self->code, self->lasti, self->fid,
                                self->stack ? "<stack>" : "None");
}

static void
site_dealloc(PyObject *op)
{
    SiteObject *self = (SiteObject *)op;
    Py_DECREF(self->code);
    Py_XDECREF(self->stack);
    PyObject_Free(op);
}

static PySequenceMethods site_as_sequence = {
    .sq_length = site_length,
    .sq_item = site_item,
};

/* Not GC-tracked: it holds a code object and a tuple of (code, int) pairs, neither of which can
 * lead back to it. */
static PyTypeObject SiteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "threadpool_db._sight.Site",
    .tp_basicsize = sizeof(SiteObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_as_sequence = &site_as_sequence,
    .tp_dealloc = site_dealloc,
    .tp_repr = site_repr,
    .tp_doc = "Where a borrow happened: site[0] code, [1] lasti, [2] frame id, [3] stack or None.",
};

/* -- Sight: the recorder ------------------------------------------------------------------------ */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *prefix;     /* str, or tuple of str: frames whose co_filename starts with one are skipped */
    PyObject *getframe;   /* sys._getframe */
    PyObject *depth;      /* int: sys._getframe(depth) is the caller of the function calling us */
    Py_ssize_t limit;     /* frames kept of a captured stack */
    int every;            /* capture the stack of every borrow */
    uint32_t threshold;   /* else capture when a draw is below this */
    uint32_t state;       /* xorshift32 state; guarded by the GIL */
} SightObject;

static int
starts_with(PyObject *filename, PyObject *prefix)
{
    Py_ssize_t hit = PyUnicode_Tailmatch(filename, prefix, 0, PY_SSIZE_T_MAX, -1);
    if (hit < 0) {  /* a co_filename that is no str (never in practice): not ours */
        PyErr_Clear();
        return 0;
    }
    return hit == 1;
}

static int
ours(SightObject *self, PyCodeObject *code)
{
    if (!PyTuple_Check(self->prefix))
        return starts_with(code->co_filename, self->prefix);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(self->prefix); i++)
        if (starts_with(code->co_filename, PyTuple_GET_ITEM(self->prefix, i)))
            return 1;
    return 0;
}

static PyObject *
walk(PyFrameObject *frame, Py_ssize_t limit)
{
    PyObject *out = PyTuple_New(limit);
    if (out == NULL)
        return NULL;
    Py_ssize_t n = 0;
    Py_INCREF(frame);
    while (frame != NULL && n < limit) {
        PyObject *code = (PyObject *)PyFrame_GetCode(frame);
        PyObject *lasti = PyLong_FromLong(PyFrame_GetLasti(frame));
        PyObject *pair = lasti ? PyTuple_New(2) : NULL;
        if (pair == NULL) {
            Py_DECREF(code);
            Py_XDECREF(lasti);
            Py_DECREF(frame);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, code);
        PyTuple_SET_ITEM(pair, 1, lasti);
        PyTuple_SET_ITEM(out, n++, pair);
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    if (n < limit) {  /* a shallow stack: a tuple of its own size (no private resize API) */
        PyObject *fit = PyTuple_New(n);
        if (fit == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            PyTuple_SET_ITEM(fit, i, Py_NewRef(PyTuple_GET_ITEM(out, i)));
        Py_DECREF(out);  /* its unused tail is NULL, which tuple dealloc allows */
        out = fit;
    }
    return out;
}

static PyObject *
sight_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SightObject *self = (SightObject *)callable;
    (void)args;
    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Sight() takes no arguments");
        return NULL;
    }
    PyObject *f = PyObject_Vectorcall(self->getframe, &self->depth, 1, NULL);
    if (f == NULL) {
        /* a stack shallower than depth: nothing to record */
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyFrameObject *frame = (PyFrameObject *)f;
    PyCodeObject *code = PyFrame_GetCode(frame);
    while (ours(self, code)) {
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        Py_DECREF(code);
        if (back == NULL)
            Py_RETURN_NONE;
        frame = back;
        code = PyFrame_GetCode(frame);
    }
    PyObject *stack = NULL;
    int capture = self->every;
    if (!capture && self->threshold) {
        uint32_t x = self->state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self->state = x;
        capture = x < self->threshold;
    }
    if (capture && (stack = walk(frame, self->limit)) == NULL)
        goto fail;
    SiteObject *site = PyObject_Malloc(sizeof(SiteObject));
    if (site == NULL) {
        PyErr_NoMemory();
        Py_XDECREF(stack);
        goto fail;
    }
    PyObject_Init((PyObject *)site, &SiteType);
    site->code = (PyObject *)code;  /* takes our reference */
    site->stack = stack;
    site->fid = frame;
    site->lasti = PyFrame_GetLasti(frame);
    Py_DECREF(frame);
    return (PyObject *)site;
fail:
    Py_DECREF(code);
    Py_DECREF(frame);
    return NULL;
}

static PyObject *
sight_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"prefix", "depth", "limit", "every", "rate", NULL};
    PyObject *prefix;
    int depth, every;
    Py_ssize_t limit;
    double rate;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oinpd", kwlist, &prefix, &depth, &limit, &every, &rate))
        return NULL;
    int prefix_ok = PyUnicode_Check(prefix);
    if (PyTuple_Check(prefix)) {
        prefix_ok = 1;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(prefix); i++)
            prefix_ok = prefix_ok && PyUnicode_Check(PyTuple_GET_ITEM(prefix, i));
    }
    if (!prefix_ok) {
        PyErr_SetString(PyExc_TypeError, "Sight: prefix must be a str or a tuple of str");
        return NULL;
    }
    if (depth < 0 || limit < 1 || !(rate >= 0.0 && rate <= 1.0)) {
        PyErr_SetString(PyExc_ValueError, "Sight: depth >= 0, limit >= 1 and 0 <= rate <= 1");
        return NULL;
    }
    SightObject *self = (SightObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = sight_vectorcall;
    self->prefix = Py_NewRef(prefix);
    self->depth = PyLong_FromLong(depth);
    self->getframe = PySys_GetObject("_getframe");  /* borrowed */
    if (self->depth == NULL || self->getframe == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "Sight: sys._getframe is missing");
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(self->getframe);
    self->limit = limit;
    self->every = every || rate >= 1.0;
    self->threshold = (uint32_t)(rate * 4294967295.0);
    /* any nonzero seed; sampling needs spread, not secrecy */
    uintptr_t seed = (uintptr_t)self ^ ((uintptr_t)PyThread_get_thread_ident() << 7) ^ 0x9E3779B9u;
    self->state = (uint32_t)(seed ^ (seed >> 32)) | 1u;
    return (PyObject *)self;
}

static void
sight_dealloc(SightObject *self)
{
    Py_XDECREF(self->prefix);
    Py_XDECREF(self->getframe);
    Py_XDECREF(self->depth);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
sight_repr(SightObject *self)
{
    return PyUnicode_FromFormat("<threadpool_db._sight.Sight depth=%S limit=%zd every=%d threshold=%u>",
                                self->depth, self->limit, self->every, (unsigned)self->threshold);
}

static PyTypeObject SightType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "threadpool_db._sight.Sight",
    .tp_basicsize = sizeof(SightObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(SightObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = sight_new,
    .tp_dealloc = (destructor)sight_dealloc,
    .tp_repr = (reprfunc)sight_repr,
    .tp_doc = "Sight(prefix, depth, limit, every, rate)() -> Site or None: see threadpool_db/_sight.c",
};

/* -- the handle's with-block methods --------------------------------------------------------------
 *
 * handle_methods(cls, raw, pool, dead) -> (__enter__, __exit__): PooledConnection's with-block
 * methods, the same as its Python ones (connection.py), as method descriptors of `cls`. `raw` and
 * `pool` are the class's slot descriptors, read here at their offsets: in Python each read goes
 * through the class's __getattr__ hook (it has one, to reach the driver's attributes), and the two
 * Python frames cost about 0.3 us of a with block on CPython 3.11. `dead` is the name of the
 * method that makes the error for a handle no longer borrowed. The descriptor checks that `self`
 * is an instance of `cls` before any offset is read.
 */
static Py_ssize_t raw_offset = -1, pool_offset = -1;
static PyObject *str_putconn, *str_dead;

static PyObject *
handle_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *raw = *(PyObject **)((char *)self + raw_offset);
    if (raw != NULL && raw != Py_None)
        return Py_NewRef(self);
    PyObject *err = PyObject_CallMethodNoArgs(self, str_dead);
    if (err != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(err), err);
        Py_DECREF(err);
    }
    return NULL;
}

static PyObject *
handle_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "__exit__ takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *raw = *(PyObject **)((char *)self + raw_offset);
    PyObject *pool = *(PyObject **)((char *)self + pool_offset);
    if (raw == NULL || raw == Py_None || pool == NULL)
        Py_RETURN_NONE; /* given back inside the block, or reclaimed */
    /* pool.putconn(self, exc, commit): the return replaces the handle's pool reference */
    Py_INCREF(pool);
    PyObject *call[5] = {NULL, pool, self, args[1], args[0] == Py_None ? Py_True : Py_False};
    PyObject *res = PyObject_VectorcallMethod(str_putconn, call + 1, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(pool);
    if (res == NULL)
        return NULL;
    Py_DECREF(res);
    Py_RETURN_NONE;
}

static PyMethodDef enter_def = {
    "__enter__", (PyCFunction)handle_enter, METH_NOARGS,
    "The handle itself; PoolError if it was given back already."};
static PyMethodDef exit_def = {
    "__exit__", (PyCFunction)(void (*)(void))handle_exit, METH_FASTCALL,
    "Give the connection back: putconn(self, exc, commit=no exception)."};

static Py_ssize_t
slot_offset(PyObject *descr)
{
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_SetString(PyExc_TypeError, "handle_methods: raw and pool must be __slots__ descriptors");
        return -1;
    }
    return ((PyMemberDescrObject *)descr)->d_member->offset;
}

static PyObject *
handle_methods(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyType_Check(args[0]) || !PyUnicode_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "handle_methods(cls, raw, pool, dead)");
        return NULL;
    }
    Py_ssize_t raw = slot_offset(args[1]), pool = slot_offset(args[2]);
    if (raw < 0 || pool < 0)
        return NULL;
    raw_offset = raw;
    pool_offset = pool;
    Py_XSETREF(str_dead, Py_NewRef(args[3]));
    if (str_putconn == NULL && (str_putconn = PyUnicode_InternFromString("putconn")) == NULL)
        return NULL;
    PyObject *enter = PyDescr_NewMethod((PyTypeObject *)args[0], &enter_def);
    PyObject *leave = PyDescr_NewMethod((PyTypeObject *)args[0], &exit_def);
    if (enter == NULL || leave == NULL) {
        Py_XDECREF(enter);
        Py_XDECREF(leave);
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, enter, leave);
    Py_DECREF(enter);
    Py_DECREF(leave);
    return pair;
}

static PyMethodDef module_methods[] = {
    {"handle_methods", (PyCFunction)(void (*)(void))handle_methods, METH_FASTCALL,
     "handle_methods(cls, raw, pool, dead) -> (__enter__, __exit__): see threadpool_db/_sight.c"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "threadpool_db._sight",
    .m_doc = "The borrow site and stack, recorded in C; the handle's with-block methods.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__sight(void)
{
    if (PyType_Ready(&SightType) < 0 || PyType_Ready(&SiteType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SightType);
    if (PyModule_AddObject(m, "Sight", (PyObject *)&SightType) < 0) {
        Py_DECREF(&SightType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&SiteType);
    if (PyModule_AddObject(m, "Site", (PyObject *)&SiteType) < 0) {
        Py_DECREF(&SiteType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
