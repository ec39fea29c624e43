/* clibs.c: charging the memory C libraries take with malloc (Pillow, lxml/libxml2,
 * sqlite3, OpenSSL, ...) to budgets.
 *
 * Owns: rewriting the malloc-family entries of loaded shared objects' relocation slots
 * (GOT entries and data pointers such as libxml2's xmlMalloc) to point at wrappers here,
 * in-process, and those wrappers. The wrappers call libc's functions and report each block
 * to anyblocks.c's door for blocks from any thread (nea_any_*), which charges it to the budget
 * of the thread that made it, with or without the GIL. Never calls Python and never takes
 * the GIL: a wrapper may run inside a C library holding its own locks.
 *
 * Not patched: the interpreter itself (the executable and libpython: CPython's own
 * allocators are metered through the PyMem hooks), libc and the dynamic loader, the object
 * that defines malloc (libc, or a preloaded jemalloc/tcmalloc), and this extension. Only
 * ELF objects on x86-64 and aarch64 (RELA relocations); elsewhere nothing is patched.
 * Memory a library maps itself (mmap, Arrow's jemalloc pool) is not seen.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "blocks.h"
#include "meter.h"
#include "state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
#define NEA_CLIBS 1
#include <dlfcn.h>
#include <link.h>
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

#ifdef NEA_CLIBS

/* ---- the wrappers ---------------------------------------------------------------- */

/* A new block of `size` for `owner`, recorded; freed and NULL when it cannot be (the
 * table cannot grow: fail closed). */
static void *recorded(void *p, size_t size, const nea_any_owner_t *owner)
{
    if (p != NULL && nea_any_record(p, size, owner) < 0) {
        free(p);
        return NULL;
    }
    return p;
}

static void *w_malloc(size_t size)
{
    nea_any_owner_t owner;
    if (!nea_any_owner(&owner))
        return malloc(size);
    return recorded(malloc(size), size, &owner);
}

static void *w_calloc(size_t nelem, size_t elsize)
{
    nea_any_owner_t owner;
    if (!nea_any_owner(&owner) || (elsize != 0 && nelem > SIZE_MAX / elsize))
        return calloc(nelem, elsize);
    return recorded(calloc(nelem, elsize), nelem * elsize, &owner);
}

static void w_free(void *ptr)
{
    if (ptr != NULL)
        nea_any_forget(ptr); /* before the free: the address may be reused at once */
    free(ptr);
}

/* A resized block keeps its owner while that budget is open; a block nobody was charged
 * for becomes the current budget's (charged in full), as PyMem blocks do. The old block
 * is detached before the call, so its address, once freed, is never confused with
 * another thread's new block. */
static void *w_realloc(void *ptr, size_t size)
{
    if (ptr == NULL)
        return w_malloc(size);
    nea_any_owner_t owner;
    size_t old_size = 0;
    int had = nea_any_detach(ptr, &old_size, &owner);
    int charge = had || nea_any_owner(&owner);
    void *p = realloc(ptr, size);
    if (p == NULL) {
        if (size != 0 && had) /* the old block is still there */
            (void)nea_any_record(ptr, old_size, &owner);
        return NULL;
    }
    if (charge)
        (void)nea_any_record(p, size, &owner); /* cannot undo the move: uncharged if full */
    return p;
}

static void *w_reallocarray(void *ptr, size_t nelem, size_t elsize)
{
    if (elsize != 0 && nelem > SIZE_MAX / elsize)
        return reallocarray(ptr, nelem, elsize); /* libc sets ENOMEM */
    return w_realloc(ptr, nelem * elsize);
}

static int w_posix_memalign(void **out, size_t alignment, size_t size)
{
    nea_any_owner_t owner;
    if (!nea_any_owner(&owner))
        return posix_memalign(out, alignment, size);
    int rc = posix_memalign(out, alignment, size);
    if (rc == 0 && recorded(*out, size, &owner) == NULL)
        return ENOMEM;
    return rc;
}

#define NEA_ALIGNED_WRAPPER(name, params, args, size)                                       \
    static void *w_##name params                                                           \
    {                                                                                      \
        nea_any_owner_t owner;                                                             \
        if (!nea_any_owner(&owner))                                                        \
            return name args;                                                              \
        return recorded(name args, size, &owner);                                          \
    }
NEA_ALIGNED_WRAPPER(aligned_alloc, (size_t alignment, size_t size), (alignment, size), size)
NEA_ALIGNED_WRAPPER(memalign, (size_t alignment, size_t size), (alignment, size), size)
NEA_ALIGNED_WRAPPER(valloc, (size_t size), (size), size)

typedef struct {
    const char *name;
    void *real;
    void *wrapper;
} target;

static target targets[] = {
    {"malloc", (void *)malloc, (void *)w_malloc},
    {"calloc", (void *)calloc, (void *)w_calloc},
    {"realloc", (void *)realloc, (void *)w_realloc},
    {"free", (void *)free, (void *)w_free},
    {"reallocarray", (void *)reallocarray, (void *)w_reallocarray},
    {"posix_memalign", (void *)posix_memalign, (void *)w_posix_memalign},
    {"aligned_alloc", (void *)aligned_alloc, (void *)w_aligned_alloc},
    {"memalign", (void *)memalign, (void *)w_memalign},
    {"valloc", (void *)valloc, (void *)w_valloc},
};
#define NTARGETS (sizeof(targets) / sizeof(targets[0]))

/* ---- patching -------------------------------------------------------------------- */

#if defined(__x86_64__)
#define R_SLOT R_X86_64_JUMP_SLOT
#define R_GLOB R_X86_64_GLOB_DAT
#define R_ABS R_X86_64_64
#else
#define R_SLOT R_AARCH64_JUMP_SLOT
#define R_GLOB R_AARCH64_GLOB_DAT
#define R_ABS R_AARCH64_ABS64
#endif

static unsigned long long seen_adds;  /* GIL: dlpi_adds when the objects were last walked */
static uintptr_t *done;               /* GIL: load addresses of objects walked already */
static size_t done_count, done_cap;
static uintptr_t skip[4];             /* libc/the allocator, libpython, the loader, us */
static unsigned long long patched;    /* GIL: relocation slots pointing at a wrapper */
static unsigned long long objects;    /* GIL: objects with at least one such slot */

static uintptr_t base_of(void *addr)
{
    Dl_info info;
    return dladdr(addr, &info) != 0 ? (uintptr_t)info.dli_fbase : 0;
}

static int was_done(uintptr_t base)
{
    for (size_t i = 0; i < done_count; i++)
        if (done[i] == base)
            return 1;
    return 0;
}

static void mark_done(uintptr_t base)
{
    if (done_count == done_cap) {
        size_t cap = done_cap ? done_cap * 2 : 64;
        uintptr_t *grown = realloc(done, cap * sizeof(*grown));
        if (grown == NULL)
            return; /* walked again next time: patching is idempotent */
        done = grown;
        done_cap = cap;
    }
    done[done_count++] = base;
}

/* Dynamic-section addresses are absolute once glibc relocated them, else offsets. */
static uintptr_t dyn_addr(uintptr_t base, ElfW(Addr) value)
{
    return value < base ? base + value : (uintptr_t)value;
}

static int target_of(const char *name)
{
    for (size_t i = 0; i < NTARGETS; i++)
        if (strcmp(name, targets[i].name) == 0)
            return (int)i;
    return -1;
}

/* Point the relocation slot at `where` to the wrapper,
 * when it holds the real function or, for a PLT slot, the object's own lazy-binding stub:
 * anything else (a library's own allocator, another tool's hook) is left alone. RELRO pages
 * are opened for the write and closed again. Returns 1 when the slot now points at the
 * wrapper. */
static int patch_slot(void **where, const target *t, unsigned type, uintptr_t relro_lo,
                      uintptr_t relro_hi)
{
    void *now = __atomic_load_n(where, __ATOMIC_RELAXED);
    if (now == t->wrapper)
        return 1;
    if (now != t->real && !(type == R_SLOT && base_of(now) == base_of(where)))
        return 0;
    uintptr_t addr = (uintptr_t)where;
    int in_relro = addr >= relro_lo && addr < relro_hi;
    uintptr_t page = addr & ~((uintptr_t)sysconf(_SC_PAGESIZE) - 1);
    size_t span = (size_t)(addr + sizeof(void *) - page);
    if (in_relro && mprotect((void *)page, span, PROT_READ | PROT_WRITE) != 0)
        return 0;
    __atomic_store_n(where, t->wrapper, __ATOMIC_RELEASE);
    if (in_relro)
        (void)mprotect((void *)page, span, PROT_READ);
    return 1;
}

static void patch_object(struct dl_phdr_info *info)
{
    uintptr_t base = (uintptr_t)info->dlpi_addr;
    const ElfW(Dyn) *dyn = NULL;
    uintptr_t relro_lo = 0, relro_hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(base + ph->p_vaddr);
        else if (ph->p_type == PT_GNU_RELRO) {
            relro_lo = base + ph->p_vaddr;
            relro_hi = relro_lo + ph->p_memsz;
        }
    }
    if (dyn == NULL)
        return;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const ElfW(Rela) *tables[2] = {NULL, NULL};
    size_t sizes[2] = {0, 0};
    int rela = 1;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        switch (dyn->d_tag) {
        case DT_SYMTAB: symtab = (const ElfW(Sym) *)dyn_addr(base, dyn->d_un.d_ptr); break;
        case DT_STRTAB: strtab = (const char *)dyn_addr(base, dyn->d_un.d_ptr); break;
        case DT_JMPREL: tables[0] = (const ElfW(Rela) *)dyn_addr(base, dyn->d_un.d_ptr); break;
        case DT_PLTRELSZ: sizes[0] = dyn->d_un.d_val; break;
        case DT_PLTREL: rela = dyn->d_un.d_val == DT_RELA; break;
        case DT_RELA: tables[1] = (const ElfW(Rela) *)dyn_addr(base, dyn->d_un.d_ptr); break;
        case DT_RELASZ: sizes[1] = dyn->d_un.d_val; break;
        default: break;
        }
    }
    if (symtab == NULL || strtab == NULL || !rela)
        return;
    int any = 0;
    for (int k = 0; k < 2; k++) {
        size_t n = tables[k] != NULL ? sizes[k] / sizeof(ElfW(Rela)) : 0;
        for (size_t i = 0; i < n; i++) {
            const ElfW(Rela) *r = &tables[k][i];
            unsigned type = (unsigned)ELF64_R_TYPE(r->r_info);
            size_t sym = (size_t)ELF64_R_SYM(r->r_info);
            if (sym == 0 || (type != R_SLOT && type != R_GLOB && type != R_ABS) ||
                (type == R_ABS && r->r_addend != 0))
                continue;
            int t = target_of(strtab + symtab[sym].st_name);
            if (t < 0)
                continue;
            if (patch_slot((void **)(base + r->r_offset), &targets[t], type, relro_lo,
                           relro_hi)) {
                patched++;
                any = 1;
            }
        }
    }
    objects += any;
}

/* The C runtime, the loader and sanitizer runtimes, by file name: their own allocations
 * (stdio buffers, thread stacks, the loader's tables) are the process's, not a request's. */
static const char *const system_objects[] = {
    "libc.so", "libc-", "libc.musl", "ld-linux", "ld-musl", "ld64.so", "libpthread", "libdl.",
    "librt.", "libm.", "libgcc_s", "libasan", "libtsan", "libubsan", "linux-vdso", "linux-gate",
};

static int skipped(struct dl_phdr_info *info)
{
    uintptr_t base = (uintptr_t)info->dlpi_addr;
    const char *name = info->dlpi_name;
    if (name == NULL || name[0] == '\0' || base == 0)
        return 1; /* the executable (the interpreter), or the vDSO */
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (skip[i] != 0 && base == skip[i])
            return 1;
    const char *file = strrchr(name, '/');
    file = file != NULL ? file + 1 : name;
    for (size_t i = 0; i < sizeof(system_objects) / sizeof(system_objects[0]); i++)
        if (strncmp(file, system_objects[i], strlen(system_objects[i])) == 0)
            return 1;
    return 0;
}

/* The objects a walk found, copied out of dl_iterate_phdr's callback: patching calls
 * dladdr, which takes the loader's other lock, and a thread inside dlopen holds that one
 * while it waits for the lock dl_iterate_phdr holds. So nothing is patched inside the
 * callback. (A loaded object's program headers stay mapped as long as it is loaded, and
 * CPython never unloads an extension module.) */
typedef struct {
    struct dl_phdr_info *items;
    size_t count, cap;
} found_list;

static int collect(struct dl_phdr_info *info, size_t size, void *data)
{
    found_list *found = data;
    if (was_done((uintptr_t)info->dlpi_addr) || skipped(info)) {
        mark_done((uintptr_t)info->dlpi_addr);
        return 0;
    }
    if (found->count == found->cap) {
        size_t cap = found->cap ? found->cap * 2 : 64;
        struct dl_phdr_info *grown = realloc(found->items, cap * sizeof(*grown));
        if (grown == NULL)
            return 1; /* the rest waits for the next walk */
        found->items = grown;
        found->cap = cap;
    }
    struct dl_phdr_info *item = &found->items[found->count++];
    memset(item, 0, sizeof(*item));
    memcpy(item, info, size < sizeof(*item) ? size : sizeof(*item)); /* an older libc's */
    return 0;
}

static int read_adds(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    *(unsigned long long *)data = info->dlpi_adds;
    return 1; /* the first object is enough */
}

int nea_clibs_patch(void)
{
    unsigned long long adds = 0;
    dl_iterate_phdr(read_adds, &adds);
    if (adds == seen_adds && seen_adds != 0)
        return 0;
    seen_adds = adds;
    if (skip[0] == 0) {
        skip[0] = base_of((void *)malloc);
        skip[1] = base_of((void *)PyMem_Malloc);
        skip[2] = base_of((void *)free);
        skip[3] = base_of((void *)nea_clibs_patch);
    }
    found_list found = {NULL, 0, 0};
    dl_iterate_phdr(collect, &found);
    for (size_t i = 0; i < found.count; i++) {
        patch_object(&found.items[i]);
        mark_done((uintptr_t)found.items[i].dlpi_addr);
    }
    free(found.items);
    return 0;
}

PyObject *nea_clibs_info(void)
{
    size_t count, cap;
    nea_any_table_size(&count, &cap);
    return Py_BuildValue("{s:i,s:K,s:K,s:K,s:n,s:n,s:n}", "supported", 1, "objects", objects,
                         "slots", patched, "walked", (unsigned long long)done_count, "blocks",
                         (Py_ssize_t)count, "capacity", (Py_ssize_t)cap, "table_bytes",
                         (Py_ssize_t)(cap * sizeof(block_entry)));
}

#else /* not ELF on x86-64/aarch64: C libraries' memory is not charged */

int nea_clibs_patch(void) { return 0; }

PyObject *nea_clibs_info(void)
{
    return Py_BuildValue("{s:i,s:K,s:K,s:K,s:n,s:n,s:n}", "supported", 0, "objects", 0ULL,
                         "slots", 0ULL, "walked", 0ULL, "blocks", (Py_ssize_t)0, "capacity",
                         (Py_ssize_t)0, "table_bytes", (Py_ssize_t)0);
}

#endif
