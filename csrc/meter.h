/* meter.h: the core of nea's memory meter, shared by meter.c (allocator hooks, tables)
 * and module.c (the Python binding).
 *
 * All state lives in one struct, `nea_M` (state.h, defined in slots.c), guarded by the GIL
 * (the hooks run only for the PyMem/PyObject domains, which require it). Free-threaded
 * builds are not supported: the extension refuses to compile there and nea falls back to
 * the tracemalloc meter.
 */
#ifndef NEA_METER_H
#define NEA_METER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#ifdef Py_GIL_DISABLED
#error "nea._meter relies on the GIL; free-threaded builds use the tracemalloc meter"
#endif

/* The soft limit and the hard ceiling (docs/budgets.md, "What happens at the limit").
 * An allocation that takes a budget past its limit succeeds and trips the budget;
 * `BudgetExceeded` is then delivered to the budget's own code at its next safe point.
 * Only past the ceiling is an allocation refused. The default ceiling is the limit plus
 * the larger of the limit and NEA_MIN_HEADROOM: room for the largest single C call a
 * request makes after crossing (orjson.dumps of 200k records took 31.7 MiB past a 4 MiB
 * limit before it returned) and for the unwind (a formatted traceback, an error page). */
#define NEA_MIN_HEADROOM ((size_t)1 << 20)
/* Blocks of at most this size are never refused, even past the ceiling: CPython's own
 * unwinding allocates only small objects (an int for an except block's resume offset,
 * traceback entries), and refusing one makes the eval loop retry the unwind forever with
 * the GIL held. A request that keeps allocating small blocks after its trip is stopped by
 * the exceptions delivered at its safe points, not by refusal. */
#define NEA_ALWAYS_GRANTED_BYTES ((size_t)512)
/* After a delivery, the next one is owed once the budget has grown this much more: a
 * request that swallows BudgetExceeded and keeps allocating gets it again, while the
 * few kilobytes of a normal unwind (tracebacks, an error response) never trigger a
 * second one in a cleanup block. */
#define NEA_REDELIVER_BYTES ((size_t)1 << 20)

/* A budget's slot index takes 20 bits of a block's owner word, its generation 44 bits:
 * at most 2^20 - 1 budgets open (or forwarding) at once, and a slot can be reused
 * 1.7e13 times before a generation repeats. */
#define NEA_SLOT_BITS 20
#define NEA_MAX_SLOTS ((uint32_t)((1u << NEA_SLOT_BITS) - 1))
#define NEA_NO_SLOT NEA_MAX_SLOTS

enum nea_slot_state { NEA_SLOT_FREE = 0, NEA_SLOT_OPEN = 1, NEA_SLOT_FORWARD = 2 };

/* One budget's accounting. FORWARD: closed while blocks it owns may still be alive and an
 * enclosing budget is open; freeing those blocks un-charges the open ancestors, never this
 * slot. A slot is released (FREE, generation bumped) when no open ancestor is left. */
typedef struct {
    size_t limit;             /* the soft limit: crossing it trips the budget */
    size_t ceiling;           /* the hard ceiling: past it, allocations are refused */
    size_t owe_above;         /* owe a delivery when live passes this (SIZE_MAX: owed) */
    unsigned long owed_thread;/* thread ident that made the allocation a delivery is owed for */
    size_t live;
    size_t peak;
    uint64_t allocations;
    uint64_t refused;         /* allocations refused at the ceiling */
    size_t refused_size;      /* size of the allocation that tripped the budget */
    PyObject *refused_code;   /* strong ref: code object of the site that tripped it */
    int refused_line;
    uint64_t gen;
    uint32_t parent;          /* enclosing budget at open time, or NEA_NO_SLOT */
    uint64_t parent_gen;
    uint32_t next_free;
    uint32_t region;          /* region slot held (outermost budgets), or RG_NONE */
    uint8_t state;
    uint8_t tripped;
    uint8_t owed;             /* a BudgetExceeded is owed to this budget's code */
    uint8_t shares;           /* may borrow from the shared ceiling (request budgets) */
    /* C libraries' blocks made or freed without the GIL: not yet in `live` (anyblocks.c's
     * any_lock guards these five; the GIL side folds them in). */
    ptrdiff_t pending;
    size_t pending_peak;      /* the highest live + pending since the last fold */
    uint64_t pending_allocations; /* blocks among those bytes */
    size_t crossed_size;      /* a C library's allocation of this size crossed the limit */
    unsigned long crossed_thread; /* and the thread that made it */
} nea_slot;

/* A copy of a slot's numbers, taken before the slot may be released. */
typedef struct {
    size_t limit, ceiling, live, peak, retained, refused_size;
    uint64_t allocations, refused;
    int tripped;
    PyObject *refused_code;   /* new reference or NULL */
    int refused_line;
} nea_report;

/* The Python-visible handle of one budget (the value of the `current` contextvar).
 * `previous` and `final` belong to module.c (enter/exit and the getters). */
typedef struct {
    PyObject_HEAD
    uint32_t idx;
    uint64_t gen;
    int closed;
    PyObject *owner;          /* the nea.Budget; strong ref, GC-tracked */
    PyObject *previous;       /* current before enter(); strong ref until exit(), or NULL */
    PyObject *outer;          /* the enclosing budget's handle when opened; strong ref or NULL:
                               * tasks that outlive this budget are charged to it */
    nea_report final;         /* the numbers at close; owns final.refused_code */
} nea_handle;

extern PyTypeObject nea_HandleType;

/* The budget charged where `value` (the contextvar's) is current: its handle while open,
 * else the nearest open one it was nested in (a task that outlived an inner budget), else
 * NULL. Borrowed. */
static inline nea_handle *nea_charged_handle(PyObject *value)
{
    while (value != NULL && Py_TYPE(value) == &nea_HandleType && ((nea_handle *)value)->closed)
        value = ((nea_handle *)value)->outer;
    return value != NULL && Py_TYPE(value) == &nea_HandleType ? (nea_handle *)value : NULL;
}

int nea_meter_init(PyObject *var);          /* once per process; keeps a ref to var */
int nea_meter_install(void);                /* hook MEM and OBJ; -1 with exception */
int nea_meter_installed(void);              /* ours are the hooks called first */
int nea_meter_in_chain(void);               /* ours are called (first or by later hooks) */
void nea_meter_disable(void);               /* at exit: stop charging */
/* Set the `current` contextvar; the only way nea changes it (keeps the hook's cache
 * right). -1 with an exception. */
int nea_meter_set_current(PyObject *value);
/* Code objects whose frames are the event loop's dispatch (tuple); see trips.c. */
int nea_meter_set_loop_frames(PyObject *codes);
/* The ceiling a budget of `limit` bytes gets when none is given. */
size_t nea_default_ceiling(size_t limit);
/* Code objects of nea's budget exits, where deliveries wait (tuple); see trips.c. */
int nea_meter_set_exit_frames(PyObject *codes);
/* Open a budget nested in `parent` (may be NULL); -1 with MemoryError when full. */
int nea_slot_open(size_t limit, size_t ceiling, int shares, const nea_handle *parent,
                  uint32_t *idx, uint64_t *gen);
/* A pipe's write end the hooks write a byte to, to wake the calling thread's event loop
 * when a worker thread owes a delivery (-1: none); see trips.c. */
void nea_meter_set_wake_fd(int fd);
/* The memory plan shared by all outermost budgets (0: none); see trips.c. */
void nea_meter_set_shared_ceiling(size_t bytes);
/* Charge numpy's array data from now on (numpy.c); 1, or -1 with an exception. */
int nea_numpy_install(void);
/* Point the malloc family of loaded C libraries at charging wrappers (clibs.c): objects
 * loaded since the last call are patched; cheap when none were. 0. */
int nea_clibs_patch(void);
PyObject *nea_clibs_info(void); /* what clibs.c patched, for tests and debugging */
/* The callable that builds the exception a delivery raises (see trips.c). */
int nea_meter_set_trip_factory(PyObject *factory);
/* 0 and fills `out` when (idx, gen) is open; -1 otherwise. */
int nea_slot_report(uint32_t idx, uint64_t gen, nea_report *out);
/* Close an open budget; fills `out` with its final numbers. */
int nea_slot_close(uint32_t idx, uint64_t gen, nea_report *out);
PyObject *nea_meter_table_info(void);
/* Serve outermost budgets from the region (1) or the block table only (0). */
void nea_meter_region_enable(int on);
/* 0 while the allocators below ours are tracemalloc's: its stop() would unhook us, and a
 * region block freed through pymalloc must never happen. */
void nea_meter_region_allow(int ok);
PyObject *nea_meter_region_info(void);
PyObject *nea_meter_region_slots(void); /* per-slot state, for tests and debugging */
#endif
