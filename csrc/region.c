/* region.c: mapping, page carving, resets and release of the meter's region (region.h).
 *
 * Owns: the mapping (mmap, never unmapped while any of its blocks may be alive), the
 * slots' bookkeeping (libc calloc), and the slow paths of the slot allocator. Must not call
 * Python and must not allocate through the hooked domains.
 */
#include "region.h"

#include <errno.h>
#include <stdlib.h>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define RG_HAVE_MMAP 1
#else
/* No mmap: the region is never mapped (nea_region_configure fails with ENOSYS) and every
 * budget uses the block table. */
#define RG_HAVE_MMAP 0
#define PROT_NONE 0
#define PROT_READ 0
#define PROT_WRITE 0
#define MAP_FAILED ((void *)-1)
static int mprotect(void *p, size_t n, int prot) { (void)p; (void)n; (void)prot; return -1; }
static int munmap(void *p, size_t n) { (void)p; (void)n; return 0; }
static long sysconf(int name) { (void)name; return 4096; }
#define _SC_PAGESIZE 0
#endif
#if defined(_MSC_VER)
#define __builtin_ctzll(x) ((int)_tzcnt_u64(x))
#endif

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

/* Without a server (middleware, tests, plain nea.budget()), the region is mapped on the
 * first budget with this geometry: 16 slots of 64 MiB of address space, touched only as
 * budgets use it. */
#define RG_DEFAULT_SLOTS 16u
#define RG_DEFAULT_SLOT_BYTES ((size_t)64 << 20)
/* The most recently freed slot is reused while it has at most this many pinned runs and
 * its top is at most this many pages up (see nea_region_acquire): a reset walks every run,
 * so the pins it accumulates stay few, and pins high up would move each request's new
 * pages further up the slot, into memory never touched before (a page fault each). */
#define RG_WARM_PINNED 32u
#define RG_WARM_TOP 64u

rg_region nea_region = {.free_head = RG_NONE, .enabled = 1, .allowed = 1};

/* Classes: 16-byte steps to 512, then 64 to 1 KiB, 128 to 2 KiB, 256 to 4 KiB (the
 * rounding waste stays under 1/8 of a block past 512 bytes). */
uint32_t nea_rg_class_size[RG_NCLASS + 1];
uint8_t nea_rg_class_of[RG_SMALL_MAX >> 4];

static void init_classes(void)
{
    if (nea_rg_class_size[1] != 0)
        return;
    uint8_t *of = nea_rg_class_of;
    unsigned c = 0;
    uint32_t size = 0;
    while (size < RG_SMALL_MAX) {
        uint32_t step = size < 512 ? 16 : size < 1024 ? 64 : size < 2048 ? 128 : 256;
        size += step;
        nea_rg_class_size[++c] = size;
    }
    c = 1;
    for (unsigned i = 0; i < (RG_SMALL_MAX >> 4); i++) {
        while (nea_rg_class_size[c] < (i + 1) * 16)
            c++;
        of[i] = (uint8_t)c;
    }
}

void nea_rg_slot_init(rg_slot *rs)
{
    init_classes();
    for (unsigned c = 0; c <= RG_NCLASS; c++)
        rs->cls[c].size = nea_rg_class_size[c];
    for (unsigned i = 0; i < (RG_SMALL_MAX >> 4); i++)
        rs->by_size[i] = &rs->cls[nea_rg_class_of[i]];
}

static rg_page *page_at(rg_slot *rs, uint32_t i)
{
    return (rg_page *)(rs->start + ((size_t)i << RG_PAGE_SHIFT));
}

static uint32_t page_index(rg_slot *rs, rg_page *pg)
{
    return (uint32_t)(((char *)pg - rs->start) >> RG_PAGE_SHIFT);
}

/* Slots are mapped PROT_NONE and made writable as they grow, in steps of at least this
 * many pages: only what budgets really used counts as the process's data (RLIMIT_DATA,
 * VmData), and --memory-limit applies to the region as to any other memory. */
#define RG_GROW_PAGES 64u

/* Make pages [0, top) of the slot writable; -1 when the OS refuses (a data limit). */
static int ensure_rw(rg_slot *rs, uint32_t top)
{
    if (top <= rs->rw)
        return 0;
    uint32_t want = top - rs->rw < RG_GROW_PAGES ? rs->rw + RG_GROW_PAGES : top;
    if (want > nea_region.pages)
        want = nea_region.pages;
    char *from = rs->start + ((size_t)rs->rw << RG_PAGE_SHIFT);
    size_t bytes = (size_t)(want - rs->rw) << RG_PAGE_SHIFT;
    if (mprotect(from, bytes, PROT_READ | PROT_WRITE) != 0) {
        if (want == top || mprotect(from, (size_t)(top - rs->rw) << RG_PAGE_SHIFT,
                                    PROT_READ | PROT_WRITE) != 0) {
            nea_region.grow_failures++;
            return -1;
        }
        want = top;
    }
    rs->rw = want;
    return 0;
}

/* A run of n pages: first fit on the free-run list (split from its tail), else from top. */
static rg_page *take_run(rg_slot *rs, uint32_t n)
{
    for (rg_page **link = &rs->runs; *link != NULL; link = &(*link)->next) {
        rg_page *run = *link;
        if (run->npages < n)
            continue;
        if (run->npages == n) {
            *link = run->next;
            return run;
        }
        run->npages -= n;
        return page_at(rs, page_index(rs, run) + run->npages);
    }
    if (n > nea_region.pages - rs->top || ensure_rw(rs, rs->top + n) < 0)
        return NULL;
    rg_page *pg = page_at(rs, rs->top);
    rs->top += n;
    if (rs->top > rs->touched)
        rs->touched = rs->top;
    return pg;
}

static void init_run(rg_slot *rs, rg_page *pg, uint32_t n, uint16_t cls)
{
    RG_UNPOISON(pg, RG_HDR);
    RG_POISON((char *)pg + RG_HDR, ((size_t)n << RG_PAGE_SHIFT) - RG_HDR);
    pg->owner = rs->owner;
    pg->next = NULL;
    pg->size = 0;
    pg->slot = (uint32_t)(rs - nea_region.slots);
    pg->rs = rs;
    pg->npages = n;
    pg->live = 0;
    pg->cls = cls;
    pg->hot_owner = cls != 0 && cls != RG_FREE_RUN ? rs->owner : RG_NOT_SMALL;
}

char *nea_rg_new_page(rg_slot *rs, unsigned c)
{
    rg_page *pg = take_run(rs, 1);
    if (pg == NULL) {
        nea_region.fallbacks++;
        return NULL;
    }
    init_run(rs, pg, 1, (uint16_t)c);
    pg->k = &rs->cls[c];
    rs->used |= UINT64_C(1) << c;
    rg_class *k = &rs->cls[c];
    char *first = (char *)pg + RG_HDR;
    k->bump = first + nea_rg_class_size[c];
    k->limit = (char *)pg + RG_PAGE;
    return first;
}

static uint32_t pages_for(size_t size)
{
    size_t n = (size + RG_LARGE_HDR + RG_PAGE_MASK) >> RG_PAGE_SHIFT;
    return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

void *nea_rg_alloc_large(rg_slot *rs, size_t size)
{
    if (size > (size_t)nea_region.pages << RG_PAGE_SHIFT) {
        nea_region.fallbacks++;
        return NULL;
    }
    uint32_t n = pages_for(size);
    rg_page *pg = take_run(rs, n);
    if (pg == NULL) {
        nea_region.fallbacks++;
        return NULL;
    }
    init_run(rs, pg, n, 0);
    RG_UNPOISON((char *)pg + RG_LARGE_HDR, size);
    pg->size = size;
    pg->live = 1;
    return (char *)pg + RG_LARGE_HDR;
}

/* A large run of the holder was freed: give its pages back to top when it ends there,
 * else put it on the free-run list (runs are coalesced at the next scan reset). */
void nea_rg_free_large(rg_slot *rs, rg_page *pg)
{
    uint32_t i = page_index(rs, pg);
    if (i + pg->npages == rs->top) {
        rs->top = i;
        return;
    }
    pg->cls = RG_FREE_RUN; /* hot_owner: RG_NOT_SMALL already (a large run) */
    pg->next = rs->runs;
    rs->runs = pg;
}

/* Unlink the free run `run` from the slot's free-run list; 0 when it is not on it. */
static int unlink_run(rg_slot *rs, rg_page *run)
{
    for (rg_page **link = &rs->runs; *link != NULL; link = &(*link)->next) {
        if (*link == run) {
            *link = run->next;
            return 1;
        }
    }
    return 0;
}

/* Put pages [i, i + n) (below top, holding nothing) on the free-run list. */
static void add_free_run(rg_slot *rs, uint32_t i, uint32_t n)
{
    rg_page *run = page_at(rs, i);
    init_run(rs, run, n, RG_FREE_RUN);
    run->next = rs->runs;
    rs->runs = run;
}

/* Let the large run `pg` (page i, not at the top) take n pages: it already has them, or
 * the run that follows it is a free run with enough pages (the rest stays free). */
static int grow_into_next(rg_slot *rs, rg_page *pg, uint32_t i, uint32_t n)
{
    if (n <= pg->npages)
        return 1;
    rg_page *next = page_at(rs, i + pg->npages);
    uint32_t need = n - pg->npages;
    if (next->cls != RG_FREE_RUN || next->npages < need)
        return 0;
    uint32_t next_n = next->npages;
    if (!unlink_run(rs, next))
        return 0;
    if (next_n > need)
        add_free_run(rs, i + n, next_n - need);
    pg->npages = n;
    return 1;
}

int nea_rg_resize_in_place(void *p, size_t new_size)
{
    rg_page *pg = nea_rg_page(p);
    rg_slot *rs = pg->rs;
    if (new_size == 0)
        return 0; /* never a region block (see nea_rg_alloc) */
    if (pg->cls != 0) {
        if (new_size > RG_SMALL_MAX || nea_rg_class_of[(new_size - 1) >> 4] != pg->cls)
            return 0;
        pg->sizes[((uintptr_t)p & RG_PAGE_MASK) >> 4] = (uint16_t)new_size;
        RG_POISON(p, nea_rg_class_size[pg->cls]);
        RG_UNPOISON(p, new_size);
        return 1;
    }
    if (new_size <= RG_SMALL_MAX)
        return 0; /* a small block belongs in a class page */
    uint32_t n = pages_for(new_size);
    uint32_t i = page_index(rs, pg);
    if (i + pg->npages == rs->top) {
        /* The run at the top grows with top (bytearray growth, list appends); it keeps
         * its pages when it shrinks a little (room from a move, see nea_rg_alloc_moved). */
        if (n > pg->npages || n < pg->npages / 2) {
            if (n > nea_region.pages - i || ensure_rw(rs, i + n) < 0)
                return 0;
            rs->top = i + n;
            if (rs->top > rs->touched)
                rs->touched = rs->top;
            pg->npages = n;
        }
    }
    else if (n > pg->npages) {
        if (!grow_into_next(rs, pg, i, n))
            return 0;
    }
    else if (n < pg->npages / 2) {
        /* Shrunk to less than half: give the tail back (a little is kept as growth room). */
        add_free_run(rs, i + n, pg->npages - n);
        pg->npages = n;
    }
    RG_POISON(p, ((size_t)pg->npages << RG_PAGE_SHIFT) - RG_LARGE_HDR);
    RG_UNPOISON(p, new_size);
    pg->size = new_size;
    return 1;
}

void *nea_rg_alloc_moved(rg_slot *rs, size_t size)
{
    if (size <= RG_SMALL_MAX)
        return nea_rg_alloc(rs, size);
    /* A large block that had to move is growing (a list, a string being built): give it
     * a run of twice the pages it needs, so the next resizes happen in place (list and
     * string growth add 1/8 to 1/4 at a time). Only region space: charges stay exact. */
    uint32_t n = pages_for(size);
    if (n <= nea_region.pages / 4) {
        rg_page *pg = take_run(rs, 2 * n);
        if (pg != NULL) {
            init_run(rs, pg, 2 * n, 0);
            RG_UNPOISON((char *)pg + RG_LARGE_HDR, size);
            pg->size = size;
            pg->live = 1;
            return (char *)pg + RG_LARGE_HDR;
        }
    }
    return nea_rg_alloc_large(rs, size);
}

/* ---- mapping ----------------------------------------------------------------------- */

/* Empty the class states (free lists, bump pages) of the classes the slot's holders used
 * (a page was carved for each of them); the other classes are empty already. */
static void clear_classes(rg_slot *rs)
{
    for (uint64_t used = rs->used; used != 0; used &= used - 1) {
        rg_class *k = &rs->cls[__builtin_ctzll(used)];
        k->free = k->bump = k->limit = NULL; /* k->size stays */
    }
    rs->used = 0;
}

/* Forget the pages and classes a free slot kept for its next holder (they hold no block). */
static void drop_kept(rg_slot *rs)
{
    if (!rs->kept)
        return;
    rs->kept = 0;
    rs->top = 0;
    rs->runs = NULL;
    clear_classes(rs);
}

static int region_busy(void)
{
    for (uint32_t i = 0; i < nea_region.nslots; i++) {
        rg_slot *rs = &nea_region.slots[i];
        if (rs->held || rs->pinned != 0 || (rs->top != 0 && !rs->kept))
            return 1;
    }
    return 0;
}

static void unmap(void)
{
    if (nea_region.span != 0)
        munmap(nea_region.base, nea_region.span);
    free(nea_region.slots);
    nea_region.slots = NULL;
    nea_region.base = NULL;
    nea_region.span = 0;
    nea_region.nslots = 0;
    nea_region.free_head = RG_NONE;
}

/* Touch every page of every slot now, so the resident size is final from the start. */
static void prefault_all(void)
{
    for (uint32_t i = 0; i < nea_region.nslots; i++)
        if (ensure_rw(&nea_region.slots[i], nea_region.pages) < 0)
            return; /* a data limit: the rest stays untouched */
    RG_UNPOISON(nea_region.base, nea_region.span); /* ASan: the touch below reads it all */
    long sys_page = sysconf(_SC_PAGESIZE);
    size_t step = sys_page > 0 ? (size_t)sys_page : 4096;
    for (size_t off = 0; off < nea_region.span; off += step)
        ((volatile char *)nea_region.base)[off] = ((volatile char *)nea_region.base)[off];
    for (uint32_t i = 0; i < nea_region.nslots; i++)
        nea_region.slots[i].touched = nea_region.pages;
}

int nea_region_configure(uint32_t nslots, size_t slot_bytes, int prefault)
{
    init_classes();
    size_t stride = (slot_bytes + RG_PAGE_MASK) & ~(size_t)RG_PAGE_MASK;
    if (stride < RG_PAGE * 4)
        stride = RG_PAGE * 4;
    if (nea_region.span != 0) {
        int same = nea_region.nslots == nslots && nea_region.stride == stride;
        if (!same && region_busy())
            return 1; /* blocks may live in it: never unmap */
        if (same) {
            if (prefault && !region_busy()) /* never write over live blocks */
                prefault_all();
            return 0;
        }
        unmap();
    }
    if (nslots == 0 || stride > ((size_t)UINT32_MAX << RG_PAGE_SHIFT) ||
        stride > SIZE_MAX / nslots) {
        errno = EINVAL;
        return -1;
    }
    rg_slot *slots = calloc(nslots, sizeof(rg_slot));
    if (slots == NULL)
        return -1;
    if (!RG_HAVE_MMAP) {
        free(slots);
        errno = ENOSYS;
        return -1;
    }
    size_t span = stride * nslots;
    /* Over-map by a page and trim, so the base is page-aligned for any system page size. */
#if RG_HAVE_MMAP
    char *raw = mmap(NULL, span + RG_PAGE, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
#else
    char *raw = MAP_FAILED;
#endif
    if (raw == MAP_FAILED) {
        free(slots);
        return -1;
    }
    char *base = (char *)(((uintptr_t)raw + RG_PAGE_MASK) & ~(uintptr_t)RG_PAGE_MASK);
    if (base != raw)
        munmap(raw, (size_t)(base - raw));
    if (base + span != raw + span + RG_PAGE)
        munmap(base + span, (size_t)((raw + span + RG_PAGE) - (base + span)));
    nea_region.base = base;
    nea_region.span = span;
    nea_region.stride = stride;
    nea_region.pages = (uint32_t)(stride >> RG_PAGE_SHIFT);
    nea_region.nslots = nslots;
    nea_region.slots = slots;
    nea_region.held = 0;
    nea_region.free_head = RG_NONE;
    if (nea_region.next_tenancy < RG_FIRST_TENANCY)
        nea_region.next_tenancy = RG_FIRST_TENANCY;
    for (uint32_t i = nslots; i-- > 0;) { /* slot 0 first */
        nea_rg_slot_init(&slots[i]);
        slots[i].start = base + (size_t)i * stride;
        slots[i].owner = RG_NOBODY;
        slots[i].tenancy = nea_region.next_tenancy++;
        slots[i].next_free = nea_region.free_head;
        nea_region.free_head = i;
    }
    if (prefault)
        prefault_all();
    return 0;
}

static void scan_reset(rg_slot *rs);

uint32_t nea_region_acquire(uint64_t owner)
{
    if (!nea_region.enabled || !nea_region.allowed)
        return RG_NONE;
    if (nea_region.span == 0 &&
        nea_region_configure(RG_DEFAULT_SLOTS, RG_DEFAULT_SLOT_BYTES, 0) != 0) {
        nea_region.enabled = 0; /* no mapping possible here: the table path serves all */
        return RG_NONE;
    }
    /* The most recently freed slot: its pages are the warmest in the caches, and the
     * last request's free pages are the next one's. A few pinned runs do not change that
     * (blocks parked on CPython's free lists outlive the requests that allocated them, so
     * most slots of a busy server have some): skipping the slot for them would send each
     * request to another, colder slot. Past RG_WARM_PINNED pinned runs, or a top above
     * RG_WARM_TOP pages or a quarter of the slot, the search below applies. */
    uint32_t *link = &nea_region.free_head;
    uint32_t best = UINT32_MAX;
    if (*link != RG_NONE) {
        rg_slot *head = &nea_region.slots[*link];
        if (head->pinned <= RG_WARM_PINNED && head->top <= RG_WARM_TOP &&
            head->top <= nea_region.pages / 4)
            best = 0; /* taken as it is: the loop below does not run */
    }
    /* Else the most recently freed among those with the lowest top: escaped blocks
     * (objects parked on CPython's free lists, a tripped request's blocks held by its
     * exception's frames until the GC runs) pin pages, and a slot pinned near its end
     * would send the next request to the table path. A slot with nothing touched counts
     * as RG_WARM_TOP pages up: every page it carves is touched for the first time (a page
     * fault each), so a used slot pinned lower than that is taken first. */
    for (uint32_t *l = link; best != 0 && *l != RG_NONE; l = &nea_region.slots[*l].next_free) {
        rg_slot *c = &nea_region.slots[*l];
        uint32_t top = c->touched == 0 ? RG_WARM_TOP : c->pinned == 0 ? 0 : c->top;
        if (top < best) {
            best = top;
            link = l;
            if (top == 0)
                break;
        }
    }
    uint32_t r = *link;
    if (r == RG_NONE)
        return RG_NONE;
    rg_slot *rs = &nea_region.slots[r];
    *link = rs->next_free;
    rs->next_free = RG_NONE;
    /* A kept slot is served as its last holder left it. Else blocks that escaped earlier
     * holders may have been freed since the slot's last reset: take their pages back now
     * rather than serve around them. */
    if (rs->kept) {
        rs->kept = 0;
    }
    else if (rs->pinned == 0) {
        rs->top = 0;
        rs->runs = NULL;
    }
    else if (rs->unpinned) {
        scan_reset(rs);
    }
    rs->held = 1;
    rs->owner = rs->tenancy;
    rs->holder = owner;
    nea_region.held++;
    nea_region.served++;
    return r;
}

/* Blocks of the holder outlived it (or earlier holders' still pin pages): walk the carved
 * runs, keep those with live blocks (pinned: their tenancy ends, so no later holder
 * matches them), coalesce the others into the free-run list, and lower top to the last
 * pinned run. The list is in address order, so first fit carves the lowest free pages:
 * new pages, and the pins some of them get, stay low in the slot instead of pushing its
 * top up. */
static void scan_reset(rg_slot *rs)
{
    rg_page *tail = NULL;            /* last free run, for coalescing */
    rg_page **append = &rs->runs;    /* where the next free run is linked */
    rg_page **tail_link = &rs->runs; /* the link to `tail` */
    uint32_t end = 0, pinned = 0;
    rs->runs = NULL;
    for (uint32_t i = 0; i < rs->top;) {
        rg_page *pg = page_at(rs, i);
        uint32_t n = pg->npages;
        if (pg->live != 0) {
            pinned++;
            end = i + n;
            tail = NULL;
        }
        else if (tail != NULL) {
            tail->npages += n;
        }
        else {
            pg->cls = RG_FREE_RUN;
            pg->hot_owner = RG_NOT_SMALL;
            pg->next = NULL;
            tail_link = append;
            *append = pg;
            append = &pg->next;
            tail = pg;
        }
        i += n;
    }
    if (tail != NULL) /* the trailing free run is simply above the new top */
        *tail_link = NULL;
    rs->top = end;
    rs->pinned = pinned;
    rs->unpinned = 0;
}

void nea_region_close(uint32_t r, size_t live)
{
    rg_slot *rs = &nea_region.slots[r];
    if (live == 0 && rs->pinned == 0) {
        /* Every block of the slot is free: the next holder continues the tenancy. Up to
         * RG_WARM_TOP pages, as they are (warm class pages, nothing to carve); past that,
         * from page 0, so one large request does not spread the next ones' small blocks
         * over its pages. */
        if (rs->top <= RG_WARM_TOP) {
            rs->kept = 1;
        }
        else {
            rs->top = 0;
            rs->runs = NULL;
            clear_classes(rs);
        }
        nea_region.fast_resets++;
    }
    else {
        /* The blocks left behind escaped: a new tenancy never matches their pages. */
        scan_reset(rs);
        clear_classes(rs);
        rs->tenancy = nea_region.next_tenancy++;
        nea_region.scan_resets++;
    }
    rs->held = 0;
    rs->owner = RG_NOBODY;
    rs->holder_live = NULL;
    nea_region.held--;
    /* LIFO: the slot just used is the warmest in the caches. */
    rs->next_free = nea_region.free_head;
    nea_region.free_head = r;
}

size_t nea_region_release(void)
{
    size_t released = 0;
    for (uint32_t i = 0; i < nea_region.nslots; i++) {
        rg_slot *rs = &nea_region.slots[i];
        if (rs->held)
            continue;
        drop_kept(rs); /* its pages hold no block */
        if (rs->touched <= rs->top)
            continue;
        /* Pages above top hold nothing (pinned runs are all below it). */
        size_t bytes = (size_t)(rs->touched - rs->top) << RG_PAGE_SHIFT;
#ifdef MADV_DONTNEED
        if (madvise(rs->start + ((size_t)rs->top << RG_PAGE_SHIFT), bytes, MADV_DONTNEED) != 0)
            continue;
#endif
        rs->touched = rs->top;
        released += bytes;
    }
    return released;
}
