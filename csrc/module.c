/* module.c: the Python binding of nea's meter (`nea._meter`), a thin layer over meter.c.
 *
 * Owns: the `Handle` type (the value of the `current` contextvar, one per budget; its
 * getters read the slot directly, and it keeps the final numbers once closed), the module
 * functions used by nea/meter/_select.py (`enter`/`exit` are the per-request path: one
 * call each), and module init. Functions return NULL
 * with an exception set on failure. The allocator state is process-wide (meter.c), so the
 * module refuses to load in subinterpreters with their own GIL.
 */
#include "meter.h"
#include "region.h"

/* ---- Handle ------------------------------------------------------------------------ */

static int handle_traverse(PyObject *self, visitproc visit, void *arg)
{
    nea_handle *h = (nea_handle *)self;
    Py_VISIT(h->owner);
    Py_VISIT(h->previous);
    Py_VISIT(h->outer);
    return 0;
}

static int handle_clear(PyObject *self)
{
    nea_handle *h = (nea_handle *)self;
    Py_CLEAR(h->owner);
    Py_CLEAR(h->previous);
    Py_CLEAR(h->outer);
    return 0;
}

static void handle_dealloc(PyObject *self)
{
    nea_handle *h = (nea_handle *)self;
    PyObject_GC_UnTrack(self);
    if (!h->closed) {
        /* The budget was never left (an abandoned block): release its slot so the meter
         * never refers to it again. */
        nea_report report;
        if (nea_slot_close(h->idx, h->gen, &report) == 0)
            Py_XDECREF(report.refused_code);
        h->closed = 1;
    }
    Py_CLEAR(h->owner);
    Py_CLEAR(h->previous);
    Py_CLEAR(h->outer);
    Py_CLEAR(h->final.refused_code);
    PyObject_GC_Del(self);
}

/* The handle's numbers: the slot's while open, the final ones once closed. The report's
 * refused_code is borrowed. -1 with ValueError when an open handle's slot vanished. */
static int handle_numbers(nea_handle *h, nea_report *r)
{
    if (h->closed) {
        *r = h->final;
        return 0;
    }
    if (nea_slot_report(h->idx, h->gen, r) < 0) {
        PyErr_SetString(PyExc_ValueError, "budget slot vanished (meter state corrupted)");
        return -1;
    }
    Py_XDECREF(r->refused_code); /* the slot keeps its own reference */
    return 0;
}

static PyObject *handle_get_owner(PyObject *self, void *Py_UNUSED(closure))
{
    PyObject *owner = ((nea_handle *)self)->owner;
    return Py_NewRef(owner ? owner : Py_None);
}

static PyObject *handle_get_charged(PyObject *self, void *Py_UNUSED(closure))
{
    nea_handle *h = nea_charged_handle(self);
    return Py_NewRef(h != NULL ? (PyObject *)h : Py_None);
}

static PyObject *handle_get_closed(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((nea_handle *)self)->closed);
}

/* The hot getters (a request's `send` reads `tripped`, the access log `peak`) read the
 * slot directly: no tuple, and `tripped` allocates nothing, so it can be read at the very
 * edge of a budget. */
static PyObject *handle_get_tripped(PyObject *self, void *Py_UNUSED(closure))
{
    nea_report r;
    if (handle_numbers((nea_handle *)self, &r) < 0)
        return NULL;
    return PyBool_FromLong(r.tripped);
}

static PyObject *handle_get_limit(PyObject *self, void *Py_UNUSED(closure))
{
    nea_report r;
    if (handle_numbers((nea_handle *)self, &r) < 0)
        return NULL;
    return PyLong_FromSize_t(r.limit);
}

static PyObject *handle_get_live(PyObject *self, void *Py_UNUSED(closure))
{
    nea_report r;
    if (handle_numbers((nea_handle *)self, &r) < 0)
        return NULL;
    return PyLong_FromSize_t(r.live);
}

static PyObject *handle_get_peak(PyObject *self, void *Py_UNUSED(closure))
{
    nea_report r;
    if (handle_numbers((nea_handle *)self, &r) < 0)
        return NULL;
    return PyLong_FromSize_t(r.peak);
}

static PyGetSetDef handle_getset[] = {
    {"owner", handle_get_owner, NULL, "the nea.Budget this handle belongs to", NULL},
    {"closed", handle_get_closed, NULL, "True once the budget was closed", NULL},
    {"charged", handle_get_charged, NULL,
     "the handle charged where this one is current: itself while open, else the nearest "
     "open one it was nested in, or None",
     NULL},
    {"tripped", handle_get_tripped, NULL, "True once the limit was crossed", NULL},
    {"limit", handle_get_limit, NULL, "the limit in bytes", NULL},
    {"live", handle_get_live, NULL, "bytes charged now (once closed: retained)", NULL},
    {"peak", handle_get_peak, NULL, "the most bytes ever charged at once", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject nea_HandleType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nea._meter.Handle",
    .tp_basicsize = sizeof(nea_handle),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One budget's slot in the C meter; created by open() or enter().",
    .tp_traverse = handle_traverse,
    .tp_clear = handle_clear,
    .tp_dealloc = handle_dealloc,
    .tp_getset = handle_getset,
};

/* ---- functions --------------------------------------------------------------------- */

static PyObject *current_var; /* the `current` contextvar (also held by meter.c) */

static PyObject *meter_install(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(args))
{
    if (nea_meter_install() < 0)
        return NULL;
    /* An explicit None in this context: lookups hit CPython's contextvar cache, and a
     * budget set here is later restored to None with set(), never reset to "no value". */
    if (nea_meter_set_current(Py_None) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *meter_set_current(PyObject *Py_UNUSED(m), PyObject *value)
{
    if (value != Py_None && Py_TYPE(value) != &nea_HandleType) {
        PyErr_Format(PyExc_TypeError, "expected a nea._meter.Handle or None, got %s",
                     Py_TYPE(value)->tp_name);
        return NULL;
    }
    if (nea_meter_set_current(value) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *meter_set_loop_frames(PyObject *Py_UNUSED(m), PyObject *codes)
{
    if (!PyTuple_Check(codes)) {
        PyErr_Format(PyExc_TypeError, "expected a tuple of code objects, got %s",
                     Py_TYPE(codes)->tp_name);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(codes); i++) {
        if (!PyCode_Check(PyTuple_GET_ITEM(codes, i))) {
            PyErr_SetString(PyExc_TypeError, "expected a tuple of code objects");
            return NULL;
        }
    }
    nea_meter_set_loop_frames(codes);
    Py_RETURN_NONE;
}

static PyObject *meter_set_exit_frames(PyObject *Py_UNUSED(m), PyObject *codes)
{
    if (!PyTuple_Check(codes)) {
        PyErr_Format(PyExc_TypeError, "expected a tuple of code objects, got %s",
                     Py_TYPE(codes)->tp_name);
        return NULL;
    }
    nea_meter_set_exit_frames(codes);
    Py_RETURN_NONE;
}

static PyObject *meter_installed(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(args))
{
    return PyBool_FromLong(nea_meter_installed());
}

static PyObject *meter_disable(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(args))
{
    nea_meter_disable();
    Py_RETURN_NONE;
}

/* A new handle with an open slot of `limit_obj` bytes (hard ceiling `ceiling_obj`, or
 * the default for NULL/None) nested in `parent_obj` (the value of `current`, may be NULL
 * or None). */
static nea_handle *new_handle(PyObject *limit_obj, PyObject *owner, PyObject *parent_obj,
                              PyObject *ceiling_obj, PyObject *shares_obj)
{
    int shares = shares_obj != NULL ? PyObject_IsTrue(shares_obj) : 0;
    if (shares < 0)
        return NULL;
    size_t limit = PyLong_AsSize_t(limit_obj);
    if (limit == (size_t)-1 && PyErr_Occurred())
        return NULL;
    size_t ceiling = nea_default_ceiling(limit);
    if (ceiling_obj != NULL && ceiling_obj != Py_None) {
        ceiling = PyLong_AsSize_t(ceiling_obj);
        if (ceiling == (size_t)-1 && PyErr_Occurred())
            return NULL;
        if (ceiling < limit) {
            PyErr_Format(PyExc_ValueError, "ceiling: expected at least the limit (%zu bytes), "
                         "got %zu", limit, ceiling);
            return NULL;
        }
    }
    /* Nested in the budget charged here: the current one, or, in a task that outlived it,
     * the open budget it was nested in. */
    nea_handle *parent = nea_charged_handle(parent_obj);
    nea_handle *h = PyObject_GC_New(nea_handle, &nea_HandleType);
    if (h == NULL)
        return NULL;
    h->closed = 1; /* until the slot exists, dealloc must not close anything */
    h->owner = Py_NewRef(owner);
    h->previous = NULL;
    h->outer = parent != NULL ? Py_NewRef((PyObject *)parent) : NULL;
    memset(&h->final, 0, sizeof(h->final));
    h->idx = 0;
    h->gen = 0;
    if (nea_slot_open(limit, ceiling, shares, parent, &h->idx, &h->gen) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    h->final.limit = limit;
    h->final.ceiling = ceiling;
    h->closed = 0;
    PyObject_GC_Track((PyObject *)h);
    return h;
}

static PyObject *meter_open(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 && nargs != 3) {
        PyErr_Format(PyExc_TypeError, "open() takes (limit, owner[, ceiling]), got %zd "
                     "arguments", nargs);
        return NULL;
    }
    PyObject *parent_obj = NULL;
    if (PyContextVar_Get(current_var, NULL, &parent_obj) < 0)
        return NULL;
    nea_handle *h = new_handle(args[0], args[1], parent_obj, nargs == 3 ? args[2] : NULL, NULL);
    Py_XDECREF(parent_obj);
    return (PyObject *)h;
}

/* enter(limit, owner): open a budget nested in the current one and make it current, in
 * one call (the per-request path). The previous value is kept on the handle for exit(). */
static PyObject *meter_enter(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 4) {
        PyErr_Format(PyExc_TypeError, "enter() takes (limit, owner[, ceiling[, shares]]), "
                     "got %zd arguments", nargs);
        return NULL;
    }
    /* Someone (tracemalloc.stop()) may have restored older allocators, dropping ours:
     * chain again (a no-op while ours are still called). */
    if (!nea_meter_installed() && nea_meter_install() < 0)
        return NULL;
    PyObject *previous = NULL;
    if (PyContextVar_Get(current_var, NULL, &previous) < 0)
        return NULL;
    nea_handle *h = new_handle(args[0], args[1], previous, nargs >= 3 ? args[2] : NULL,
                               nargs == 4 ? args[3] : NULL);
    if (h == NULL) {
        Py_XDECREF(previous);
        return NULL;
    }
    h->previous = previous ? previous : Py_NewRef(Py_None);
    if (nea_meter_set_current((PyObject *)h) < 0) {
        Py_DECREF(h); /* closes the slot */
        return NULL;
    }
    return (PyObject *)h;
}

static PyObject *site_string(const nea_report *r)
{
    if (r->refused_code == NULL)
        Py_RETURN_NONE;
    PyObject *file = PyObject_GetAttrString(r->refused_code, "co_filename");
    PyObject *name = file ? PyObject_GetAttrString(r->refused_code, "co_name") : NULL;
    PyObject *site = NULL;
    if (name != NULL)
        site = PyUnicode_FromFormat("%S:%d in %S", file, r->refused_line, name);
    Py_XDECREF(file);
    Py_XDECREF(name);
    return site;
}

/* (limit, live, peak, allocations, refused, retained, tripped, refused_size, refused_at,
 *  ceiling) */
static PyObject *report_tuple(const nea_report *r)
{
    PyObject *site = site_string(r);
    if (site == NULL)
        return NULL;
    return Py_BuildValue("(nnnKKnNnNn)", (Py_ssize_t)r->limit, (Py_ssize_t)r->live,
                         (Py_ssize_t)r->peak, (unsigned long long)r->allocations,
                         (unsigned long long)r->refused, (Py_ssize_t)r->retained,
                         PyBool_FromLong(r->tripped), (Py_ssize_t)r->refused_size, site,
                         (Py_ssize_t)r->ceiling);
}

static nea_handle *as_handle(PyObject *arg)
{
    if (Py_TYPE(arg) != &nea_HandleType) {
        PyErr_Format(PyExc_TypeError, "expected a nea._meter.Handle, got %s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    return (nea_handle *)arg;
}

static nea_handle *as_open_handle(PyObject *arg)
{
    nea_handle *h = as_handle(arg);
    if (h != NULL && h->closed) {
        PyErr_SetString(PyExc_ValueError, "this budget is already closed");
        return NULL;
    }
    return h;
}

/* Close the slot and keep its final numbers on the handle. Builds no object: the exit
 * path is never charged to the budget. */
static int close_handle(nea_handle *h)
{
    int rc = nea_slot_close(h->idx, h->gen, &h->final);
    h->closed = 1;
    /* The owner (a Budget) holds this handle: dropping it here breaks the cycle, so a
     * request's budget is freed by reference counting, not left to the cyclic GC. A
     * closed budget is current nowhere any more (current_budget() gives None there). */
    Py_CLEAR(h->owner);
    if (rc < 0) {
        PyErr_SetString(PyExc_ValueError, "budget slot vanished (meter state corrupted)");
        return -1;
    }
    return 0;
}

static PyObject *meter_close(PyObject *Py_UNUSED(m), PyObject *arg)
{
    nea_handle *h = as_open_handle(arg);
    if (h == NULL || close_handle(h) < 0)
        return NULL;
    return report_tuple(&h->final);
}

/* exit(handle): close a budget opened by enter() and make the previous value current
 * again; returns whether it tripped. */
static PyObject *meter_exit(PyObject *Py_UNUSED(m), PyObject *arg)
{
    nea_handle *h = as_open_handle(arg);
    if (h == NULL)
        return NULL;
    if (h->previous == NULL) {
        PyErr_SetString(PyExc_ValueError, "exit() needs a handle made by enter()");
        return NULL;
    }
    int rc = close_handle(h);
    PyObject *previous = h->previous;
    h->previous = NULL;
    /* Hooks removed while the budget was open (tracemalloc.stop() restoring an allocator
     * saved before ours) leave its numbers short: say so rather than report them quietly. */
    if (rc == 0 && !nea_meter_installed() && !nea_meter_in_chain() &&
        PyErr_WarnEx(PyExc_RuntimeWarning,
                     "nea: the memory meter's allocator hooks were removed while this budget "
                     "was open (tracemalloc.stop() or another allocator hook restoring an "
                     "older allocator); allocations after that were not charged. nea "
                     "reinstalls its hooks when the next budget opens",
                     1) < 0)
        rc = -1;
    /* Restore an open enclosing budget with set(previous), never reset(token): resetting to
     * "no value" can leave CPython's contextvar cache stale when the allocator hook reads
     * the var. With no open budget before (None, or a handle closed since), the var keeps
     * this handle: closed, it charges nothing and current_budget() is None, exactly as
     * None would. That saves a context assignment (a HAMT copy) per outermost budget,
     * i.e. per served request. (The hooks' cache is invalidated by the close.) */
    int set = 0;
    if (Py_TYPE(previous) == &nea_HandleType && !((nea_handle *)previous)->closed)
        set = nea_meter_set_current(previous);
    Py_DECREF(previous);
    if (rc < 0 || set < 0)
        return NULL;
    return PyBool_FromLong(h->final.tripped);
}

static PyObject *meter_snapshot(PyObject *Py_UNUSED(m), PyObject *arg)
{
    nea_handle *h = as_handle(arg);
    nea_report r;
    if (h == NULL || handle_numbers(h, &r) < 0)
        return NULL;
    return report_tuple(&r);
}

static PyObject *meter_set_trip_factory(PyObject *Py_UNUSED(m), PyObject *factory)
{
    if (!PyCallable_Check(factory)) {
        PyErr_Format(PyExc_TypeError, "expected a callable, got %s", Py_TYPE(factory)->tp_name);
        return NULL;
    }
    nea_meter_set_trip_factory(factory);
    Py_RETURN_NONE;
}

static PyObject *meter_set_wake_fd(PyObject *Py_UNUSED(m), PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < -1 || fd > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "set_wake_fd: expected a file descriptor or -1, got %ld",
                     fd);
        return NULL;
    }
    nea_meter_set_wake_fd((int)fd);
    Py_RETURN_NONE;
}

static PyObject *meter_numpy_install(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(args))
{
    if (nea_numpy_install() < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *meter_patch_c_libraries(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(args))
{
    nea_clibs_patch();
    Py_RETURN_NONE;
}

static PyObject *meter_c_libraries(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(args))
{
    return nea_clibs_info();
}

static PyObject *meter_set_shared_ceiling(PyObject *Py_UNUSED(m), PyObject *arg)
{
    size_t bytes = PyLong_AsSize_t(arg);
    if (bytes == (size_t)-1 && PyErr_Occurred())
        return NULL;
    nea_meter_set_shared_ceiling(bytes);
    Py_RETURN_NONE;
}

static PyObject *meter_table_info(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(args))
{
    return nea_meter_table_info();
}

/* Benchmark helper: n PyObject_Malloc/PyObject_Free pairs of `size` bytes. */
static PyObject *meter_alloc_free_loop(PyObject *Py_UNUSED(m), PyObject *const *args,
                                       Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "alloc_free_loop(n, size)");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if ((n == -1 || size == -1) && PyErr_Occurred())
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        void *p = PyObject_Malloc((size_t)size);
        if (p == NULL)
            return PyErr_NoMemory();
        PyObject_Free(p);
    }
    Py_RETURN_NONE;
}

static PyObject *meter_region_configure(PyObject *Py_UNUSED(m), PyObject *const *args,
                                        Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "region_configure(slots, slot_bytes, prefault)");
        return NULL;
    }
    size_t slots = PyLong_AsSize_t(args[0]);
    if (slots == (size_t)-1 && PyErr_Occurred())
        return NULL;
    size_t slot_bytes = PyLong_AsSize_t(args[1]);
    if (slot_bytes == (size_t)-1 && PyErr_Occurred())
        return NULL;
    int prefault = PyObject_IsTrue(args[2]);
    if (prefault < 0)
        return NULL;
    if (slots == 0 || slots > NEA_MAX_SLOTS || slot_bytes == 0) {
        PyErr_Format(PyExc_ValueError, "region_configure: expected 1..%u slots of at least "
                     "1 byte, got %zu slots of %zu bytes", NEA_MAX_SLOTS, slots, slot_bytes);
        return NULL;
    }
    int rc = nea_region_configure((uint32_t)slots, slot_bytes, prefault);
    if (rc < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyBool_FromLong(rc == 0);
}

static PyObject *meter_region_enable(PyObject *Py_UNUSED(m), PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    nea_meter_region_enable(on);
    Py_RETURN_NONE;
}

static PyObject *meter_region_allow(PyObject *Py_UNUSED(m), PyObject *arg)
{
    int ok = PyObject_IsTrue(arg);
    if (ok < 0)
        return NULL;
    nea_meter_region_allow(ok);
    Py_RETURN_NONE;
}

static PyObject *meter_region_release(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(args))
{
    return PyLong_FromSize_t(nea_region_release());
}

static PyObject *meter_region_info(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(args))
{
    return nea_meter_region_info();
}

static PyObject *meter_region_slots(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(args))
{
    return nea_meter_region_slots();
}

static PyMethodDef meter_methods[] = {
    {"install", meter_install, METH_NOARGS, "Hook the MEM and OBJ allocator domains."},
    {"installed", meter_installed, METH_NOARGS, "True while the hooks are in place."},
    {"set_current", meter_set_current, METH_O,
     "set_current(handle_or_None): set the `current` contextvar (never set it directly)."},
    {"set_loop_frames", meter_set_loop_frames, METH_O,
     "set_loop_frames(codes): frames of the event loop's dispatch; never refused there."},
    {"set_exit_frames", meter_set_exit_frames, METH_O,
     "set_exit_frames(codes): frames of nea's budget exits; deliveries wait there."},
    {"disable", meter_disable, METH_NOARGS, "Stop charging (interpreter exit)."},
    {"open", (PyCFunction)(void (*)(void))meter_open, METH_FASTCALL,
     "open(limit, owner): open a budget nested in the current one; returns a Handle."},
    {"close", meter_close, METH_O, "close(handle): close a budget; returns its numbers."},
    {"enter", (PyCFunction)(void (*)(void))meter_enter, METH_FASTCALL,
     "enter(limit, owner[, ceiling[, shares]]): open a budget nested in the current one and "
     "make it current; `shares`: it may borrow from the shared ceiling (request budgets)."},
    {"exit", meter_exit, METH_O,
     "exit(handle): close a budget made by enter(), restore the previous one; -> tripped."},
    {"snapshot", meter_snapshot, METH_O,
     "snapshot(handle): a budget's numbers (the final ones once it is closed)."},
    {"set_trip_factory", meter_set_trip_factory, METH_O,
     "set_trip_factory(f): f(handle, in_thread) builds what a delivery raises (an "
     "exception; in another thread, an exception class)."},
    {"set_wake_fd", meter_set_wake_fd, METH_O,
     "set_wake_fd(fd): a pipe's write end that wakes this thread's event loop when a "
     "worker thread owes a trip's delivery (-1: none)."},
    {"patch_c_libraries", meter_patch_c_libraries, METH_NOARGS,
     "patch_c_libraries(): charge the malloc blocks of the C libraries loaded since the "
     "last call (cheap when none were)."},
    {"c_libraries", meter_c_libraries, METH_NOARGS,
     "c_libraries() -> dict: whether C libraries can be charged here, and what is patched."},
    {"numpy_install", meter_numpy_install, METH_NOARGS,
     "numpy_install(): charge numpy's array data to budgets (run it in an empty context; "
     "numpy must be importable)."},
    {"set_shared_ceiling", meter_set_shared_ceiling, METH_O,
     "set_shared_ceiling(bytes): the memory plan outermost budgets share past their own "
     "ceilings (0: none)."},
    {"table_info", meter_table_info, METH_NOARGS, "Sizes of the meter's tables."},
    {"alloc_free_loop", (PyCFunction)(void (*)(void))meter_alloc_free_loop, METH_FASTCALL,
     "alloc_free_loop(n, size): n PyObject_Malloc/Free pairs (benchmarks)."},
    {"region_configure", (PyCFunction)(void (*)(void))meter_region_configure, METH_FASTCALL,
     "region_configure(slots, slot_bytes, prefault): map the region; False when a region "
     "with live blocks is kept instead."},
    {"region_enable", meter_region_enable, METH_O,
     "region_enable(on): serve outermost budgets from the region (True) or not."},
    {"region_allow", meter_region_allow, METH_O,
     "region_allow(ok): False while tracemalloc's allocators are below the meter's."},
    {"region_release", meter_region_release, METH_NOARGS,
     "region_release(): give free slots' pages back to the OS; returns the bytes."},
    {"region_info", meter_region_info, METH_NOARGS, "The region's geometry and counters."},
    {"region_slots", meter_region_slots, METH_NOARGS, "Each region slot's state (debugging)."},
    {NULL, NULL, 0, NULL},
};

static int meter_exec(PyObject *module)
{
    if (PyType_Ready(&nea_HandleType) < 0)
        return -1;
    if (current_var == NULL) {
        current_var = PyContextVar_New("nea.budget", Py_None);
        if (current_var == NULL || nea_meter_init(current_var) < 0)
            return -1;
    }
    if (PyModule_AddObjectRef(module, "current", current_var) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "Handle", (PyObject *)&nea_HandleType) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "MIN_HEADROOM", (long)NEA_MIN_HEADROOM) < 0 ||
        PyModule_AddIntConstant(module, "ALWAYS_GRANTED_BYTES",
                                (long)NEA_ALWAYS_GRANTED_BYTES) < 0 ||
        PyModule_AddIntConstant(module, "REDELIVER_BYTES", (long)NEA_REDELIVER_BYTES) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot meter_slots[] = {
    {Py_mod_exec, meter_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef meter_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nea._meter",
    .m_doc = "nea's memory meter: allocator hooks charging allocations to budgets.",
    .m_size = 0,
    .m_methods = meter_methods,
    .m_slots = meter_slots,
};

PyMODINIT_FUNC PyInit__meter(void) { return PyModuleDef_Init(&meter_module); }
