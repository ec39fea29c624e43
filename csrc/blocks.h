/* blocks.h: the block tables of nea's meter: which budget owns each recorded block, and
 * its size. Open addressing with linear probing, at most half full, in libc memory (never
 * the hooked allocator domains, so a hook never re-enters a table operation). The meter's
 * own table (nea_blocks) is guarded by the GIL; the C libraries' table has its own lock
 * (meter.c). The lookups used on every allocation and free are inline here; growth, shrinking
 * and deletion live in blocks.c.
 */
#ifndef NEA_BLOCKS_H
#define NEA_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define NEA_INLINE inline __attribute__((always_inline))
#define NEA_COLD __attribute__((cold, noinline))
#define NEA_HIDDEN __attribute__((visibility("hidden")))
#define NEA_LIKELY(x) __builtin_expect(!!(x), 1)
#define NEA_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define NEA_INLINE inline
#define NEA_COLD
#define NEA_HIDDEN
#define NEA_LIKELY(x) (x)
#define NEA_UNLIKELY(x) (x)
#endif

typedef struct {
    uintptr_t ptr;            /* 0 = empty */
    size_t size;
    uint64_t owner;           /* slot index and generation, see meter.c */
} block_entry;

typedef struct {
    block_entry *entries;
    size_t cap;               /* a power of two, or 0 before the first reserve */
    size_t count;
    unsigned bits;
    unsigned window;          /* log2 of the address window a run of slots covers, >= 5 */
} block_table;

extern block_table nea_blocks NEA_HIDDEN;

/* Locality-preserving hash: each window of addresses (256 bytes for the meter's table)
 * maps to a run of consecutive slots at a hashed base, one slot per 16-byte granule
 * (pymalloc's and malloc's alignment, so distinct blocks in a window never share a home
 * slot). Blocks allocated one after
 * another from a pymalloc pool land in neighbouring entries, so the table is walked in
 * cache lines the hardware already has rather than a random line per block. Short runs
 * keep linear probing's clusters short: with 16 KiB windows (a whole pool per run), dense
 * pools of 16-byte objects merged into clusters of thousands of slots (mean displacement
 * 47, one hot lookup 1.1 us); with 256 bytes the worst measured mean is 0.9 (max 66), and
 * the JSON benchmark needs 1.24 probes per lookup (a multiplicative hash: 1.36, and about
 * a quarter more time in the meter, from cache misses). */
#define NEA_WINDOW_BITS 8
/* The C libraries' table (anyblocks.c): glibc hands out a heap's blocks one after another, so
 * a 4 KiB window keeps a burst of allocations (a parser's nodes) in neighbouring slots;
 * with 256-byte windows every few blocks hit another cache line and page of a table that
 * reaches tens of megabytes (an lxml parse of 800,000 blocks: 236 ms against 175 ms, and
 * freeing them 131 ms against 78 ms). */
#define NEA_C_WINDOW_BITS 12

static NEA_INLINE size_t nea_block_hash_bits(uintptr_t p, unsigned bits, unsigned window)
{
    uint64_t base = ((uint64_t)(p >> window) * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - bits);
    uint64_t granule = ((uint64_t)p >> 4) & ((UINT64_C(1) << (window - 4)) - 1);
    return (size_t)(base + granule);
}

static NEA_INLINE size_t bt_hash(const block_table *t, uintptr_t p)
{
    return nea_block_hash_bits(p, t->bits, t->window) & (t->cap - 1);
}

/* The entry of block p in `t`, or NULL. Valid until the table next changes. */
static NEA_INLINE block_entry *bt_find(block_table *t, uintptr_t p)
{
    if (t->count == 0)
        return NULL;
    size_t mask = t->cap - 1;
    for (size_t i = bt_hash(t, p);; i = (i + 1) & mask) {
        block_entry *e = &t->entries[i];
        if (e->ptr == p)
            return e;
        if (e->ptr == 0)
            return NULL;
    }
}

int bt_grow(block_table *t);

/* Make room for one more entry; -1 when the table cannot grow (callers fail closed). */
static NEA_INLINE int bt_reserve(block_table *t)
{
    if (NEA_LIKELY((t->count + 1) * 2 <= t->cap))
        return 0;
    return bt_grow(t);
}

/* Put `src` into the table; the caller reserved room. Returns the entry, which holds the
 * previous entry for the same address (if any) until the caller overwrites it: such an
 * entry means that block was freed behind the meter's back and must be settled. */
static NEA_INLINE block_entry *bt_slot_for(block_table *t, uintptr_t p, int *existed)
{
    size_t mask = t->cap - 1;
    for (size_t i = bt_hash(t, p);; i = (i + 1) & mask) {
        block_entry *e = &t->entries[i];
        if (e->ptr == 0) {
            t->count++;
            *existed = 0;
            return e;
        }
        if (NEA_UNLIKELY(e->ptr == p)) {
            *existed = 1;
            return e;
        }
    }
}

void bt_delete(block_table *t, block_entry *e); /* remove an entry (backward-shift deletion) */
void bt_maybe_shrink(block_table *t);           /* give memory back after a spike */
/* Mean and worst displacement from home slots: O(capacity), for tests. */
void bt_displacement(const block_table *t, unsigned long long *total,
                     unsigned long long *worst);

/* The meter's own table (PyMem blocks off the region, numpy's array data). */
#define nea_block_find(p) bt_find(&nea_blocks, (p))
#define nea_block_reserve() bt_reserve(&nea_blocks)
#define nea_block_slot_for(p, existed) bt_slot_for(&nea_blocks, (p), (existed))
#define nea_block_delete(e) bt_delete(&nea_blocks, (e))
#define nea_block_maybe_shrink() bt_maybe_shrink(&nea_blocks)
#define nea_block_displacement(total, worst) bt_displacement(&nea_blocks, (total), (worst))

#endif
