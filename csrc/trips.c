/* trips.c: trips, refusals and their delivery as exceptions at safe points.
 *
 * Owns: what happens when an allocation takes a budget past its limit or its ceiling
 * (the trip and its site, the refusal), who is allocating (the event loop's machinery or a
 * task's own code, from the frames), and the delivery of a tripped budget's exception: the
 * pending call on the main thread, asynchronous exceptions for worker threads, the pipe
 * that wakes an idle loop. Runs Python only from the pending call and under meter.c's
 * guard (state.h), so nothing it allocates is charged or refused.
 */
#include "meter.h"
#include "blocks.h"
#include "state.h"

#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h> /* PyFrame_GetBack on 3.10 */
#endif
#include <string.h>
#include <unistd.h>

#define M nea_M

/* ---- who is allocating -------------------------------------------------------------- */

/* Code objects of the event loop's dispatch frames (asyncio's Handle._run, run_forever,
 * the runners, ...), set from Python at install (nea/meter/_loop.py). */
static PyObject *loop_frames; /* tuple or NULL; strong ref */

int nea_meter_set_loop_frames(PyObject *codes)
{
    Py_XINCREF(codes);
    Py_XSETREF(loop_frames, codes);
    return 0;
}

/* Code objects of nea's own budget exits (Budget.__exit__, admission's request path),
 * set from Python at install: a delivery due while one of them is the innermost frame
 * waits, so that closing a budget never fails on its own trip. */
static PyObject *exit_frames; /* tuple or NULL; strong ref */

int nea_meter_set_exit_frames(PyObject *codes)
{
    Py_XINCREF(codes);
    Py_XSETREF(exit_frames, codes);
    return 0;
}

static int in_tuple(PyObject *tuple, PyObject *item)
{
    if (tuple == NULL)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++)
        if (PyTuple_GET_ITEM(tuple, i) == item)
            return 1;
    return 0;
}

static int is_loop_frame(PyObject *code) { return in_tuple(loop_frames, code); }

#define NEA_TASK_CODE (CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR)
#define NEA_MAX_WALK 256

/* Who is allocating? Walks the Python stack outwards: a coroutine frame first means the
 * task's own code (refusable); one of the loop's dispatch frames first means the loop's
 * machinery working for the task (scheduling its next step, waking or completing it):
 * refusing there raises inside the loop, and the task is never resumed (it hangs), so
 * those allocations are charged but not refused. Plain code (sync blocks, threads) is
 * refusable. Returns 1 for loop machinery. Sets *code (new ref) and *line to the
 * innermost frame, the refused site. Called under the meter's guard (frames may be
 * materialised). */
static int made_by_loop(PyObject **code, int *line)
{
    *code = NULL;
    PyThreadState *ts = NEA_TSTATE();
    PyFrameObject *frame = ts ? PyThreadState_GetFrame(ts) : NULL;
    if (frame == NULL)
        return 0;
    *code = (PyObject *)PyFrame_GetCode(frame);
    *line = PyFrame_GetLineNumber(frame);
    int loop = 0;
    for (int depth = 0; frame != NULL && depth < NEA_MAX_WALK; depth++) {
        PyCodeObject *c = PyFrame_GetCode(frame);
        int task_code = (c->co_flags & NEA_TASK_CODE) != 0;
        loop = !task_code && is_loop_frame((PyObject *)c);
        Py_DECREF(c);
        if (task_code || loop)
            break;
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    return loop;
}

/* ---- trips and their delivery ------------------------------------------------------
 *
 * Crossing a budget's limit never fails the allocation that crosses it: third-party C
 * code that gets NULL back crashes (orjson), panics (pydantic-core) or, in CPython's own
 * unwind, retries forever. Instead the budget *trips*, and a `BudgetExceeded` is *owed*
 * to its code. The meter delivers it at a safe point, a bytecode boundary where CPython
 * checks for pending work, in the budget's own code:
 *
 * - on the main thread (where the event loop runs), through Py_AddPendingCall: the call
 *   runs at the next check, and raises only when the context running then has the owed
 *   budget current and the innermost code is the budget's (a task's coroutine, or plain
 *   code), never the event loop's dispatch nor another request's task;
 * - in another thread (a thread pool running `to_thread` work), the same pending call
 *   (on the main thread, outside any allocation) sets an asynchronous exception on that
 *   thread, after checking that the thread still runs in the owed budget's context and
 *   runs no event loop (no coroutine on its stack). Thread pools run the work inside
 *   `context.run` within `try/except BaseException`, so even an exception that arrives
 *   just after the work returned reaches the request that awaited it.
 *
 * Allocations past the ceiling (the hard line) are refused, except small blocks
 * (NEA_ALWAYS_GRANTED_BYTES) and the event loop's own work for a task. */

static PyObject *trip_factory; /* callable(handle, in_thread) -> exception; strong ref */
static int pending_armed;      /* GIL: a delivery call is queued */
static size_t shared_ceiling;  /* GIL: the memory plan all outermost budgets share, or 0 */

void nea_meter_set_shared_ceiling(size_t bytes) { shared_ceiling = bytes; }

/* May budget `s`, past its own ceiling, still take `size` more? Yes if it is a request's
 * budget (admission opens those as sharing) and everything charged to sharing budgets
 * stays within the shared ceiling (the memory plan): a tripped request borrows what idle
 * slots do not use while it unwinds. Only budgets past their ceiling ask, so the walk
 * over the slots costs nothing on the common paths. */
int nea_within_shared_ceiling(const nea_slot *s, size_t size)
{
    if (!s->shares || shared_ceiling == 0 || size > shared_ceiling)
        return 0;
    size_t total = 0;
    for (uint32_t i = 0; i < M.slot_used; i++) {
        const nea_slot *t = &M.slots[i];
        if (t->state == NEA_SLOT_OPEN && t->shares) {
            total += t->live;
            if (total > shared_ceiling - size)
                return 0;
        }
    }
    return 1;
}

int nea_meter_set_trip_factory(PyObject *factory)
{
    Py_XINCREF(factory);
    Py_XSETREF(trip_factory, factory);
    return 0;
}

static int deliver(void *arg);

/* A pipe's write end that wakes the main thread's event loop (-1: none), and that thread's
 * ident: a delivery armed from a worker thread runs only once the main thread runs Python
 * again, which an idle loop waiting for that very worker would not do. */
static int wake_fd = -1;
static unsigned long wake_thread;

void nea_meter_set_wake_fd(int fd)
{
    wake_fd = fd;
    wake_thread = PyThread_get_thread_ident();
}

/* After queueing a pending call from another thread than the loop's: wake the loop. */
void nea_meter_wake_loop(void)
{
    if (wake_fd >= 0 && PyThread_get_thread_ident() != wake_thread) {
        char byte = 0;
        ssize_t rc = write(wake_fd, &byte, 1); /* non-blocking; a full pipe is awake anyway */
        (void)rc;
    }
}

/* Queue the delivery call (once; the budget's next allocation past its limit queues it
 * again when it could not deliver). */
void nea_meter_arm_delivery(void)
{
    if (pending_armed || trip_factory == NULL || Py_AddPendingCall(deliver, NULL) != 0)
        return;
    pending_armed = 1;
    nea_meter_wake_loop();
}

/* The innermost frame's code and line (new ref, or NULL when no Python frame runs). Called
 * under the meter's guard (a frame may be materialised). */
static PyObject *innermost_site(int *line)
{
    PyThreadState *ts = NEA_TSTATE();
    PyFrameObject *frame = ts ? PyThreadState_GetFrame(ts) : NULL;
    if (frame == NULL)
        return NULL;
    PyObject *code = (PyObject *)PyFrame_GetCode(frame);
    *line = PyFrame_GetLineNumber(frame);
    Py_DECREF(frame);
    return code;
}

/* `t` is past its limit with `size` more: trip it (recording the site and size of the
 * first crossing) and, when `owe`, owe it a delivery if it has grown enough since the
 * last one. Returns the slot again (the site capture may run the GC), or NULL when it is
 * gone. */
NEA_COLD nea_slot *nea_trip(nea_slot *t, size_t size, int owe)
{
    uint32_t idx = (uint32_t)(t - M.slots);
    uint64_t gen = t->gen;
    if (!t->tripped) {
        int line = 0;
        int saved = nea_meter_guard(); /* the frame may be materialised: uncharged */
        PyObject *code = innermost_site(&line);
        nea_meter_unguard(saved);
        t = slot_at(idx, gen);
        if (t == NULL || t->state != NEA_SLOT_OPEN) {
            Py_XDECREF(code);
            return NULL;
        }
        t->tripped = 1;
        t->refused_size = size;
        t->refused_code = code; /* keeps the reference */
        t->refused_line = line;
    }
    size_t after = t->live + size < t->live ? SIZE_MAX : t->live + size;
    if (!owe) {
        /* A refusal raises MemoryError at the allocating line: that is this delivery. */
        t->owed = 0;
        t->owe_above = t->live + NEA_REDELIVER_BYTES;
        return t;
    }
    if (after > t->owe_above) {
        t->owed = 1;
        t->owe_above = SIZE_MAX;
        t->owed_thread = PyThread_get_thread_ident();
    }
    if (t->owed)
        nea_meter_arm_delivery();
    return t;
}

/* `t` would pass its ceiling with `size` more: refuse (1), or let the event loop's own
 * work for a task through (0): refusing there raises inside the loop, and the task is
 * never resumed. */
NEA_COLD int nea_refuse(nea_slot *t, size_t size)
{
    uint32_t idx = (uint32_t)(t - M.slots);
    uint64_t gen = t->gen;
    int saved = nea_meter_guard(); /* the frame walk may allocate: uncharged */
    int line = 0;
    PyObject *code = NULL;
    int loop = made_by_loop(&code, &line);
    nea_meter_unguard(saved);
    Py_XDECREF(code);
    /* The walk can run the GC and finalizers, which may close this budget or open others
     * (moving the slot array): find the slot again. */
    t = slot_at(idx, gen);
    if (loop || t == NULL || t->state != NEA_SLOT_OPEN)
        return 0;
    t->refused++;
    nea_trip(t, size, 0); /* a refusal is a crossing too (the first one records its site) */
    return 1;
}

/* A thread's state by its ident (GIL held: the list does not change meanwhile). */
static PyThreadState *thread_by_ident(unsigned long ident)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(interp); ts != NULL;
         ts = PyThreadState_Next(ts))
        if (ts->thread_id == ident)
            return ts;
    return NULL;
}

/* Is (idx, gen) `value`'s budget or one it is nested in? */
static int handle_in_chain(PyObject *value, uint32_t idx, uint64_t gen)
{
    nea_handle *h = nea_charged_handle(value);
    if (h == NULL)
        return 0;
    for (nea_slot *t = slot_at(h->idx, h->gen); t != NULL; t = slot_parent(t))
        if (t == &M.slots[idx] && t->gen == gen)
            return 1;
    return 0;
}

/* Does thread `ts` run budget (idx, gen) now, outside any event loop? Its frames are
 * walked under the GIL, as sys._current_frames does. */
static int thread_runs_budget(PyThreadState *ts, uint32_t idx, uint64_t gen)
{
    if (ts->context == NULL)
        return 0;
    PyObject *value = PyObject_GetItem(ts->context, M.var);
    if (value == NULL) {
        PyErr_Clear();
        return 0;
    }
    int in_budget = handle_in_chain(value, idx, gen);
    Py_DECREF(value);
    if (!in_budget)
        return 0;
    PyFrameObject *frame = PyThreadState_GetFrame(ts);
    for (int depth = 0; frame != NULL && depth < NEA_MAX_WALK; depth++) {
        PyCodeObject *c = PyFrame_GetCode(frame);
        int task_code = (c->co_flags & NEA_TASK_CODE) != 0;
        Py_DECREF(c);
        if (task_code) {
            Py_DECREF(frame);
            return 0; /* an event loop's thread: its safe points are the budget's exit */
        }
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    return 1;
}

/* The exception for budget (idx, gen), from the factory (run uncharged). */
/* `thread_code`: NULL for a delivery in the calling (main) thread; else the innermost code
 * object of the worker thread the exception is for (Py_None when it runs no Python frame),
 * which the factory may decline, as it declines spots in the main thread. */
static PyObject *trip_error(uint32_t idx, uint64_t gen, PyObject *thread_code)
{
    nea_handle *h = PyObject_GC_New(nea_handle, &nea_HandleType);
    if (h == NULL)
        return NULL;
    /* A borrowed view of the open slot: closed = 0, no owner, never closes on dealloc. */
    h->idx = idx;
    h->gen = gen;
    h->closed = 1; /* dealloc must not close the slot; the getters read final below */
    h->owner = NULL;
    h->previous = NULL;
    h->outer = NULL;
    memset(&h->final, 0, sizeof(h->final));
    if (nea_slot_report(idx, gen, &h->final) < 0) {
        Py_DECREF(h);
        PyErr_SetString(PyExc_ValueError, "budget slot vanished");
        return NULL;
    }
    PyObject_GC_Track((PyObject *)h);
    PyObject *exc = PyObject_CallFunction(trip_factory, "OiO", (PyObject *)h,
                                          thread_code != NULL, thread_code ? thread_code : Py_None);
    Py_DECREF(h);
    return exc;
}

/* The innermost Python code the thread runs now (new ref), or a new ref to None. It is
 * suspended (this thread holds the GIL), so that is where its next bytecodes start. */
static PyObject *thread_code_now(PyThreadState *ts)
{
    PyFrameObject *frame = PyThreadState_GetFrame(ts);
    if (frame == NULL)
        return Py_NewRef(Py_None);
    PyObject *code = (PyObject *)PyFrame_GetCode(frame);
    Py_DECREF(frame);
    return code;
}

/* Deliver to thread `ident`: an asynchronous exception, if it still runs budget (idx, gen)
 * and its code now is not library code the factory declines (a thread inside the standard
 * library's queue or logging must not get an exception between a lock's acquire and its
 * try block; the exception is raised at the thread's next check, which is the start of
 * the next function it calls when it runs the app's code now). Runs Python (the factory):
 * the slot array may move meanwhile, so no slot pointer is held. Returns 0 when declined
 * (the delivery stays owed), else 1. */
static int deliver_to_thread(unsigned long ident, uint32_t idx, uint64_t gen)
{
    PyThreadState *ts = thread_by_ident(ident);
    if (ts == NULL || !thread_runs_budget(ts, idx, gen))
        return 1; /* its work for the budget returned: the budget reports it when it closes */
    PyObject *code = thread_code_now(ts);
    PyObject *cls = trip_error(idx, gen, code);
    Py_DECREF(code);
    if (cls == NULL) {
        PyErr_WriteUnraisable(trip_factory);
        return 1;
    }
    if (cls == Py_None) {
        Py_DECREF(cls);
        return 0;
    }
    /* Looked up again: the factory ran Python code, and the thread may have ended. */
    if (thread_by_ident(ident) == ts && PyType_Check(cls))
        PyThreadState_SetAsyncExc(ident, cls);
    Py_DECREF(cls);
    return 1;
}

/* The pending call: runs on the main thread at a bytecode boundary, never inside an
 * allocation. Returns -1 with BudgetExceeded set to raise it in the code running now. */
static int deliver(void *Py_UNUSED(arg))
{
    pending_armed = 0;
    if (M.disabled || trip_factory == NULL || M.open_count == 0)
        return 0;
    unsigned long me = PyThread_get_thread_ident();
    int saved = nea_meter_guard(); /* nothing done here is charged, nothing re-arms */
    /* Other threads first. The slot array may move while Python runs: index, not pointer. */
    for (uint32_t i = 0; i < M.slot_used; i++) {
        nea_slot *s = &M.slots[i];
        if (s->state == NEA_SLOT_OPEN && s->owed && s->owed_thread != me) {
            uint64_t gen = s->gen;
            unsigned long thread = s->owed_thread;
            s->owed = 0;
            s->owe_above = s->live + NEA_REDELIVER_BYTES;
            if (!deliver_to_thread(thread, i, gen)) {
                /* Declined: still owed to that thread; its next allocation past the limit
                 * (or a C library's, see anyblocks.c) arms the call again. */
                s = slot_at(i, gen);
                if (s != NULL && s->state == NEA_SLOT_OPEN) {
                    s->owed = 1;
                    s->owe_above = SIZE_MAX;
                    s->owed_thread = thread;
                }
            }
        }
    }
    /* Then this thread: the code running now, if it is the owed budget's own. */
    PyObject *value = NULL, *error = NULL;
    if (PyContextVar_Get(M.var, NULL, &value) < 0) {
        PyErr_Clear();
        value = NULL;
    }
    nea_slot *owed = NULL;
    uint32_t owed_idx = 0;
    uint64_t owed_gen = 0;
    nea_handle *h = nea_charged_handle(value);
    if (h != NULL) {
        for (nea_slot *t = slot_at(h->idx, h->gen); t != NULL; t = slot_parent(t))
            if (t->state == NEA_SLOT_OPEN && t->owed && t->owed_thread == me) {
                owed = t;
                break;
            }
    }
    Py_XDECREF(value);
    if (owed != NULL) {
        uint32_t idx = owed_idx = (uint32_t)(owed - M.slots);
        uint64_t gen = owed_gen = owed->gen;
        int line = 0;
        PyObject *code = NULL;
        int loop = made_by_loop(&code, &line) || in_tuple(exit_frames, code);
        Py_XDECREF(code);
        owed = slot_at(idx, gen);
        /* The loop's machinery working for the task, or nea closing the budget: leave it
         * owed; the task's next allocation past the limit arms the call again. */
        if (!loop && owed != NULL && owed->state == NEA_SLOT_OPEN) {
            owed->owed = 0;
            owed->owe_above = owed->live + NEA_REDELIVER_BYTES;
            error = trip_error(idx, gen, NULL);
            if (error == NULL)
                PyErr_WriteUnraisable(trip_factory);
        }
    }
    nea_meter_unguard(saved);
    if (error == Py_None) {
        /* The factory declined this spot (library code the exception must not cut
         * through): still owed; the budget's next allocation past its limit re-arms. */
        nea_slot *t = slot_at(owed_idx, owed_gen);
        if (t != NULL && t->state == NEA_SLOT_OPEN) {
            t->owed = 1;
            t->owe_above = SIZE_MAX;
        }
        Py_CLEAR(error);
    }
    if (error == NULL)
        return 0;
    PyErr_SetObject((PyObject *)Py_TYPE(error), error);
    Py_DECREF(error);
    return -1;
}

/* The innermost Python frame of thread `ident` (new ref and *line), or NULL. */
PyObject *nea_meter_thread_site(unsigned long ident, int *line)
{
    PyThreadState *ts = thread_by_ident(ident);
    PyFrameObject *frame = ts != NULL ? PyThreadState_GetFrame(ts) : NULL;
    if (frame == NULL)
        return NULL;
    PyObject *code = (PyObject *)PyFrame_GetCode(frame);
    *line = PyFrame_GetLineNumber(frame);
    Py_DECREF(frame);
    return code;
}
