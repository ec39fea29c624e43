/* region.h: the preallocated region of nea's meter (docs/internals/region.md).
 *
 * One mapping of `nslots` slots of `stride` bytes, made once (at server start, or lazily on
 * the first budget). An outermost budget holds one slot while it is open; its allocations
 * are served from that slot's own small allocator: 16 KiB pages, size classes up to
 * 4 KiB (one class per page, blocks carved by bumping and recycled through a free list),
 * page runs for larger blocks. Every page run starts with a header naming the tenancy that
 * carved it and, for class pages, the exact requested size of each block (one uint16 per
 * 16-byte granule), so accounting stays exact.
 *
 * A tenancy is a run of holders of one slot: a holder that closes with nothing live in the
 * slot (and no earlier holder's block pinning it) hands its pages, class free lists and
 * tenancy to the next holder as they are, so the next request finds its class pages warm
 * and carves none. A holder that leaves blocks behind ends the tenancy: the slot is reset
 * and the next holder gets a new one, so those blocks (escaped, pinning their pages) never
 * match a holder again.
 *
 * A block is recognised as a region block by an address-range check; its page header gives
 * its size and tenancy, so frees and resizes never touch the block table.
 *
 * Guarded by the GIL like the rest of the meter. Never calls Python, never allocates
 * through the hooked domains (slot bookkeeping is libc memory, the region is mmap).
 * The hot paths are inline here; mapping, page carving, resets and release are region.c.
 */
#ifndef NEA_REGION_H
#define NEA_REGION_H

#include "blocks.h" /* NEA_INLINE and friends */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Under AddressSanitizer (make asan), free and unused parts of the region are poisoned, so
 * use-after-free and overflows of region blocks are reported as for malloc's blocks. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define RG_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define RG_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define RG_POISON(p, n) ((void)(p), (void)(n))
#define RG_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define RG_PAGE_SHIFT 14
#define RG_PAGE ((size_t)1 << RG_PAGE_SHIFT)
#define RG_PAGE_MASK (RG_PAGE - 1)
#define RG_META 64                          /* header fields, then the size table */
#define RG_HDR (RG_META + 2 * (RG_PAGE >> 4)) /* first block of a class page */
#define RG_LARGE_HDR RG_META                /* a large block starts here in its run */
#define RG_SMALL_MAX 4096                   /* larger blocks get page runs */
#define RG_NCLASS 56                        /* classes 1..RG_NCLASS; 0 = large run */
#define RG_FREE_RUN 0xFFFF                  /* cls of a run on a slot's free-run list */
#define RG_NONE UINT32_MAX
#define RG_NOBODY UINT64_MAX                /* owner of a slot nobody holds */
/* hot_owner of a page that is not a class page: below every tenancy (RG_FIRST_TENANCY up)
 * and not RG_NOBODY, so it never matches a slot's owner. */
#define RG_NOT_SMALL UINT64_C(0xFFFFF)
#define RG_FIRST_TENANCY (UINT64_C(1) << 32)
_Static_assert(RG_NOT_SMALL < RG_FIRST_TENANCY, "RG_NOT_SMALL must match no tenancy");

struct rg_slot;

typedef struct {
    char *free;               /* freed blocks of this class (link in the block) */
    char *bump;               /* next never-used block of the current page */
    char *limit;              /* bump + size must stay <= limit */
    size_t size;              /* the class's block size (constant; kept by resets) */
} rg_class;

/* The header at the start of every page run, inside the region. */
typedef struct rg_page {
    uint64_t owner;           /* the tenancy that carved the run */
    struct rg_page *next;     /* free-run list link */
    size_t size;              /* large run: the block's requested size */
    uint32_t slot;            /* region slot index */
    uint32_t npages;          /* run length in pages (1 for class pages) */
    uint32_t live;            /* live blocks in the run */
    uint16_t cls;             /* 0 large, 1..RG_NCLASS class, RG_FREE_RUN */
    uint16_t pad1_;
    struct rg_slot *rs;       /* &nea_region.slots[slot] (the hot paths skip the multiply) */
    uint64_t hot_owner;       /* class page: its tenancy; else RG_NOT_SMALL (one compare) */
    rg_class *k;              /* class page: &rs->cls[cls] */
    uint16_t sizes[RG_PAGE >> 4]; /* class page: requested size of the block at granule i */
} rg_page;
_Static_assert(offsetof(rg_page, sizes) == RG_META, "page header fields must fill RG_META");

/* One slot's bookkeeping (libc memory). */
typedef struct rg_slot {
    char *start;
    uint64_t owner;           /* the tenancy while held, else RG_NOBODY */
    uint64_t tenancy;         /* the next holder's tenancy (kept while holders leave none) */
    uint64_t holder;          /* the holding budget's owner word (as in the block table) */
    size_t *holder_live;      /* the holder's `live` while held (meter.c keeps it right) */
    rg_page *runs;            /* free page runs below top */
    uint32_t top;             /* pages [0, top) have been carved */
    uint32_t touched;         /* pages possibly resident (high-water of top since release) */
    uint32_t rw;              /* pages made writable (the rest is PROT_NONE) */
    uint32_t pinned;          /* runs holding live blocks of earlier holders */
    uint32_t next_free;
    uint8_t held;
    uint8_t unpinned;         /* a pinned run became free since the last walk */
    uint8_t kept;             /* not held, and its pages and classes kept for the next holder */
    uint64_t used;            /* bit c: class c has state to clear at reset */
    rg_class cls[RG_NCLASS + 1];
    /* By (size - 1) >> 4: &cls[nea_rg_class_of[...]]. The allocation fast path finds its
     * class in one load (a global table of offsets needs the table's address, a load and
     * an add in position-independent code). Set once by nea_rg_slot_init. */
    rg_class *by_size[RG_SMALL_MAX >> 4];
} rg_slot;

typedef struct {
    char *base;
    size_t span;              /* nslots * stride; 0 = not mapped */
    size_t stride;
    uint32_t pages;           /* pages per slot */
    uint32_t nslots;
    uint32_t free_head;
    uint32_t held;
    int enabled;              /* --region on (and allowed: see nea_region_allow) */
    int allowed;
    int release_idle;
    rg_slot *slots;
    uint64_t next_tenancy;
    uint64_t fast_resets, scan_resets, fallbacks, served, grow_failures;
} rg_region;

extern rg_region nea_region NEA_HIDDEN;
extern uint8_t nea_rg_class_of[RG_SMALL_MAX >> 4] NEA_HIDDEN;
extern uint32_t nea_rg_class_size[RG_NCLASS + 1] NEA_HIDDEN;

/* Set a slot's constant class data (by_size, the class sizes); its class states stay as
 * they are (zeroed: empty). Also for meter.c's empty sentinel slot. */
void nea_rg_slot_init(rg_slot *rs);

static NEA_INLINE int nea_region_contains(const void *p)
{
    return (uintptr_t)p - (uintptr_t)nea_region.base < nea_region.span;
}

static NEA_INLINE rg_page *nea_rg_page(const void *p)
{
    return (rg_page *)((uintptr_t)p & ~(uintptr_t)RG_PAGE_MASK);
}

/* The requested size of region block p. */
static NEA_INLINE size_t nea_rg_size(const void *p)
{
    rg_page *pg = nea_rg_page(p);
    if (pg->cls == 0)
        return pg->size;
    return pg->sizes[((uintptr_t)p & RG_PAGE_MASK) >> 4];
}

char *nea_rg_new_page(rg_slot *rs, unsigned c);
void *nea_rg_alloc_large(rg_slot *rs, size_t size);
void nea_rg_free_large(rg_slot *rs, rg_page *pg);

/* A small block (1..RG_SMALL_MAX bytes) of slot `rs` (held) from its class's free list or
 * the class page's bump pointer; NULL when the class needs a new page (nea_rg_alloc). */
static NEA_INLINE void *nea_rg_take_small(rg_slot *rs, size_t size)
{
    rg_class *k = rs->by_size[(size - 1) >> 4];
    char *b = k->free;
    if (b != NULL) {
        RG_UNPOISON(b, sizeof(char *));
        k->free = *(char **)b;
    }
    else if (k->bump + k->size <= k->limit) {
        b = k->bump;
        k->bump += k->size;
    }
    else {
        return NULL;
    }
    RG_POISON(b, k->size);
    RG_UNPOISON(b, size);
    rg_page *pg = nea_rg_page(b);
    pg->sizes[((uintptr_t)b & RG_PAGE_MASK) >> 4] = (uint16_t)size;
    pg->live++;
    return b;
}

/* A block of `size` bytes from slot `rs` (held); NULL when the slot cannot serve it.
 * Zero-byte blocks are never region blocks: every region block is charged at least one
 * byte, so a holder with nothing charged has nothing live in its slot. */
static NEA_INLINE void *nea_rg_alloc(rg_slot *rs, size_t size)
{
    if (NEA_UNLIKELY(size - 1 >= RG_SMALL_MAX)) /* 0 wraps around */
        return size == 0 ? NULL : nea_rg_alloc_large(rs, size);
    void *b = nea_rg_take_small(rs, size);
    if (b != NULL)
        return b;
    b = nea_rg_new_page(rs, nea_rg_class_of[(size - 1) >> 4]);
    if (b == NULL)
        return NULL;
    RG_POISON(b, nea_rg_class_size[nea_rg_class_of[(size - 1) >> 4]]);
    RG_UNPOISON(b, size);
    rg_page *pg = nea_rg_page(b);
    pg->sizes[((uintptr_t)b & RG_PAGE_MASK) >> 4] = (uint16_t)size;
    pg->live++;
    return b;
}

/* Give small block p of page pg (a class page of its slot's holder) back to its class's
 * free list; returns its requested size. The hot free path (meter.c) calls it directly. */
static NEA_INLINE size_t nea_rg_free_small(rg_page *pg, void *p)
{
    size_t size = pg->sizes[((uintptr_t)p & RG_PAGE_MASK) >> 4];
    rg_class *k = pg->k;
    pg->live--;
    RG_UNPOISON(p, sizeof(char *));
    *(char **)p = k->free;
    k->free = p;
    RG_POISON(p, nea_rg_class_size[pg->cls]);
    return size;
}

/* Free region block p and set *size; returns the holder's `live` when the block belonged to
 * its slot's holder (an open outermost budget: un-charge it), NULL when it escaped an
 * earlier holder (nobody is credited). The holder's blocks go back to its free lists;
 * escaped blocks only unpin their run. */
static NEA_INLINE size_t *nea_rg_free(void *p, size_t *size)
{
    rg_page *pg = nea_rg_page(p);
    rg_slot *rs = pg->rs;
    int holders = rs->owner == pg->owner; /* RG_NOBODY never matches a page */
    if (NEA_LIKELY(pg->cls != 0)) {
        if (NEA_LIKELY(holders)) {
            *size = nea_rg_free_small(pg, p);
            return rs->holder_live;
        }
        *size = pg->sizes[((uintptr_t)p & RG_PAGE_MASK) >> 4];
    }
    else {
        *size = pg->size;
        if (holders) {
            pg->live--;
            RG_POISON(p, pg->size);
            nea_rg_free_large(rs, pg);
            return rs->holder_live;
        }
    }
    pg->live--;
    RG_POISON(p, *size);
    if (pg->live == 0 && rs->pinned != 0) {
        rs->pinned--;
        rs->unpinned = 1;
    }
    return NULL;
}

/* The owner word of the budget that holds region block p, or RG_NOBODY when p escaped an
 * earlier holder. */
static NEA_INLINE uint64_t nea_rg_holder(const void *p)
{
    rg_page *pg = nea_rg_page(p);
    return pg->owner == pg->rs->owner ? pg->rs->holder : RG_NOBODY;
}

/* Resize a block of the holder of its slot in place, when it stays in its class or is a
 * large run that can keep or take its pages (it is at the top, has room left from a
 * move, or is followed by a free run); 0 when it cannot. */
int nea_rg_resize_in_place(void *p, size_t new_size);
/* A block of `size` bytes for a block that could not be resized in place: like
 * nea_rg_alloc, but a large block gets room to grow in its run. */
void *nea_rg_alloc_moved(rg_slot *rs, size_t size);

/* ---- lifecycle (region.c) ---- */

/* Map the region: nslots slots of slot_bytes (rounded up to pages). 0 on success, 1 when
 * a region is mapped already with blocks in use (it is kept), -1 when mmap failed (errno). */
int nea_region_configure(uint32_t nslots, size_t slot_bytes, int prefault);
/* A free slot for the budget with owner word `owner`, mapping the default region first if
 * nothing is mapped yet; RG_NONE when there is none. */
uint32_t nea_region_acquire(uint64_t owner);
/* The holder closed with `live` bytes still charged. With nothing live and nothing pinned
 * the slot keeps its pages for the next holder (O(1)); else it is reset and its tenancy
 * ends. */
void nea_region_close(uint32_t r, size_t live);
/* Give the pages of free, reset slots back to the OS; returns the bytes released. */
size_t nea_region_release(void);

#endif
