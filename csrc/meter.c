/* meter.c: allocator hooks and charging behind nea's memory budgets.
 *
 * Owns: the hooks on the PyMem (MEM) and PyObject (OBJ) domains, chained to the allocators
 * that were installed before them; the current-budget cache; charging. Elsewhere: the budget
 * slots' lifecycle (slots.c, state shared through state.h), the region (region.c), the
 * block table of pointer -> owner, size (blocks.c), trips and their delivery (trips.c), and
 * C libraries' blocks from any thread (anyblocks.c); the last two reach the lookup cache
 * and the re-entrancy guard through a small door (end of this file). A hook never calls
 * Python code except under the in_hook guard (contextvar read, the refusal's frame walk),
 * and the tables never allocate through the hooked domains (libc calloc/realloc/free
 * only), so a hook never re-enters a table operation.
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
#include "region.h"
#include "state.h"

#include <stdlib.h>
#include <string.h>

/* The thread state, through a pointer of our own: one indirect call instead of a call to
 * the PLT stub and its jump (CPython exports no inline way to read it). Not static, so
 * the compiler cannot fold it back into a direct call. */
#if PY_VERSION_HEX >= 0x030D0000
NEA_HIDDEN PyThreadState *(*nea_get_tstate)(void) = PyThreadState_GetUnchecked;
#else
NEA_HIDDEN PyThreadState *(*nea_get_tstate)(void) = _PyThreadState_UncheckedGet;
#endif

#define M nea_M
#define set_epoch nea_set_epoch

/* Per-thread cache of the current budget, valid while the thread's context object and
 * context_ver (bumped by CPython on every context enter/exit) and our set epoch (bumped
 * by nea_meter_set_current, the only way nea changes the var) are unchanged. It saves
 * the PyContextVar_Get call, and caches "no value here" lookups, which CPython does not. */
typedef struct {
    PyObject *ctx;            /* identity only, never dereferenced */
    uint64_t ver;
    uint64_t epoch;
    nea_slot *slot;           /* the open slot of the current budget, or NULL */
    rg_slot *rs;              /* its region slot when it holds one, else &no_region_slot */
    uint32_t idx;
    uint64_t gen;
} current_cache;
static NEA_TLS current_cache cache;
/* The cache's region slot for a budget without one: every class is empty (no free block,
 * bump == limit == NULL), so nea_rg_take_small always fails into the slow path. Saves the
 * hot path a NULL test. Never written after nea_meter_init: nothing allocates from it. */
static rg_slot no_region_slot;
/* GIL; cache.epoch starts at 0: the first lookup misses. Also bumped whenever a cached slot
 * pointer may have gone stale: a budget closed, the slot array moved, the meter disabled.
 * A region slot pointer stays valid as long as its holder is open (the region is never
 * remapped while a slot is held). */
uint64_t nea_set_epoch = 1;

/* Re-entrancy guard: set while a hook runs code that may allocate (the contextvar read,
 * the refusal site capture). Allocations made meanwhile are forwarded uncharged and
 * resizes are never refused. The hot paths do not read it: whoever sets it also clears
 * cache.epoch (no epoch is 0), so every lookup meanwhile misses, and the slow lookup
 * checks the guard. */
static NEA_TLS int in_hook;

/* Set while nea_meter_in_chain probes: the probe's allocations reach malloc_slow (the
 * probe clears the cache epoch, so the hot path misses) and are seen there. */
static NEA_TLS int probing;
static NEA_TLS int probe_seen;

/* ---- charging ---------------------------------------------------------------------- */

/* Charging `size` to `s` and its open ancestors: 1 to refuse (past a ceiling), else 0;
 * every budget it takes past its limit trips. */
static NEA_INLINE int over_limit(nea_slot *s, size_t size)
{
    for (nea_slot *t = s; t != NULL; t = slot_parent(t)) {
        if (t->state != NEA_SLOT_OPEN)
            continue;
        if (NEA_LIKELY(t->live <= t->limit && size <= t->limit - t->live))
            continue;
        if (size > NEA_ALWAYS_GRANTED_BYTES &&
            !(t->live <= t->ceiling && size <= t->ceiling - t->live) &&
            !nea_within_shared_ceiling(t, size))
            return nea_refuse(t, size);
        t = nea_trip(t, size, 1);
        if (t == NULL)
            return 0; /* the GC closed it meanwhile: nothing left to check */
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

/* Is the cache right for this thread now? A NULL ts->context never matches (the slow
 * path caches only a created context). */
static NEA_INLINE int cache_hit(PyThreadState *ts)
{
    return ts != NULL && ts->context == cache.ctx && ts->context_ver == cache.ver &&
           cache.epoch == set_epoch;
}

/* Sentinel: the current budget could not be read; the allocation must fail. */
static nea_slot fail_closed_slot = {.region = RG_NONE};

/* The open slot of the current budget; NULL when there is none (or the guard is set);
 * &fail_closed_slot when the contextvar cannot be read (the thread's first context could
 * not be created: an exception is set, and the allocation fails rather than go uncharged). */
uint64_t nea_slow_lookups; /* GIL; reported by table_info() */

/* Cache `value` (borrowed; NULL: no value) as the current budget of this thread's
 * context as of `epoch`; returns its open slot or NULL. A closed handle stays closed, so
 * "no open slot" is as stable as the value itself. */
static nea_slot *cache_store(PyThreadState *ts, PyObject *value, uint64_t epoch)
{
    nea_slot *s = NULL;
    cache.idx = NEA_NO_SLOT; /* read by threads without the GIL (nea_any_owner) */
    nea_handle *h = nea_charged_handle(value);
    if (h != NULL) {
        cache.idx = h->idx;
        cache.gen = h->gen;
        s = slot_at(cache.idx, cache.gen);
        if (s != NULL && s->state != NEA_SLOT_OPEN)
            s = NULL;
    }
    cache.ctx = ts->context;
    cache.ver = ts->context_ver;
    cache.epoch = epoch;
    cache.slot = s;
    cache.rs = s != NULL && s->region != RG_NONE ? &nea_region.slots[s->region]
                                                 : &no_region_slot;
    /* A budget that owes a delivery becomes current again (its task resumed, say after a
     * worker thread's call that tripped it returned): deliver at the next safe point. */
    if (NEA_UNLIKELY(s != NULL && s->owed && s->owed_thread == PyThread_get_thread_ident()))
        nea_meter_arm_delivery();
    return s;
}

/* A context known to have no open budget current, so a slow lookup in it needs no
 * PyContextVar_Get: in nea's server a long-lived context outside the request's, which
 * took two of the five lookups of a request. The strong reference is what
 * makes the identity check safe: a context we keep alive cannot be freed and its memory
 * reused by another one. Its value changes only through nea_meter_set_current while it
 * is current there, which drops it. Taken when two no-budget lookups in a row find the
 * same context (an address seen twice is likely a long-lived context; a wrong guess only
 * keeps one context alive a little longer), given back by nea_meter_trim_quiet once ours
 * is the only reference (GIL). */
static PyObject *quiet_ctx;  /* strong ref or NULL */
static PyObject *last_quiet; /* identity only: context of the last no-budget lookup */

static nea_slot *current_slot_slow(PyThreadState *ts, uint32_t *idx, uint64_t *gen)
{
    if (ts == NULL || M.disabled || in_hook)
        return NULL;
    if (ts->context != NULL && ts->context == quiet_ctx)
        return cache_store(ts, NULL, set_epoch);
    nea_slow_lookups++;
    /* Read before the call: anything the call does that changes the epoch (it may
     * allocate, and a collection may close budgets) leaves this cache stale. */
    uint64_t epoch = set_epoch;
    PyObject *value = NULL;
    in_hook = 1;
    cache.epoch = 0; /* see in_hook */
    int rc = PyContextVar_Get(M.var, NULL, &value);
    in_hook = 0;
    if (NEA_UNLIKELY(rc < 0))
        return &fail_closed_slot;
    /* ts->context read after the call (should it ever create the thread's first one) */
    nea_slot *s = cache_store(ts, value, epoch);
    Py_XDECREF(value);
    /* (a thread may have no context yet; the epoch check: nothing ran during the call) */
    if (s == NULL && quiet_ctx == NULL && ts->context != NULL && epoch == set_epoch) {
        if (ts->context == last_quiet)
            quiet_ctx = Py_NewRef(ts->context);
        last_quiet = ts->context;
    }
    *idx = cache.idx;
    *gen = cache.gen;
    return s;
}

void nea_meter_trim_quiet(void)
{
    if (quiet_ctx != NULL && Py_REFCNT(quiet_ctx) == 1) {
        PyObject *ctx = quiet_ctx;
        quiet_ctx = NULL;
        Py_DECREF(ctx); /* may run finalizers of its values: done, nothing held */
    }
}


/* The open slot of the current budget in thread state `ts` (the caller's, already read),
 * from the cache when it is right. */
static NEA_INLINE nea_slot *current_slot_of(PyThreadState *ts, uint32_t *idx, uint64_t *gen)
{
    if (NEA_LIKELY(cache_hit(ts))) {
        *idx = cache.idx;
        *gen = cache.gen;
        return cache.slot;
    }
    if (M.open_count == 0) {
        /* No budget open anywhere: nothing to look up. Cached, so that the next
         * allocations here hit the hot paths' no-budget case: a budget can only become
         * current through nea_meter_set_current, which bumps the epoch (not inside a
         * guarded section, whose lookups must miss: see in_hook). */
        if (ts != NULL && ts->context != NULL && !in_hook && !M.disabled)
            cache_store(ts, NULL, set_epoch);
        return NULL;
    }
    return current_slot_slow(ts, idx, gen);
}

static NEA_INLINE nea_slot *current_slot(uint32_t *idx, uint64_t *gen)
{
    return current_slot_of(NEA_TSTATE(), idx, gen);
}

int nea_meter_set_current(PyObject *value)
{
    PyThreadState *ts = NEA_TSTATE();
    /* The allocations the set makes (its token, the context's new mapping) are charged,
     * as any, to the value being replaced: a cache that is right now stays right until the
     * value changes, which is the set's last step (it allocates nothing after). */
    int keep = cache_hit(ts);
    set_epoch++; /* other threads' caches: see nea_set_epoch */
    if (keep)
        cache.epoch = set_epoch;
    PyObject *token = PyContextVar_Set(M.var, value);
    set_epoch++; /* a lookup cached during the set is stale now */
    if (token == NULL)
        return -1;
    if (ts != NULL && ts->context == quiet_ctx) { /* its value changed */
        Py_DECREF(quiet_ctx); /* not the last reference: it is the current context */
        quiet_ctx = NULL;
    }
    /* The new value is known: cache it rather than look it up at the next allocation
     * (not inside a guarded section, whose lookups must miss: see in_hook). */
    if (ts != NULL && !in_hook && !M.disabled)
        cache_store(ts, value, set_epoch);
    else
        cache.ctx = NULL; /* its idx is stale, and nea_any_owner reads it without the epoch */
    Py_DECREF(token);
    return 0;
}

/* ---- hooks ------------------------------------------------------------------------- */

/* Table path: allocate from the previous allocator and record the block. */
static void *table_alloc(domain_hook *d, uint32_t idx, uint64_t gen, size_t nelem,
                         size_t elsize, size_t size, int zero)
{
    if (nea_block_reserve() < 0)
        return NULL;
    void *p = zero ? d->prev.calloc(d->prev.ctx, nelem, elsize)
                   : d->prev.malloc(d->prev.ctx, size);
    if (p == NULL)
        return NULL;
    /* The previous allocator never calls into our hooks, so the reservation holds. */
    tracked_add(p, size, idx, gen);
    return p;
}

static NEA_INLINE void *charged_alloc(domain_hook *d, nea_slot *s, uint32_t idx, uint64_t gen,
                           size_t nelem, size_t elsize, int zero)
{
    size_t size;
    if (elsize != 0 && nelem > SIZE_MAX / elsize)
        return NULL;
    size = nelem * elsize;
    if (over_limit(s, size))
        return NULL;
    /* Look the slot up again: a refusal check that let the allocation through (loop
     * machinery) walked frames, which can run the GC and finalizers that close or open
     * budgets (and move the slot array). */
    s = slot_at(idx, gen);
    void *p = NULL;
    if (NEA_LIKELY(s != NULL && s->region != RG_NONE)) {
        p = nea_rg_alloc(&nea_region.slots[s->region], size);
        if (p != NULL && zero)
            memset(p, 0, size);
    }
    if (p == NULL) {
        p = table_alloc(d, idx, gen, nelem, elsize, size, zero);
        if (p == NULL)
            return NULL;
        s = slot_at(idx, gen);
    }
    if (s != NULL)
        charge(s, size);
    return p;
}

static NEA_COLD void *hook_alloc_slow(domain_hook *d, nea_slot *s, uint32_t idx, uint64_t gen,
                                       size_t nelem, size_t elsize, int zero)
{
    if (NEA_UNLIKELY(s == &fail_closed_slot))
        return NULL;
    return charged_alloc(d, s, idx, gen, nelem, elsize, zero);
}

/* Fast path: a region holder is outermost (no chain to check or charge), and well under
 * its limit nothing can be refused (no frame walk, no GC). NULL: take the slow path. */
static NEA_INLINE void *holder_alloc(nea_slot *s, size_t size)
{
    if (!(s->region != RG_NONE && s->live <= s->limit && size <= s->limit - s->live))
        return NULL;
    void *p = nea_rg_alloc(&nea_region.slots[s->region], size);
    if (NEA_LIKELY(p != NULL)) {
        s->live += size;
        if (s->live > s->peak)
            s->peak = s->live;
        s->allocations++;
    }
    return p;
}

/* Everything but the hot case of malloc_hot (out of line, so the hot case saves no
 * registers): the cache missed, no region, a large block, a new class page, near the
 * limit. */
static NEA_COLD void *malloc_slow(domain_hook *d, PyThreadState *ts, size_t size)
{
    if (NEA_UNLIKELY(probing))
        probe_seen = 1;
    uint32_t idx;
    uint64_t gen;
    nea_slot *s = current_slot_of(ts, &idx, &gen);
    if (s == NULL)
        return d->prev.malloc(d->prev.ctx, size);
    void *p = holder_alloc(s, size);
    return NEA_LIKELY(p != NULL) ? p : hook_alloc_slow(d, s, idx, gen, size, 1, 0);
}

/* The hot case of an allocation: a small block from the current budget's region slot
 * (no_region_slot when it holds none: that fails). Applies when the budget stays within
 * its limit with `size` more (then nothing can be refused: no frame walk, no GC);
 * `live + size` cannot wrap, size is at most RG_SMALL_MAX. NULL: take the general path. */
static NEA_INLINE void *fast_small(nea_slot *s, rg_slot *rs, size_t size)
{
    size_t live = s->live + size;
    if (!(size - 1 < RG_SMALL_MAX && live <= s->limit))
        return NULL;
    void *p = nea_rg_take_small(rs, size);
    if (NEA_LIKELY(p != NULL)) {
        s->live = live;
        if (live > s->peak)
            s->peak = live;
        s->allocations++;
    }
    return p;
}

/* The hot cases: the cache is right and no budget is current (the server's own work, or
 * no budget open at all: see current_slot), or fast_small applies. No test of "any budget
 * open?" first: under load some budget almost always is, and the test would only cost
 * the budgeted allocations. Inlined into one hook per domain (see
 * NEA_DOMAIN_HOOKS), so `d` is a constant there. */
static NEA_INLINE void *malloc_hot(domain_hook *d, size_t size)
{
    PyThreadState *ts = NEA_TSTATE();
    if (NEA_LIKELY(cache_hit(ts))) {
        nea_slot *s = cache.slot;
        if (s == NULL)
            return d->prev.malloc(d->prev.ctx, size);
        void *p = fast_small(s, cache.rs, size);
        if (NEA_LIKELY(p != NULL))
            return p;
    }
    return malloc_slow(d, ts, size); /* the thread state is read once per allocation */
}

static NEA_COLD void *calloc_slow(domain_hook *d, PyThreadState *ts, size_t nelem,
                                   size_t elsize)
{
    uint32_t idx;
    uint64_t gen;
    nea_slot *s = current_slot_of(ts, &idx, &gen);
    if (s == NULL)
        return d->prev.calloc(d->prev.ctx, nelem, elsize);
    if (elsize == 0 || nelem <= SIZE_MAX / elsize) {
        void *p = holder_alloc(s, nelem * elsize);
        if (NEA_LIKELY(p != NULL))
            return memset(p, 0, nelem * elsize);
    }
    return hook_alloc_slow(d, s, idx, gen, nelem, elsize, 1);
}

static NEA_INLINE void *calloc_hot(domain_hook *d, size_t nelem, size_t elsize)
{
    PyThreadState *ts = NEA_TSTATE();
    if (NEA_LIKELY(cache_hit(ts))) {
        nea_slot *s = cache.slot;
        if (s == NULL)
            return d->prev.calloc(d->prev.ctx, nelem, elsize);
        if (NEA_LIKELY(nelem <= RG_SMALL_MAX && elsize <= RG_SMALL_MAX)) { /* no wrap */
            size_t size = nelem * elsize;
            void *p = fast_small(s, cache.rs, size);
            if (NEA_LIKELY(p != NULL))
                return memset(p, 0, size);
        }
    }
    return calloc_slow(d, ts, nelem, elsize);
}

/* Free a region block and un-charge its owner (nobody, when it escaped its budget). A
 * slot's holder is an open outermost budget (held <=> open): no check, no chain. */
static NEA_INLINE void region_free(void *ptr)
{
    size_t size;
    size_t *live = nea_rg_free(ptr, &size);
    if (live != NULL)
        *live = *live >= size ? *live - size : 0;
}

static NEA_COLD void region_free_slow(void *ptr) { region_free(ptr); }

/* A block that is not a region block, while the block table holds blocks. */
static NEA_COLD void table_free(domain_hook *d, void *ptr)
{
    if (ptr != NULL) {
        block_entry *e = nea_block_find((uintptr_t)ptr);
        if (e != NULL) {
            uncharge(e->owner, e->size);
            nea_block_delete(e);
        }
    }
    d->prev.free(d->prev.ctx, ptr);
}

/* The hot cases: a small region block of its slot's holder goes back to its class's free
 * list and un-charges the holder; a block from outside the region, with no block
 * recorded in the table, goes to the previous allocator.
 *
 * The holder's `live` needs no clamp at 0 here: it holds at least the sizes of all its
 * live region blocks (each was charged its size when taken and nothing un-charges an
 * outermost budget but its own blocks; a resize un-charges the old size and charges the
 * new one). Were that ever broken, `live` would wrap and the budget refuse everything:
 * loud and fail-closed, not a silent under-count. */
static NEA_INLINE void free_hot(domain_hook *d, void *ptr)
{
    if (nea_region_contains(ptr)) {
        rg_page *pg = nea_rg_page(ptr);
        rg_slot *rs = pg->rs;
        if (NEA_LIKELY(pg->hot_owner == rs->owner)) { /* a class page of the holder */
            *rs->holder_live -= nea_rg_free_small(pg, ptr);
            return;
        }
        region_free_slow(ptr);
        return;
    }
    if (NEA_UNLIKELY(nea_blocks.count != 0)) {
        table_free(d, ptr);
        return;
    }
    d->prev.free(d->prev.ctx, ptr);
}

/* A new block of `size` for the budget (idx, gen) (its slot `s`), from its region slot when
 * it has one and can serve it, else from the table path. Not charged yet: the caller
 * charges it once the old block is gone (so a move never counts both at once). */
static void *new_block(domain_hook *d, nea_slot *s, uint32_t idx, uint64_t gen, size_t size)
{
    void *p = s->region != RG_NONE ? nea_rg_alloc_moved(&nea_region.slots[s->region], size) : NULL;
    return p != NULL ? p : table_alloc(d, idx, gen, size, 1, size, 0);
}

/* Resize a region block. Its owner, when still open, keeps it and is charged the
 * difference (in place when the block stays in its class or is the run at the top of its
 * slot, else moved within the owner's slot or to the table path). A block that escaped
 * its budget is moved out: into the current budget (charged in full), or to the previous
 * allocator, uncharged, outside any budget. */
static void *region_realloc(domain_hook *d, void *ptr, size_t new_size)
{
    uint64_t owner = nea_rg_holder(ptr);
    size_t old = nea_rg_size(ptr);
    uint32_t idx = OWNER_IDX(owner);
    uint64_t gen = OWNER_GEN(owner);
    nea_slot *s = owner != RG_NOBODY ? slot_at(idx, gen) : NULL;
    void *p;
    if (s != NULL && s->state == NEA_SLOT_OPEN) {
        if (new_size > old && !M.disabled && !in_hook && over_limit(s, new_size - old))
            return NULL;
        s = slot_at(idx, gen); /* again: see charged_alloc */
        if (s != NULL && nea_rg_resize_in_place(ptr, new_size)) {
            uncharge(owner, old);
            charge(s, new_size);
            return ptr;
        }
        p = s != NULL ? new_block(d, s, idx, gen, new_size) : d->prev.malloc(d->prev.ctx, new_size);
    }
    else {
        s = current_slot(&idx, &gen);
        if (NEA_UNLIKELY(s == &fail_closed_slot))
            return NULL;
        if (s == NULL)
            p = d->prev.malloc(d->prev.ctx, new_size);
        else if (over_limit(s, new_size) || (s = slot_at(idx, gen)) == NULL)
            return NULL;
        else
            p = new_block(d, s, idx, gen, new_size);
    }
    if (p == NULL)
        return NULL;
    memcpy(p, ptr, old < new_size ? old : new_size);
    region_free(ptr); /* un-charges the owner (nobody, for an escaped block) */
    if (s != NULL && (s = slot_at(idx, gen)) != NULL)
        charge(s, new_size);
    return p;
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

static NEA_COLD void *realloc_slow(domain_hook *d, void *ptr, size_t new_size)
{
    if (ptr == NULL)
        return malloc_hot(d, new_size);
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

/* The hot cases: a region block (its own path); a block from outside the region, with
 * no block recorded in the table and no budget current (the server's own work), goes to
 * the previous allocator. */
static NEA_INLINE void *realloc_hot(domain_hook *d, void *ptr, size_t new_size)
{
    if (nea_region_contains(ptr))
        return region_realloc(d, ptr, new_size);
    if (NEA_LIKELY(nea_blocks.count == 0)) {
        if (M.open_count == 0)
            return d->prev.realloc(d->prev.ctx, ptr, new_size);
        PyThreadState *ts = NEA_TSTATE();
        if (NEA_LIKELY(cache_hit(ts) && cache.slot == NULL))
            return d->prev.realloc(d->prev.ctx, ptr, new_size);
    }
    return realloc_slow(d, ptr, new_size);
}

/* One set of hooks per domain, each with its domain_hook as a constant rather than read
 * from `ctx`: the hot paths then keep nothing live across the thread-state call but
 * `size` (no callee-saved register for `d`), and the forwarding tail calls load the
 * previous allocator directly. */
#define NEA_DOMAIN_HOOKS(dom)                                                               \
    static void *hook_malloc_##dom(void *ctx, size_t size)                                 \
    {                                                                                      \
        (void)ctx;                                                                         \
        return malloc_hot(&M.dom, size);                                                   \
    }                                                                                      \
    static void *hook_calloc_##dom(void *ctx, size_t nelem, size_t elsize)                 \
    {                                                                                      \
        (void)ctx;                                                                         \
        return calloc_hot(&M.dom, nelem, elsize);                                          \
    }                                                                                      \
    static void *hook_realloc_##dom(void *ctx, void *ptr, size_t new_size)                 \
    {                                                                                      \
        (void)ctx;                                                                         \
        return realloc_hot(&M.dom, ptr, new_size);                                         \
    }                                                                                      \
    static void hook_free_##dom(void *ctx, void *ptr)                                      \
    {                                                                                      \
        (void)ctx;                                                                         \
        free_hot(&M.dom, ptr);                                                             \
    }
NEA_DOMAIN_HOOKS(mem)
NEA_DOMAIN_HOOKS(obj)

/* ---- other allocators (numpy's array data) ------------------------------------------
 *
 * Blocks of allocators other than PyMem's are charged through the block table, like the
 * table path's blocks: to the budget current when they are made, un-charged whichever
 * context frees them. The caller holds the GIL (numpy.c forwards calls made without it,
 * uncharged). */

int nea_foreign_admit(size_t size, uint32_t *idx, uint64_t *gen)
{
    if (M.disabled || in_hook)
        return 0;
    nea_slot *s = current_slot(idx, gen);
    if (s == NULL)
        return 0;
    if (NEA_UNLIKELY(s == &fail_closed_slot))
        return -1;
    if (over_limit(s, size) || nea_block_reserve() < 0)
        return -1;
    return 1;
}

void nea_foreign_record(void *p, size_t size, uint32_t idx, uint64_t gen)
{
    tracked_add(p, size, idx, gen); /* room reserved by nea_foreign_admit */
    nea_slot *s = slot_at(idx, gen);
    if (s != NULL)
        charge(s, size);
}

void nea_foreign_forget(void *p)
{
    if (p == NULL || nea_blocks.count == 0)
        return;
    block_entry *e = nea_block_find((uintptr_t)p);
    if (e != NULL) {
        uncharge(e->owner, e->size);
        nea_block_delete(e);
    }
}

/* ---- the door for trips.c and anyblocks.c ---------------------------------------- */

int nea_meter_current_owner(uint32_t *idx, uint64_t *gen)
{
    if (in_hook)
        return 0;
    nea_slot *s = current_slot(idx, gen);
    return s != NULL && s != &fail_closed_slot;
}

/* Without the GIL: the thread's lookup cache, when it still describes the thread's context
 * (see anyblocks.c); never a guess. */
int nea_meter_cached_owner(PyThreadState *ts, uint32_t *idx, uint64_t *gen)
{
    if (ts == NULL || ts->context == NULL || ts->context != cache.ctx ||
        ts->context_ver != cache.ver || cache.idx == NEA_NO_SLOT)
        return 0;
    *idx = cache.idx;
    *gen = cache.gen;
    return 1;
}

int nea_meter_guard(void)
{
    int saved = in_hook;
    in_hook = 1;
    cache.epoch = 0; /* see in_hook */
    return saved;
}

void nea_meter_unguard(int saved) { in_hook = saved; }

/* ---- lifecycle --------------------------------------------------------------------- */

int nea_meter_init(PyObject *var)
{
    if (M.var == NULL) {
        Py_INCREF(var);
        M.var = var;
        nea_rg_slot_init(&no_region_slot);
    }
    return 0;
}

static void hook_domain(PyMemAllocatorDomain domain, domain_hook *d)
{
    PyMem_GetAllocator(domain, &d->prev);
    d->ours.ctx = d; /* unused by the hooks; tells the domains apart in nea_meter_installed */
    if (d == &M.mem) {
        d->ours.malloc = hook_malloc_mem;
        d->ours.calloc = hook_calloc_mem;
        d->ours.realloc = hook_realloc_mem;
        d->ours.free = hook_free_mem;
    }
    else {
        d->ours.malloc = hook_malloc_obj;
        d->ours.calloc = hook_calloc_obj;
        d->ours.realloc = hook_realloc_obj;
        d->ours.free = hook_free_obj;
    }
    PyMem_SetAllocator(domain, &d->ours);
}

int nea_meter_installed(void)
{
    PyMemAllocatorEx mem, obj;
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &mem);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &obj);
    return mem.malloc == hook_malloc_mem && mem.ctx == &M.mem && obj.malloc == hook_malloc_obj &&
           obj.ctx == &M.obj;
}

/* tracemalloc.is_tracing(), without importing it; 1 (fail closed) when it cannot tell.
 * Leaves any pending exception as it was. */
static int tracemalloc_tracing(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int tracing = 1;
    PyObject *name = PyUnicode_FromString("tracemalloc");
    PyObject *module = name ? PyImport_GetModule(name) : NULL;
    Py_XDECREF(name);
    if (module == NULL) {
        tracing = PyErr_Occurred() != NULL; /* not imported: not tracing */
    }
    else {
        PyObject *result = PyObject_CallMethod(module, "is_tracing", NULL);
        tracing = result == NULL || PyObject_IsTrue(result) != 0;
        Py_XDECREF(result);
        Py_DECREF(module);
    }
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
    return tracing;
}

int nea_meter_in_chain(void)
{
    if (nea_meter_installed())
        return 1; /* ours are the hooks the domains call first */
    if (!M.installed)
        return 0;
    /* Someone else's hooks are first (tracemalloc, memray, a profiler). Do they call ours?
     * One allocation per domain answers it, whatever the order in which hooks were
     * installed and removed. */
    int saved = in_hook;
    in_hook = 0;
    probing = 1;
    int seen = 1;
    probe_seen = 0;
    cache.epoch = 0;
    PyMem_Free(PyMem_Malloc(16));
    seen &= probe_seen;
    probe_seen = 0;
    cache.epoch = 0;
    PyObject_Free(PyObject_Malloc(16));
    seen &= probe_seen;
    probing = 0;
    in_hook = saved;
    return seen;
}

int nea_meter_install(void)
{
    if (M.var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "nea._meter is not initialised");
        return -1;
    }
    /* Already in the chain (first, or below hooks installed after ours, which call ours):
     * installing again on top would make ours call theirs call ours (a loop). */
    if (nea_meter_in_chain())
        return 0;
    if (nea_block_reserve() < 0) {
        PyErr_NoMemory();
        return -1;
    }
    /* Not in the chain: never installed, or someone (tracemalloc.stop() restoring what it
     * saved before ours were installed) dropped ours. Chain on top of whatever is there.
     * With tracemalloc tracing, its hooks end up below ours: its stop() would unhook us
     * and a region block could then reach pymalloc's free. No region until we are
     * installed again without it (see docs/internals/region.md). */
    nea_region.allowed = !tracemalloc_tracing();
    nea_any_atfork_once();
    hook_domain(PYMEM_DOMAIN_MEM, &M.mem);
    hook_domain(PYMEM_DOMAIN_OBJ, &M.obj);
    M.installed = 1;
    M.disabled = 0;
    return 0;
}

void nea_meter_disable(void)
{
    M.disabled = 1;
    set_epoch++;
}

