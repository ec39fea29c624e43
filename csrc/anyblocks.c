/* anyblocks.c: the blocks of C libraries' malloc, charged from any thread.
 *
 * Owns: the table of C-library blocks and its lock (any_lock, also taken by slots.c while a
 * slot opens or closes or the slot array moves), the slots' pending counts and the fold
 * call that brings them into `live`. Reaches the meter's lookup cache, its re-entrancy
 * guard and its delivery machinery only through meter.c's door (state.h). Must not call
 * Python while any_lock is held, nor ever from a library's malloc.
 */
#include "meter.h"
#include "blocks.h"
#include "state.h"

#include <pthread.h>

#define M nea_M

/*
 * clibs.c reports the malloc blocks of C libraries (Pillow, lxml, sqlite3, OpenSSL, ...).
 * Those calls come with or without the GIL, from the request's own threads or from threads
 * nobody started in Python, and from inside the libraries' own locks. So this side never
 * runs Python and never waits for the GIL; its state (the table of C-library blocks and the
 * slots' pending fields) is guarded by any_lock, which slots.c also holds while a slot
 * opens, closes or the slot array moves.
 *
 * Whose block: the budget current in the calling thread. With the GIL that is the usual
 * lookup. Without it, the thread's own lookup cache, when it still describes the thread's
 * context: a thread's context changes only while that thread holds the GIL, and a context
 * runs in one thread at a time, so the cache is as right as it was when the thread let the
 * GIL go. Anything else (a thread with no Python state, a context never looked up) is
 * charged to no budget, never to a wrong one: the slot is checked against its generation
 * under the lock.
 *
 * Charging: with the GIL, into `live` at once; without it, into the slot's `pending`,
 * which the GIL side folds into `live` (at close, in reports, and from a pending call
 * queued once pending passes NEA_FOLD_BYTES). A crossing of the limit is recorded
 * (`crossed_*`) and the same pending call trips the budget and owes the delivery to the
 * allocating thread: Python runs only there, at a bytecode boundary, never inside a
 * library's malloc. C libraries' blocks are never refused: a library handed NULL may abort
 * the process (glib does), so they trip and the exception stops the request at its next
 * safe point.
 *
 * Reads of `live`, `limit` and `owe_above` without the GIL race with the GIL side's plain
 * stores; they are single aligned words, read as relaxed atomics, and only decide when to
 * trip a little earlier or later. */

#define NEA_FOLD_BYTES ((ptrdiff_t)256 << 10)

static pthread_mutex_t any_lock = PTHREAD_MUTEX_INITIALIZER;
static block_table any_blocks = {.window = NEA_C_WINDOW_BITS}; /* any_lock */
static int fold_armed;         /* atomic: the fold call is queued */
NEA_TLS int nea_any_busy;

void nea_any_lock(void) { pthread_mutex_lock(&any_lock); }
void nea_any_unlock(void) { pthread_mutex_unlock(&any_lock); }

void nea_any_table_size(size_t *count, size_t *cap)
{
    nea_any_lock();
    *count = any_blocks.count;
    *cap = any_blocks.cap;
    nea_any_unlock();
}

static void any_atfork_child(void) { pthread_mutex_init(&any_lock, NULL); }

void nea_any_atfork_once(void)
{
    static int registered;
    if (!registered && pthread_atfork(NULL, NULL, any_atfork_child) == 0)
        registered = 1;
}

int nea_any_owner(nea_any_owner_t *owner)
{
    if (nea_any_busy || __atomic_load_n(&M.open_count, __ATOMIC_RELAXED) == 0 ||
        __atomic_load_n(&M.disabled, __ATOMIC_RELAXED))
        return 0;
    owner->gil = PyGILState_Check();
    if (owner->gil)
        return nea_meter_current_owner(&owner->idx, &owner->gen);
    return nea_meter_cached_owner(PyGILState_GetThisThreadState(), &owner->idx, &owner->gen);
}

static int fold_call(void *arg);

/* Queue the fold call (once until it runs); wake the main thread's loop if it may sleep. */
static void arm_fold(void)
{
    /* a plain read first: a long C call without the GIL asks on every block once it has
     * much pending, and the call cannot run before the thread returns */
    if (__atomic_load_n(&fold_armed, __ATOMIC_RELAXED) ||
        __atomic_load_n(&M.disabled, __ATOMIC_RELAXED) ||
        __atomic_exchange_n(&fold_armed, 1, __ATOMIC_ACQ_REL))
        return;
    if (Py_AddPendingCall(fold_call, NULL) != 0) {
        __atomic_store_n(&fold_armed, 0, __ATOMIC_RELEASE); /* the queue is full: next time */
        return;
    }
    nea_meter_wake_loop();
}

/* Charge (sign 1) or un-charge (-1) `size` to (idx, gen)'s open budgets; any_lock held.
 * Returns 1 when the fold call must run (a crossing, or much pending). */
static int any_apply_locked(uint32_t idx, uint64_t gen, size_t size, int sign, int gil)
{
    int fold = 0;
    for (nea_slot *t = slot_at(idx, gen); t != NULL; t = slot_parent(t)) {
        if (t->state != NEA_SLOT_OPEN)
            continue;
        if (gil) {
            if (sign > 0) {
                t->live += size;
                if (t->live > t->peak)
                    t->peak = t->live;
                t->allocations++;
            }
            else {
                t->live = t->live >= size ? t->live - size : 0;
            }
        }
        else {
            t->pending += sign * (ptrdiff_t)size;
            t->pending_allocations += sign > 0;
            if (t->pending >= NEA_FOLD_BYTES || t->pending <= -NEA_FOLD_BYTES)
                fold = 1;
        }
        if (sign < 0)
            continue;
        if (__atomic_load_n(&t->owed, __ATOMIC_RELAXED))
            fold = 1; /* a declined delivery: try again at the next safe point */
        size_t live = __atomic_load_n(&t->live, __ATOMIC_RELAXED);
        size_t owed_back = t->pending < 0 ? (size_t)-t->pending : 0;
        size_t used = t->pending >= 0 ? live + (size_t)t->pending
                                      : live - (live < owed_back ? live : owed_back);
        if (!gil && used > t->pending_peak)
            t->pending_peak = used;
        if (t->crossed_size == 0 && used > __atomic_load_n(&t->limit, __ATOMIC_RELAXED) &&
            used > __atomic_load_n(&t->owe_above, __ATOMIC_RELAXED)) {
            t->crossed_size = size != 0 ? size : 1;
            t->crossed_thread = PyThread_get_thread_ident();
            if (gil)
                nea_any_fold_locked(t); /* trips it now: the fold call adds the site */
            fold = 1;
        }
    }
    return fold;
}

int nea_any_record(void *p, size_t size, const nea_any_owner_t *owner)
{
    uint32_t idx = owner->idx;
    uint64_t gen = owner->gen;
    int gil = owner->gil, fold = 0;
    nea_any_lock();
    nea_slot *s = slot_at(idx, gen);
    if (s == NULL || s->state != NEA_SLOT_OPEN) { /* closed since the lookup */
        nea_any_unlock();
        return 0;
    }
    if (bt_reserve(&any_blocks) < 0) {
        nea_any_unlock();
        return -1;
    }
    int existed;
    block_entry *e = bt_slot_for(&any_blocks, (uintptr_t)p, &existed);
    if (NEA_UNLIKELY(existed)) /* freed behind our back (by code that is not patched) */
        fold |= any_apply_locked(OWNER_IDX(e->owner), OWNER_GEN(e->owner), e->size, -1, gil);
    e->ptr = (uintptr_t)p;
    e->size = size;
    e->owner = OWNER(idx, gen);
    fold |= any_apply_locked(idx, gen, size, 1, gil);
    nea_any_unlock();
    if (fold)
        arm_fold();
    return 0;
}

int nea_any_detach(void *p, size_t *size, nea_any_owner_t *owner)
{
    if (__atomic_load_n(&any_blocks.count, __ATOMIC_RELAXED) == 0)
        return 0;
    int found = 0, fold = 0;
    owner->gil = PyGILState_Check();
    nea_any_lock();
    block_entry *e = bt_find(&any_blocks, (uintptr_t)p);
    if (e != NULL) {
        *size = e->size;
        owner->idx = OWNER_IDX(e->owner);
        owner->gen = OWNER_GEN(e->owner);
        bt_delete(&any_blocks, e);
        fold = any_apply_locked(owner->idx, owner->gen, *size, -1, owner->gil);
        nea_slot *s = slot_at(owner->idx, owner->gen);
        found = s != NULL && s->state == NEA_SLOT_OPEN; /* a closed owner keeps nothing */
    }
    nea_any_unlock();
    if (fold)
        arm_fold();
    return found;
}

void nea_any_forget(void *p)
{
    size_t size;
    nea_any_owner_t owner;
    (void)nea_any_detach(p, &size, &owner);
}

/* Only every NEA_SHRINK_CLOSES closes: a server whose requests each parse a large document
 * would otherwise regrow the table from its smallest size in every request (nine rehashes
 * for 800,000 blocks), and a burst's table is given back a few hundred requests later. */
#define NEA_SHRINK_CLOSES 256u

void nea_any_maybe_shrink_locked(void)
{
    static unsigned closes;
    if (++closes % NEA_SHRINK_CLOSES == 0)
        bt_maybe_shrink(&any_blocks);
}

void nea_any_fold_locked(nea_slot *t)
{
    if (t->pending != 0 || t->pending_peak != 0) {
        if (t->pending >= 0)
            t->live += (size_t)t->pending;
        else
            t->live = t->live >= (size_t)-t->pending ? t->live - (size_t)-t->pending : 0;
        if (t->pending_peak > t->peak)
            t->peak = t->pending_peak;
        if (t->live > t->peak)
            t->peak = t->live;
        t->allocations += t->pending_allocations;
        t->pending = 0;
        t->pending_peak = 0;
        t->pending_allocations = 0;
    }
    if (t->crossed_size == 0 || t->state != NEA_SLOT_OPEN)
        return;
    if (!t->tripped) {
        t->tripped = 1;
        t->refused_size = t->crossed_size; /* the site is filled in by the fold call */
    }
    /* Owed even when the bytes are gone again (a C call that freed its working set before
     * it returned): the crossing was checked against owe_above when it happened. */
    t->owed = 1;
    t->owe_above = SIZE_MAX;
    t->owed_thread = t->crossed_thread;
    t->crossed_size = 0;
}

/* The pending call for C libraries' bytes (main thread, GIL, a bytecode boundary): fold
 * every slot's pending bytes, trip the budgets a library's allocation took past their
 * limit, and queue the delivery for those that owe one. */
static int fold_call(void *Py_UNUSED(arg))
{
    __atomic_store_n(&fold_armed, 0, __ATOMIC_RELEASE);
    if (M.disabled)
        return 0;
    int owed = 0;
    nea_any_lock();
    for (uint32_t i = 0; i < M.slot_used; i++) {
        nea_slot *s = &M.slots[i];
        if (s->state != NEA_SLOT_FREE)
            nea_any_fold_locked(s);
        owed |= s->state == NEA_SLOT_OPEN && s->owed;
    }
    nea_any_unlock();
    /* The site of a trip a library's allocation made: where its thread is now (the Python
     * line that called into the library, or what runs after it). The slot array may move
     * while Python runs: index, not pointer. */
    int saved = nea_meter_guard();
    for (uint32_t i = 0; i < M.slot_used; i++) {
        nea_slot *s = &M.slots[i];
        if (s->state != NEA_SLOT_OPEN || !s->tripped || s->refused_code != NULL)
            continue;
        uint64_t gen = s->gen;
        int line = 0;
        unsigned long thread = s->owed ? s->owed_thread : PyThread_get_thread_ident();
        PyObject *code = nea_meter_thread_site(thread, &line);
        s = slot_at(i, gen);
        if (s == NULL || s->refused_code != NULL) {
            Py_XDECREF(code);
            continue;
        }
        s->refused_code = code;
        s->refused_line = line;
    }
    nea_meter_unguard(saved);
    if (owed)
        nea_meter_arm_delivery();
    return 0;
}
