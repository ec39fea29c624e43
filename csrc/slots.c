/* slots.c: opening and closing budgets in the meter's slot table, their reports, and the
 * counters the Python side reads (table_info, region_info, region_slots).
 *
 * Owns: the slot lifecycle (open, close, forwarding, release with a new generation) and
 * handing region slots to outermost budgets. Shares the state with meter.c via state.h.
 * May call Python only to build result objects; never allocates through the hooked
 * domains for its tables (libc realloc).
 */
#include "region.h"
#include "state.h"

#include <stdlib.h>
#include <string.h>

#define M nea_M
#define set_epoch nea_set_epoch

nea_state nea_M = {.free_head = NEA_NO_SLOT};

size_t nea_default_ceiling(size_t limit)
{
    size_t headroom = limit > NEA_MIN_HEADROOM ? limit : NEA_MIN_HEADROOM;
    return limit + headroom >= limit ? limit + headroom : SIZE_MAX;
}

/* Codes of released slots' refusal sites, dropped once nea_any_lock is let go (a
 * dealloc may run Python, which may reach a C library's malloc and that lock). */
static PyObject **dropped;
static size_t dropped_count, dropped_cap;

static void drop_later(PyObject *code)
{
    if (code == NULL)
        return;
    if (dropped_count == dropped_cap) {
        size_t cap = dropped_cap ? dropped_cap * 2 : 16;
        PyObject **grown = realloc(dropped, cap * sizeof(*grown));
        if (grown == NULL)
            return; /* kept alive: a code object is rarely freed anyway */
        dropped = grown;
        dropped_cap = cap;
    }
    dropped[dropped_count++] = code;
}

static void drop_now(void)
{
    while (dropped_count != 0)
        Py_DECREF(dropped[--dropped_count]); /* may free memory: our free hook runs */
}

static int slot_open_locked(size_t limit, size_t ceiling, int shares, const nea_handle *parent,
                            uint32_t *idx, uint64_t *gen)
{
    uint32_t i = M.free_head;
    if (i != NEA_NO_SLOT) {
        M.free_head = M.slots[i].next_free;
    }
    else {
        if (M.slot_used == NEA_MAX_SLOTS)
            return -2;
        if (M.slot_used == M.slot_cap) {
            uint32_t cap = M.slot_cap ? M.slot_cap * 2 : 64;
            if (cap > NEA_MAX_SLOTS)
                cap = NEA_MAX_SLOTS;
            nea_slot *slots = realloc(M.slots, (size_t)cap * sizeof(nea_slot));
            if (slots == NULL)
                return -1;
            M.slots = slots;
            M.slot_cap = cap;
            set_epoch++; /* cached slot pointers point into the old array */
            for (uint32_t r = 0; r < nea_region.nslots; r++) /* and the holders' */
                if (nea_region.slots[r].held)
                    nea_region.slots[r].holder_live =
                        &M.slots[OWNER_IDX(nea_region.slots[r].holder)].live;
        }
        i = M.slot_used++;
        M.slots[i].gen = 0;
        M.slots[i].refused_code = NULL;
    }
    nea_slot *s = &M.slots[i];
    uint64_t g = s->gen;
    drop_later(s->refused_code); /* normally NULL already (cleared at release) */
    memset(s, 0, sizeof(*s));
    s->gen = g;
    s->limit = limit;
    s->ceiling = ceiling < limit ? limit : ceiling;
    s->owe_above = limit;
    s->shares = shares != 0;
    s->state = NEA_SLOT_OPEN;
    s->parent = NEA_NO_SLOT;
    nea_slot *p = parent != NULL ? slot_at(parent->idx, parent->gen) : NULL;
    if (p != NULL && p->state == NEA_SLOT_OPEN) {
        s->parent = parent->idx;
        s->parent_gen = parent->gen;
    }
    s->next_free = NEA_NO_SLOT;
    /* Only outermost budgets are served from the region: a page names one owner, and an
     * inner budget's blocks must un-charge the inner budget too (the table path does). */
    s->region = s->parent == NEA_NO_SLOT ? nea_region_acquire(OWNER(i, g)) : RG_NONE;
    if (s->region != RG_NONE)
        nea_region.slots[s->region].holder_live = &s->live;
    M.open_count++;
    *idx = i;
    *gen = g;
    return 0;
}

int nea_slot_open(size_t limit, size_t ceiling, int shares, const nea_handle *parent,
                  uint32_t *idx, uint64_t *gen)
{
    nea_any_lock();
    int rc = slot_open_locked(limit, ceiling, shares, parent, idx, gen);
    nea_any_unlock();
    drop_now();
    if (rc == -2)
        PyErr_Format(PyExc_MemoryError, "nea: %u budgets are open at once, the most the "
                     "meter supports; close budgets before opening more", NEA_MAX_SLOTS);
    else if (rc < 0)
        PyErr_NoMemory();
    return rc < 0 ? -1 : 0;
}

static void fill_report(const nea_slot *s, nea_report *out)
{
    out->limit = s->limit;
    out->ceiling = s->ceiling;
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
    /* C libraries' bytes charged without the GIL: folded in when there are any (read
     * racily first: a charge under way now is folded in by the next report or the fold
     * call; the hot getters, read on every message a request sends, stay lock-free). */
    if (__atomic_load_n(&s->pending, __ATOMIC_RELAXED) != 0 ||
        __atomic_load_n(&s->pending_peak, __ATOMIC_RELAXED) != 0 ||
        __atomic_load_n(&s->crossed_size, __ATOMIC_RELAXED) != 0) {
        nea_any_lock();
        nea_any_fold_locked(s);
        nea_any_unlock();
    }
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
    drop_later(s->refused_code);
    s->refused_code = NULL;
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
    set_epoch++; /* cached pointers to this slot must not be used any more */
    nea_any_lock();
    nea_any_fold_locked(s);
    if (s->region != RG_NONE) {
        nea_region_close(s->region, s->live); /* live blocks: an earlier holder's now */
        s->region = RG_NONE;
    }
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
    nea_any_maybe_shrink_locked();
    nea_any_unlock();
    drop_now();
    nea_block_maybe_shrink();
    nea_meter_trim_quiet(); /* last: it may run finalizers */
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
                         (unsigned long long)nea_slow_lookups, "displacement_total", total,
                         "displacement_max", worst);
}

void nea_meter_region_enable(int on) { nea_region.enabled = on; }

void nea_meter_region_allow(int ok) { nea_region.allowed = ok; }

PyObject *nea_meter_region_info(void)
{
    unsigned long long top = 0, pinned = 0, touched = 0, rw = 0;
    for (uint32_t i = 0; i < nea_region.nslots; i++) {
        rw += nea_region.slots[i].rw;
        top += nea_region.slots[i].top;
        pinned += nea_region.slots[i].pinned;
        touched += nea_region.slots[i].touched;
    }
    return Py_BuildValue(
        "{s:i,s:i,s:I,s:n,s:n,s:I,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:n,s:K,s:K,s:K}", "enabled",
        nea_region.enabled, "allowed", nea_region.allowed, "slots", nea_region.nslots,
        "slot_bytes", (Py_ssize_t)nea_region.stride, "mapped", (Py_ssize_t)nea_region.span,
        "held", nea_region.held, "pages_carved", top, "pinned_runs", pinned, "pages_touched",
        touched, "fast_resets", (unsigned long long)nea_region.fast_resets, "scan_resets",
        (unsigned long long)nea_region.scan_resets, "fallbacks",
        (unsigned long long)nea_region.fallbacks, "served",
        (unsigned long long)nea_region.served, "page_bytes", (Py_ssize_t)RG_PAGE, "pages_writable",
        rw, "grow_failures", (unsigned long long)nea_region.grow_failures, "base",
        (unsigned long long)(uintptr_t)nea_region.base);
}

PyObject *nea_meter_region_slots(void)
{
    PyObject *list = PyList_New(0);
    for (uint32_t i = 0; list != NULL && i < nea_region.nslots; i++) {
        rg_slot *rs = &nea_region.slots[i];
        unsigned long long runs = 0, run_pages = 0;
        for (rg_page *r = rs->runs; r != NULL; r = r->next) {
            runs++;
            run_pages += r->npages;
        }
        PyObject *t = Py_BuildValue("{s:i,s:I,s:I,s:I,s:K,s:K}", "held", rs->held, "top",
                                    rs->top, "pinned", rs->pinned, "touched", rs->touched,
                                    "free_runs", runs,
                                    "free_run_pages", run_pages);
        if (t == NULL || PyList_Append(list, t) < 0)
            Py_CLEAR(list);
        Py_XDECREF(t);
    }
    return list;
}
