/* blocks.c: growth, shrinking and deletion of the meter's block tables (see blocks.h).
 *
 * Owns: the table's memory, taken from libc calloc/free only (never the hooked allocator
 * domains). Must not call Python.
 */
#include "blocks.h"

#include <stdlib.h>

#define NEA_MIN_TABLE_BITS 12

block_table nea_blocks = {.window = NEA_WINDOW_BITS};

static void place(block_entry *table, size_t cap, unsigned bits, unsigned window,
                  const block_entry *e)
{
    size_t mask = cap - 1;
    size_t i = nea_block_hash_bits(e->ptr, bits, window) & mask;
    while (table[i].ptr != 0)
        i = (i + 1) & mask;
    table[i] = *e;
}

/* Rehash into a table of 2^bits entries. */
static NEA_COLD int resize(block_table *t, unsigned bits)
{
    size_t cap = (size_t)1 << bits;
    block_entry *table = calloc(cap, sizeof(block_entry));
    if (table == NULL)
        return -1;
    for (size_t i = 0; i < t->cap; i++)
        if (t->entries[i].ptr != 0)
            place(table, cap, bits, t->window, &t->entries[i]);
    free(t->entries);
    t->entries = table;
    t->cap = cap;
    t->bits = bits;
    return 0;
}

NEA_COLD int bt_grow(block_table *t)
{
    return resize(t, t->cap ? t->bits + 1 : NEA_MIN_TABLE_BITS);
}

/* After a spike (a request that held many blocks), give the memory back: shrink while the
 * table is at most 1/8 full, to 1/4 full. Called when a budget closes. */
void bt_maybe_shrink(block_table *t)
{
    if (t->bits <= NEA_MIN_TABLE_BITS || t->count * 8 > t->cap)
        return;
    unsigned bits = t->bits;
    while (bits > NEA_MIN_TABLE_BITS && t->count * 4 <= ((size_t)1 << (bits - 1)))
        bits--;
    (void)resize(t, bits); /* on failure the big table simply stays */
}

void bt_delete(block_table *t, block_entry *e)
{
    size_t mask = t->cap - 1;
    size_t hole = (size_t)(e - t->entries);
    for (size_t i = (hole + 1) & mask; t->entries[i].ptr != 0; i = (i + 1) & mask) {
        size_t home = bt_hash(t, t->entries[i].ptr);
        /* Move entry i into the hole unless its home lies cyclically in (hole, i]. */
        if (((i - home) & mask) >= ((i - hole) & mask)) {
            t->entries[hole] = t->entries[i];
            hole = i;
        }
    }
    t->entries[hole].ptr = 0;
    t->count--;
}

void bt_displacement(const block_table *t, unsigned long long *total,
                     unsigned long long *worst)
{
    *total = 0;
    *worst = 0;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->entries[i].ptr == 0)
            continue;
        size_t d = (i - bt_hash(t, t->entries[i].ptr)) & (t->cap - 1);
        *total += d;
        if (d > *worst)
            *worst = d;
    }
}
