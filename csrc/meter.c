/* meter.c: allocator hooks and the tables behind nea's memory budgets.
 *
 * Owns: the hooks on the PyMem (MEM) and PyObject (OBJ) domains, chained to the allocators
 * that were installed before them; the budget slot table; charging. The block table
 * (pointer -> owner, size) is blocks.c/blocks.h. A hook never calls Python code except
 * under the in_hook guard (contextvar read, the refusal's frame walk), and the tables
 * never allocate through the hooked domains (libc calloc/realloc/free only), so a hook
 * never re-enters a table operation.
 *
 * Hot path (allocation): budgets open? -> read the `current` contextvar (cache hit in the
 * common case) -> None? forward. Else check the limits of the budget and every open
 * enclosing one, allocate from the previous allocator, record the block, charge.
 * Frees look the block up whichever context frees it and un-charge its owner's chain.
 *
 * Fail closed: if a block cannot be recorded (the block table cannot grow), the
 * allocation fails instead of going unaccounted.
 */
#include "meter.h"
#include "blocks.h"

#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h> /* PyFrame_GetBack on 3.10 */
#endif
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define NEA_TLS __thread __attribute__((tls_model("initial-exec")))
#else
#define NEA_TLS _Thread_local
#endif

#if PY_VERSION_HEX >= 0x030D0000
#define NEA_TSTATE() PyThreadState_GetUnchecked()
#else
#define NEA_TSTATE() _PyThreadState_UncheckedGet()
#endif

/* Owner word of a recorded block: slot index (low 20 bits) and generation. */
#define OWNER(idx, gen) (((uint64_t)(gen) << NEA_SLOT_BITS) | (uint64_t)(idx))
#define OWNER_IDX(w) ((uint32_t)((w) & NEA_MAX_SLOTS))
#define OWNER_GEN(w) ((w) >> NEA_SLOT_BITS)
#define GEN_MASK ((UINT64_C(1) << (64 - NEA_SLOT_BITS)) - 1)

typedef struct {
    PyMemAllocatorEx prev;    /* the allocator we chain to, per domain */
    PyMemAllocatorEx ours;
} domain_hook;

/* All state; guarded by the GIL. */
static struct {
    PyObject *var;            /* the `current` contextvar (strong ref, never released) */
    int installed;
    int disabled;             /* set at interpreter exit */
    uint32_t open_count;      /* OPEN slots; 0 = hooks only forward and un-charge */
    uint32_t forward_count;
    nea_slot *slots;
    uint32_t slot_cap, slot_used, free_head;
    domain_hook mem, obj;
} M = {.free_head = NEA_NO_SLOT};

/* Per-thread cache of the current budget, valid while the thread's context object and
 * context_ver (bumped by CPython on every context enter/exit) and our set epoch (bumped
 * by nea_meter_set_current, the only way nea changes the var) are unchanged. It saves
 * the PyContextVar_Get call, and caches "no value here" lookups, which CPython does not. */
typedef struct {
    PyObject *ctx;            /* identity only, never dereferenced */
    uint64_t ver;
    uint64_t epoch;
    uint32_t idx;
    uint64_t gen;
    int has;
} current_cache;
static NEA_TLS current_cache cache;
static uint64_t set_epoch = 1; /* GIL; cache.epoch starts at 0: first lookup misses */

/* Re-entrancy guard: set while a hook runs code that may allocate (the contextvar read,
 * the refusal site capture). Allocations made meanwhile are forwarded uncharged and
 * resizes are never refused. */
static NEA_TLS int in_hook;

/* ---- slots and charging ------------------------------------------------------------ */

static NEA_INLINE nea_slot *slot_at(uint32_t idx, uint64_t gen)
{
    if (idx >= M.slot_used)
        return NULL;
    nea_slot *s = &M.slots[idx];
    return (s->gen == gen && s->state != NEA_SLOT_FREE) ? s : NULL;
}

static NEA_INLINE nea_slot *slot_parent(const nea_slot *s)
{
    return s->parent == NEA_NO_SLOT ? NULL : slot_at(s->parent, s->parent_gen);
}

/* Code objects of the event loop's dispatch frames (asyncio's Handle._run, run_forever,
 * the runners, ...), set from Python at install (nea/meter/_loop.py). */
static PyObject *loop_frames; /* tuple or NULL; strong ref */

int nea_meter_set_loop_frames(PyObject *codes)
{
    Py_XINCREF(codes);
    Py_XSETREF(loop_frames, codes);
    return 0;
}

static int is_loop_frame(PyObject *code)
{
    if (loop_frames == NULL)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(loop_frames); i++)
        if (PyTuple_GET_ITEM(loop_frames, i) == code)
            return 1;
    return 0;
}

#define NEA_TASK_CODE (CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR)
#define NEA_MAX_WALK 256

/* Who is allocating? Walks the Python stack outwards: a coroutine frame first means the
 * task's own code (refusable); one of the loop's dispatch frames first means the loop's
 * machinery working for the task (scheduling its next step, waking or completing it):
 * refusing there raises inside the loop, and the task is never resumed (it hangs), so
 * those allocations are charged but not refused. Plain code (sync blocks, threads) is
 * refusable. Returns 1 for loop machinery. Sets *code (new ref) and *line to the
 * innermost frame, the refused site. Called with the in_hook guard (frames may be
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

/* An allocation would exceed `t`'s limit: refuse it (1) and trip the budget, recording
 * the first refused site; or, when the loop's machinery makes it, let it through (0). */
static NEA_COLD int refuse(nea_slot *t, size_t size)
{
    uint32_t idx = (uint32_t)(t - M.slots);
    uint64_t gen = t->gen;
    int saved = in_hook;
    in_hook = 1; /* the frame walk may allocate: forward those uncharged */
    int line = 0;
    PyObject *code = NULL;
    int loop = made_by_loop(&code, &line);
    in_hook = saved;
    /* The walk can run the GC and finalizers, which may close this budget or open others
     * (moving the slot array): find the slot again. */
    t = slot_at(idx, gen);
    if (loop || t == NULL || t->state != NEA_SLOT_OPEN) {
        Py_XDECREF(code);
        return 0;
    }
    t->refused++;
    if (!t->tripped) {
        t->tripped = 1;
        t->refused_size = size;
        t->refused_code = code; /* keeps the reference */
        t->refused_line = line;
    }
    else {
        Py_XDECREF(code);
    }
    return 1;
}

/* Would charging `size` to `s` and its open ancestors exceed a limit? Trips the first
 * budget that would; returns 1 to refuse. */
static NEA_INLINE int over_limit(nea_slot *s, size_t size)
{
    for (nea_slot *t = s; t != NULL; t = slot_parent(t)) {
        if (t->state != NEA_SLOT_OPEN)
            continue;
        size_t allowed = t->limit;
        if (NEA_UNLIKELY(t->tripped)) {
            allowed += NEA_GRACE_BYTES;
            if (allowed < t->limit)
                allowed = SIZE_MAX;
        }
        if (NEA_LIKELY(t->live <= allowed && size <= allowed - t->live))
            continue;
        return refuse(t, size);
    }
    return 0;
}

static NEA_INLINE void charge(nea_slot *s, size_t size)
{
    for (nea_slot *t = s; t != NULL; t = slot_parent(t)) {
        if (t->state != NEA_SLOT_OPEN)
            continue;
        t->live += size;
        if (t->live > t->peak)
            t->peak = t->live;
        t->allocations++;
    }
}

static NEA_INLINE void uncharge(uint64_t owner, size_t size)
{
    for (nea_slot *t = slot_at(OWNER_IDX(owner), OWNER_GEN(owner)); t != NULL;
         t = slot_parent(t)) {
        if (t->state == NEA_SLOT_OPEN)
            t->live = t->live >= size ? t->live - size : 0;
    }
}

/* Record a new block; the caller reserved room (nea_block_reserve). An entry already
 * there for the address means that block was freed behind our back (hooks replaced for a
 * while): settle it first. */
static NEA_INLINE void tracked_add(void *p, size_t size, uint32_t idx, uint64_t gen)
{
    int existed;
    block_entry *e = nea_block_slot_for((uintptr_t)p, &existed);
    if (NEA_UNLIKELY(existed))
        uncharge(e->owner, e->size);
    e->ptr = (uintptr_t)p;
    e->size = size;
    e->owner = OWNER(idx, gen);
}

/* Sentinel: the current budget could not be read; the allocation must fail. */
static nea_slot fail_closed_slot;

/* The open slot of the current budget; NULL when there is none (or the guard is set);
 * &fail_closed_slot when the contextvar cannot be read (the thread's first context could
 * not be created: an exception is set, and the allocation fails rather than go uncharged). */
static uint64_t slow_lookups; /* GIL; reported by table_info() */

static nea_slot *current_slot_slow(PyThreadState *ts, uint32_t *idx, uint64_t *gen)
{
    slow_lookups++;
    PyObject *value = NULL;
    in_hook = 1;
    int rc = PyContextVar_Get(M.var, NULL, &value);
    in_hook = 0;
    if (NEA_UNLIKELY(rc < 0))
        return &fail_closed_slot;
    cache.has = 0;
    if (value != NULL && Py_TYPE(value) == &nea_HandleType) {
        cache.has = 1;
        cache.idx = ((nea_handle *)value)->idx;
        cache.gen = ((nea_handle *)value)->gen;
    }
    Py_XDECREF(value);
    /* read after the call: it creates the thread's first context if there was none */
    cache.ctx = ts->context;
    cache.ver = ts->context_ver;
    cache.epoch = set_epoch;
    if (!cache.has)
        return NULL;
    nea_slot *s = slot_at(cache.idx, cache.gen);
    if (s == NULL || s->state != NEA_SLOT_OPEN)
        return NULL;
    *idx = cache.idx;
    *gen = cache.gen;
    return s;
}

static NEA_INLINE nea_slot *current_slot(uint32_t *idx, uint64_t *gen)
{
    if (NEA_LIKELY(M.open_count == 0) || M.disabled || in_hook)
        return NULL;
    PyThreadState *ts = NEA_TSTATE();
    if (NEA_UNLIKELY(ts == NULL))
        return NULL;
    if (NEA_UNLIKELY(ts->context != cache.ctx || ts->context_ver != cache.ver ||
                     cache.epoch != set_epoch || ts->context == NULL))
        return current_slot_slow(ts, idx, gen);
    if (!cache.has)
        return NULL;
    nea_slot *s = slot_at(cache.idx, cache.gen);
    if (s == NULL || s->state != NEA_SLOT_OPEN)
        return NULL;
    *idx = cache.idx;
    *gen = cache.gen;
    return s;
}

int nea_meter_set_current(PyObject *value)
{
    set_epoch++;
    PyObject *token = PyContextVar_Set(M.var, value);
    set_epoch++; /* a lookup cached during the set (it allocates) is stale now */
    if (token == NULL)
        return -1;
    Py_DECREF(token);
    return 0;
}

/* ---- hooks ------------------------------------------------------------------------- */

static NEA_INLINE void *charged_alloc(domain_hook *d, nea_slot *s, uint32_t idx, uint64_t gen,
                           size_t nelem, size_t elsize, int zero)
{
    size_t size;
    if (elsize != 0 && nelem > SIZE_MAX / elsize)
        return NULL;
    size = nelem * elsize;
    if (over_limit(s, size) || nea_block_reserve() < 0)
        return NULL;
    void *p = zero ? d->prev.calloc(d->prev.ctx, nelem, elsize)
                   : d->prev.malloc(d->prev.ctx, size);
    if (p == NULL)
        return NULL;
    /* The previous allocator never calls into our hooks, so the reservation holds. */
    tracked_add(p, size, idx, gen);
    /* Look the slot up again: a refusal check that let the allocation through (loop
     * machinery) walked frames, which can run the GC and finalizers that close or open
     * budgets (and move the slot array). */
    s = slot_at(idx, gen);
    if (s != NULL)
        charge(s, size);
    return p;
}

static void *hook_malloc(void *ctx, size_t size)
{
    domain_hook *d = ctx;
    uint32_t idx;
    uint64_t gen;
    nea_slot *s = current_slot(&idx, &gen);
    if (s == NULL)
        return d->prev.malloc(d->prev.ctx, size);
    if (NEA_UNLIKELY(s == &fail_closed_slot))
        return NULL;
    return charged_alloc(d, s, idx, gen, size, 1, 0);
}

static void *hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
    domain_hook *d = ctx;
    uint32_t idx;
    uint64_t gen;
    nea_slot *s = current_slot(&idx, &gen);
    if (s == NULL)
        return d->prev.calloc(d->prev.ctx, nelem, elsize);
    if (NEA_UNLIKELY(s == &fail_closed_slot))
        return NULL;
    return charged_alloc(d, s, idx, gen, nelem, elsize, 1);
}

static void hook_free(void *ctx, void *ptr)
{
    domain_hook *d = ctx;
    if (ptr != NULL && nea_blocks.count != 0) {
        block_entry *e = nea_block_find((uintptr_t)ptr);
        if (e != NULL) {
            uncharge(e->owner, e->size);
            nea_block_delete(e);
        }
    }
    d->prev.free(d->prev.ctx, ptr);
}

/* Realloc of a recorded block whose owner chain still exists: the owner keeps the block
 * and its open budgets are charged the difference (checked when it grows). */
static void *realloc_owned(domain_hook *d, void *ptr, block_entry saved, size_t new_size)
{
    nea_slot *owner = slot_at(OWNER_IDX(saved.owner), OWNER_GEN(saved.owner));
    /* Inside a guarded section (in_hook) the resize is recorded but never refused. */
    if (new_size > saved.size && owner != NULL && !M.disabled && !in_hook &&
        over_limit(owner, new_size - saved.size))
        return NULL;
    void *p = d->prev.realloc(d->prev.ctx, ptr, new_size);
    if (p == NULL)
        return NULL;
    block_entry *e = nea_block_find((uintptr_t)ptr);
    if (e != NULL)
        nea_block_delete(e);
    uncharge(saved.owner, saved.size);
    /* nea_block_reserve() ran before the call and nothing was added since */
    tracked_add(p, new_size, OWNER_IDX(saved.owner), OWNER_GEN(saved.owner));
    owner = slot_at(OWNER_IDX(saved.owner), OWNER_GEN(saved.owner));
    if (owner != NULL) {
        /* charge() counts an allocation; a resize is one more charged allocation */
        charge(owner, new_size);
    }
    return p;
}

static void *hook_realloc(void *ctx, void *ptr, size_t new_size)
{
    domain_hook *d = ctx;
    if (ptr == NULL)
        return hook_malloc(ctx, new_size);
    block_entry *e = nea_blocks.count != 0 ? nea_block_find((uintptr_t)ptr) : NULL;
    if (e != NULL && slot_at(OWNER_IDX(e->owner), OWNER_GEN(e->owner)) != NULL) {
        block_entry saved = *e;
        if (nea_block_reserve() < 0)
            return NULL;
        return realloc_owned(d, ptr, saved, new_size);
    }
    /* Untracked or retained block: resizing it in a budget makes a new block of that
     * budget (charged in full); a retained block's old size changes no budget. */
    uint32_t idx;
    uint64_t gen;
    nea_slot *s = current_slot(&idx, &gen);
    if (s == NULL) {
        void *p = d->prev.realloc(d->prev.ctx, ptr, new_size);
        if (p != NULL && e != NULL) {
            e = nea_block_find((uintptr_t)ptr);
            if (e != NULL)
                nea_block_delete(e);
        }
        return p;
    }
    if (NEA_UNLIKELY(s == &fail_closed_slot))
        return NULL;
    if (over_limit(s, new_size) || nea_block_reserve() < 0)
        return NULL;
    void *p = d->prev.realloc(d->prev.ctx, ptr, new_size);
    if (p == NULL)
        return NULL;
    e = nea_block_find((uintptr_t)ptr);
    if (e != NULL)
        nea_block_delete(e);
    tracked_add(p, new_size, idx, gen);
    s = slot_at(idx, gen); /* again: see charged_alloc */
    if (s != NULL)
        charge(s, new_size);
    return p;
}

/* ---- lifecycle --------------------------------------------------------------------- */

int nea_meter_init(PyObject *var)
{
    if (M.var == NULL) {
        Py_INCREF(var);
        M.var = var;
    }
    return 0;
}

static void hook_domain(PyMemAllocatorDomain domain, domain_hook *d)
{
    PyMem_GetAllocator(domain, &d->prev);
    d->ours.ctx = d;
    d->ours.malloc = hook_malloc;
    d->ours.calloc = hook_calloc;
    d->ours.realloc = hook_realloc;
    d->ours.free = hook_free;
    PyMem_SetAllocator(domain, &d->ours);
}

int nea_meter_installed(void)
{
    PyMemAllocatorEx mem, obj;
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &mem);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &obj);
    return mem.malloc == hook_malloc && mem.ctx == &M.mem && obj.malloc == hook_malloc &&
           obj.ctx == &M.obj;
}

int nea_meter_install(void)
{
    if (M.var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "nea._meter is not initialised");
        return -1;
    }
    if (nea_meter_installed())
        return 0;
    if (nea_block_reserve() < 0) {
        PyErr_NoMemory();
        return -1;
    }
    /* Someone (tracemalloc.stop()) may have restored older allocators: chain again. */
    hook_domain(PYMEM_DOMAIN_MEM, &M.mem);
    hook_domain(PYMEM_DOMAIN_OBJ, &M.obj);
    M.installed = 1;
    M.disabled = 0;
    return 0;
}

void nea_meter_disable(void) { M.disabled = 1; }

int nea_slot_open(size_t limit, const nea_handle *parent, uint32_t *idx, uint64_t *gen)
{
    uint32_t i = M.free_head;
    if (i != NEA_NO_SLOT) {
        M.free_head = M.slots[i].next_free;
    }
    else {
        if (M.slot_used == NEA_MAX_SLOTS) {
            PyErr_Format(PyExc_MemoryError, "nea: %u budgets are open at once, the most the "
                         "meter supports; close budgets before opening more", NEA_MAX_SLOTS);
            return -1;
        }
        if (M.slot_used == M.slot_cap) {
            uint32_t cap = M.slot_cap ? M.slot_cap * 2 : 64;
            if (cap > NEA_MAX_SLOTS)
                cap = NEA_MAX_SLOTS;
            nea_slot *slots = realloc(M.slots, (size_t)cap * sizeof(nea_slot));
            if (slots == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            M.slots = slots;
            M.slot_cap = cap;
        }
        i = M.slot_used++;
        M.slots[i].gen = 0;
        M.slots[i].refused_code = NULL;
    }
    nea_slot *s = &M.slots[i];
    uint64_t g = s->gen;
    Py_CLEAR(s->refused_code); /* normally NULL already (cleared at release) */
    memset(s, 0, sizeof(*s));
    s->gen = g;
    s->limit = limit;
    s->state = NEA_SLOT_OPEN;
    s->parent = NEA_NO_SLOT;
    nea_slot *p = parent != NULL ? slot_at(parent->idx, parent->gen) : NULL;
    if (p != NULL && p->state == NEA_SLOT_OPEN) {
        s->parent = parent->idx;
        s->parent_gen = parent->gen;
    }
    s->next_free = NEA_NO_SLOT;
    M.open_count++;
    *idx = i;
    *gen = g;
    return 0;
}

static void fill_report(const nea_slot *s, nea_report *out)
{
    out->limit = s->limit;
    out->live = s->live;
    out->peak = s->peak;
    out->retained = 0;
    out->allocations = s->allocations;
    out->refused = s->refused;
    out->refused_size = s->refused_size;
    out->tripped = s->tripped;
    out->refused_code = s->refused_code;
    Py_XINCREF(out->refused_code);
    out->refused_line = s->refused_line;
}

int nea_slot_report(uint32_t idx, uint64_t gen, nea_report *out)
{
    nea_slot *s = slot_at(idx, gen);
    if (s == NULL || s->state != NEA_SLOT_OPEN)
        return -1;
    fill_report(s, out);
    return 0;
}

static int has_open_ancestor(const nea_slot *s)
{
    for (nea_slot *t = slot_parent(s); t != NULL; t = slot_parent(t))
        if (t->state == NEA_SLOT_OPEN)
            return 1;
    return 0;
}

static void slot_release(uint32_t i)
{
    nea_slot *s = &M.slots[i];
    if (s->state == NEA_SLOT_FORWARD)
        M.forward_count--;
    s->state = NEA_SLOT_FREE;
    s->gen = (s->gen + 1) & GEN_MASK;
    s->next_free = M.free_head;
    M.free_head = i;
    PyObject *code = s->refused_code;
    s->refused_code = NULL;
    Py_XDECREF(code); /* may free memory: our free hook runs; no table op is in flight */
}

/* Release forwarding slots that no longer lead to an open budget; repeat because
 * releasing one can cut the chain of another. */
static void release_dead_forwarders(void)
{
    int changed = 1;
    while (changed && M.forward_count != 0) {
        changed = 0;
        for (uint32_t i = 0; i < M.slot_used; i++) {
            if (M.slots[i].state == NEA_SLOT_FORWARD && !has_open_ancestor(&M.slots[i])) {
                slot_release(i);
                changed = 1;
            }
        }
    }
}

int nea_slot_close(uint32_t idx, uint64_t gen, nea_report *out)
{
    nea_slot *s = slot_at(idx, gen);
    if (s == NULL || s->state != NEA_SLOT_OPEN)
        return -1;
    fill_report(s, out);
    out->retained = s->live;
    M.open_count--;
    if (s->live != 0 && has_open_ancestor(s)) {
        s->state = NEA_SLOT_FORWARD;
        M.forward_count++;
    }
    else {
        slot_release(idx);
    }
    release_dead_forwarders();
    nea_block_maybe_shrink();
    return 0;
}

PyObject *nea_meter_table_info(void)
{
    unsigned long long total, worst;
    nea_block_displacement(&total, &worst);
    return Py_BuildValue("{s:n,s:n,s:I,s:I,s:I,s:i,s:K,s:K,s:K}", "blocks",
                         (Py_ssize_t)nea_blocks.count, "capacity", (Py_ssize_t)nea_blocks.cap,
                         "slots", M.slot_used, "open", M.open_count, "forwarding",
                         M.forward_count, "installed", nea_meter_installed(), "slow_lookups",
                         (unsigned long long)slow_lookups, "displacement_total", total,
                         "displacement_max", worst);
}
