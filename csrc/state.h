/* state.h: the meter's state shared by meter.c (hooks, charging), slots.c (opening and
 * closing budgets, reports), trips.c (trips and their delivery) and anyblocks.c (C
 * libraries' blocks). Private to the extension; guarded by the GIL unless a field says
 * otherwise.
 */
#ifndef NEA_STATE_H
#define NEA_STATE_H

#include "meter.h"
#include "blocks.h"

#if defined(__GNUC__) || defined(__clang__)
#define NEA_TLS __thread __attribute__((tls_model("initial-exec")))
#else
#define NEA_TLS _Thread_local
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
typedef struct {
    PyObject *var;            /* the `current` contextvar (strong ref, never released) */
    int installed;
    int disabled;             /* set at interpreter exit */
    uint32_t open_count;      /* OPEN slots; 0 = hooks only forward and un-charge */
    uint32_t forward_count;
    nea_slot *slots;
    uint32_t slot_cap, slot_used, free_head;
    domain_hook mem, obj;
} nea_state;

extern nea_state nea_M NEA_HIDDEN;
/* Bumped whenever a cached current-budget slot pointer may be stale (meter.c). */
extern uint64_t nea_set_epoch NEA_HIDDEN;
extern uint64_t nea_slow_lookups NEA_HIDDEN;
/* Give back meter.c's reference to a no-budget context once it is the only one (call
 * where finalizers may run: not inside a hook's table operation). */
void nea_meter_trim_quiet(void) NEA_HIDDEN;

/* Charging another allocator's blocks (numpy.c); GIL held. admit: 1 to allocate and then
 * record the block, 0 to allocate uncharged (no budget current), -1 to fail (refused past
 * a ceiling, or the table cannot grow). record: charge the new block to (idx, gen).
 * forget: un-charge a block about to be freed (nothing if it was never recorded). */
int nea_foreign_admit(size_t size, uint32_t *idx, uint64_t *gen) NEA_HIDDEN;
void nea_foreign_record(void *p, size_t size, uint32_t idx, uint64_t gen) NEA_HIDDEN;
void nea_foreign_forget(void *p) NEA_HIDDEN;

/* Charging C libraries' malloc blocks (clibs.c), from any thread, with or without the GIL
 * (anyblocks.c). owner: 1 and the budget of the calling thread (and whether it holds the
 * GIL, asked once per call), 0 for none. record: charge a new block to (idx, gen) (-1: the
 * table cannot grow). forget: un-charge a block about to be freed. detach: like forget,
 * returning 1 and the block's size and owner when it was recorded and its owner is still
 * open. */
typedef struct {
    uint32_t idx;             /* the budget charged */
    uint64_t gen;
    int gil;                  /* the calling thread holds the GIL */
} nea_any_owner_t;
int nea_any_owner(nea_any_owner_t *owner) NEA_HIDDEN;
int nea_any_record(void *p, size_t size, const nea_any_owner_t *owner) NEA_HIDDEN;
void nea_any_forget(void *p) NEA_HIDDEN;
int nea_any_detach(void *p, size_t *size, nea_any_owner_t *owner) NEA_HIDDEN;
/* Set while numpy.c calls numpy's own allocator: the wrapped malloc underneath forwards
 * uncharged (the block is charged once, by numpy.c). */
extern NEA_TLS int nea_any_busy NEA_HIDDEN;
/* The lock the C libraries' side takes; slots.c holds it while it opens, closes or moves
 * slots, so a thread without the GIL never charges a slot that is changing hands. */
void nea_any_lock(void) NEA_HIDDEN;
void nea_any_unlock(void) NEA_HIDDEN;
void nea_any_table_size(size_t *count, size_t *cap) NEA_HIDDEN; /* C-library blocks recorded */
/* The calling thread's state, through meter.c's pointer (one indirect call). */
extern PyThreadState *(*nea_get_tstate)(void) NEA_HIDDEN;
#define NEA_TSTATE() nea_get_tstate()

/* trips.c: budget `t` is past its limit with `size` more: trip it (and owe a delivery when
 * `owe`); returns the slot again, or NULL when it is gone. Past its ceiling: refuse (1) or
 * let the event loop's own work through (0). May a sharing budget past its ceiling still
 * take `size` (the memory plan)? (GIL) */
nea_slot *nea_trip(nea_slot *t, size_t size, int owe) NEA_HIDDEN;
int nea_refuse(nea_slot *t, size_t size) NEA_HIDDEN;
int nea_within_shared_ceiling(const nea_slot *s, size_t size) NEA_HIDDEN;
void nea_meter_wake_loop(void) NEA_HIDDEN;     /* wake the main thread's event loop */
void nea_meter_arm_delivery(void) NEA_HIDDEN;  /* queue the trip-delivery call (GIL) */
/* The innermost Python frame of thread `ident` (new ref and *line), or NULL (GIL). */
PyObject *nea_meter_thread_site(unsigned long ident, int *line) NEA_HIDDEN;

/* meter.c's door for trips.c and anyblocks.c. The current budget's (idx, gen) with the
 * GIL: 1, or 0 for none (also inside the meter's guard); without it, from the thread's
 * lookup cache when that still describes `ts`'s context. */
int nea_meter_current_owner(uint32_t *idx, uint64_t *gen) NEA_HIDDEN;
int nea_meter_cached_owner(PyThreadState *ts, uint32_t *idx, uint64_t *gen) NEA_HIDDEN;
/* Run code that may allocate with the hooks forwarding uncharged: guard() returns what
 * unguard() restores (GIL). */
int nea_meter_guard(void) NEA_HIDDEN;
void nea_meter_unguard(int saved) NEA_HIDDEN;
/* Register anyblocks.c's fork handler (once). */
void nea_any_atfork_once(void) NEA_HIDDEN;

/* Fold the slot's pending C-library bytes into `live` (GIL and nea_any_lock held). */
void nea_any_fold_locked(nea_slot *s) NEA_HIDDEN;
/* Give the C libraries' table memory back after a spike (nea_any_lock held). */
void nea_any_maybe_shrink_locked(void) NEA_HIDDEN;


static NEA_INLINE nea_slot *slot_at(uint32_t idx, uint64_t gen)
{
    if (idx >= nea_M.slot_used)
        return NULL;
    nea_slot *s = &nea_M.slots[idx];
    return (s->gen == gen && s->state != NEA_SLOT_FREE) ? s : NULL;
}

static NEA_INLINE nea_slot *slot_parent(const nea_slot *s)
{
    return s->parent == NEA_NO_SLOT ? NULL : slot_at(s->parent, s->parent_gen);
}

#endif
