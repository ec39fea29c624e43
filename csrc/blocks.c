/* blocks.c: growth, shrinking and deletion of the meter's block table (see blocks.h).
 *
 * Owns: the table's memory, taken from libc calloc/free only (never the hooked allocator
 * domains). Must not call Python.
 */
#include "blocks.h"

#include <stdlib.h>

#define NEA_MIN_TABLE_BITS 12

block_table nea_blocks;

static void place(block_entry *table, size_t cap, unsigned bits, const block_entry *e)
{
    size_t mask = cap - 1;
    size_t i = nea_block_hash_bits(e->ptr, bits) & mask;
    while (table[i].ptr != 0)
        i = (i + 1) & mask;
    table[i] = *e;
}

/* Rehash into a table of 2^bits entries. */
static NEA_COLD int resize(unsigned bits)
{
    size_t cap = (size_t)1 << bits;
    block_entry *table = calloc(cap, sizeof(block_entry));
    if (table == NULL)
        return -1;
    for (size_t i = 0; i < nea_blocks.cap; i++)
        if (nea_blocks.entries[i].ptr != 0)
            place(table, cap, bits, &nea_blocks.entries[i]);
    free(nea_blocks.entries);
    nea_blocks.entries = table;
    nea_blocks.cap = cap;
    nea_blocks.bits = bits;
    return 0;
}

NEA_COLD int nea_block_grow(void)
{
    return resize(nea_blocks.cap ? nea_blocks.bits + 1 : NEA_MIN_TABLE_BITS);
}

/* After a spike (a request that held many blocks), give the memory back: shrink while the
 * table is at most 1/8 full, to 1/4 full. Called when a budget closes. */
void nea_block_maybe_shrink(void)
{
    if (nea_blocks.bits <= NEA_MIN_TABLE_BITS || nea_blocks.count * 8 > nea_blocks.cap)
        return;
    unsigned bits = nea_blocks.bits;
    while (bits > NEA_MIN_TABLE_BITS && nea_blocks.count * 4 <= ((size_t)1 << (bits - 1)))
        bits--;
    (void)resize(bits); /* on failure the big table simply stays */
}

void nea_block_delete(block_entry *e)
{
    size_t mask = nea_blocks.cap - 1;
    size_t hole = (size_t)(e - nea_blocks.entries);
    for (size_t i = (hole + 1) & mask; nea_blocks.entries[i].ptr != 0; i = (i + 1) & mask) {
        size_t home = nea_block_hash(nea_blocks.entries[i].ptr);
        /* Move entry i into the hole unless its home lies cyclically in (hole, i]. */
        if (((i - home) & mask) >= ((i - hole) & mask)) {
            nea_blocks.entries[hole] = nea_blocks.entries[i];
            hole = i;
        }
    }
    nea_blocks.entries[hole].ptr = 0;
    nea_blocks.count--;
}

void nea_block_displacement(unsigned long long *total, unsigned long long *worst)
{
    *total = 0;
    *worst = 0;
    for (size_t i = 0; i < nea_blocks.cap; i++) {
        if (nea_blocks.entries[i].ptr == 0)
            continue;
        size_t d = (i - nea_block_hash(nea_blocks.entries[i].ptr)) & (nea_blocks.cap - 1);
        *total += d;
        if (d > *worst)
            *worst = d;
    }
}
