/* numpy.c: charging numpy's array data to budgets (NEP 49 data-memory handlers).
 *
 * Owns: wrapping numpy's default data-memory handler in place, so that array data made
 * in any context, by any thread holding the GIL, is charged like PyMem blocks (through
 * meter.c's foreign-allocator door and the block table). numpy keeps its handler in a
 * contextvar whose default is its default handler; wrapping that handler's allocator
 * (rather than setting a new handler in one context) reaches every context, and arrays
 * made before keep working: their blocks were never recorded, so freeing them un-charges
 * nothing. Calls made without the GIL (NEP 49 allows them) are forwarded uncharged; a
 * block they free stays recorded until its address is reused (over-counted, never
 * under-counted). nea never imports numpy itself: nea/meter/_numpy.py installs this once
 * numpy is imported. No numpy headers are needed: the handler layout and the C-API slot
 * of PyDataMem_GetHandler are numpy's stable ABI since 1.22, unchanged in 2.x.
 */
#include "meter.h"
#include "state.h"

#include <string.h>

typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
} np_allocator; /* PyDataMemAllocator, version 1 */

typedef struct {
    char name[127];
    uint8_t version;
    np_allocator allocator;
} np_handler; /* PyDataMem_Handler */

#define NP_GET_HANDLER_SLOT 305 /* PyDataMem_GetHandler in numpy's C-API table */

static np_handler *wrapped;  /* numpy's default handler, wrapped in place; GIL */
static np_allocator original; /* what it did before */

static void *np_malloc(void *ctx, size_t size)
{
    (void)ctx;
    if (!PyGILState_Check())
        return original.malloc(original.ctx, size);
    uint32_t idx;
    uint64_t gen;
    int admit = nea_foreign_admit(size, &idx, &gen);
    if (admit < 0)
        return NULL; /* numpy raises MemoryError */
    nea_any_busy = 1;
    void *p = original.malloc(original.ctx, size);
    nea_any_busy = 0;
    if (p != NULL && admit)
        nea_foreign_record(p, size, idx, gen);
    return p;
}

static void *np_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    if (!PyGILState_Check())
        return original.calloc(original.ctx, nelem, elsize);
    if (elsize != 0 && nelem > SIZE_MAX / elsize)
        return NULL;
    uint32_t idx;
    uint64_t gen;
    int admit = nea_foreign_admit(nelem * elsize, &idx, &gen);
    if (admit < 0)
        return NULL;
    nea_any_busy = 1;
    void *p = original.calloc(original.ctx, nelem, elsize);
    nea_any_busy = 0;
    if (p != NULL && admit)
        nea_foreign_record(p, nelem * elsize, idx, gen);
    return p;
}

/* A resize is accounted as a new block of the current budget (charged in full) and the
 * old one's owner un-charged. */
static void *np_realloc(void *ctx, void *ptr, size_t new_size)
{
    (void)ctx;
    if (!PyGILState_Check())
        return original.realloc(original.ctx, ptr, new_size);
    uint32_t idx;
    uint64_t gen;
    int admit = nea_foreign_admit(new_size, &idx, &gen);
    if (admit < 0)
        return NULL;
    nea_any_busy = 1;
    void *p = original.realloc(original.ctx, ptr, new_size);
    nea_any_busy = 0;
    if (p == NULL)
        return NULL;
    nea_foreign_forget(ptr);
    if (admit)
        nea_foreign_record(p, new_size, idx, gen);
    return p;
}

static void np_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (PyGILState_Check())
        nea_foreign_forget(ptr);
    nea_any_busy = 1;
    original.free(original.ctx, ptr, size);
    nea_any_busy = 0;
}

/* Wrap numpy's default handler (the caller runs this in an empty context, where numpy's
 * handler contextvar gives its default). 1: wrapped now or before; -1 with an exception. */
int nea_numpy_install(void)
{
    if (wrapped != NULL)
        return 1;
    PyObject *module = PyImport_ImportModule("numpy._core._multiarray_umath");
    if (module == NULL && PyErr_ExceptionMatches(PyExc_ModuleNotFoundError)) {
        PyErr_Clear();
        module = PyImport_ImportModule("numpy.core._multiarray_umath");
    }
    if (module == NULL)
        return -1;
    PyObject *api_capsule = PyObject_GetAttrString(module, "_ARRAY_API");
    Py_DECREF(module);
    if (api_capsule == NULL)
        return -1;
    void **api = PyCapsule_GetPointer(api_capsule, NULL);
    Py_DECREF(api_capsule);
    if (api == NULL)
        return -1;
    PyObject *(*get_handler)(void) = (PyObject * (*)(void)) api[NP_GET_HANDLER_SLOT];
    PyObject *capsule = get_handler();
    if (capsule == NULL)
        return -1;
    np_handler *handler = PyCapsule_GetPointer(capsule, "mem_handler");
    Py_DECREF(capsule); /* numpy's default handler is static: the pointer stays valid */
    if (handler == NULL)
        return -1;
    if (handler->version != 1 || strcmp(handler->name, "default_allocator") != 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "nea: numpy's data-memory handler here is %.127s (version %d), not "
                     "numpy's default; array data is not charged to budgets",
                     handler->name, (int)handler->version);
        return -1;
    }
    original = handler->allocator;
    handler->allocator.malloc = np_malloc;
    handler->allocator.calloc = np_calloc;
    handler->allocator.realloc = np_realloc;
    handler->allocator.free = np_free;
    wrapped = handler;
    return 1;
}
