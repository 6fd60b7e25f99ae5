// Counts the calls to memcpy and memmove a program makes, by size and by
// calling address, and writes the histogram when the program exits. An
// LD_PRELOAD shim for the "where the time goes" section of BENCHMARKS.md:
// callgrind says how many instructions memcpy takes, this says which
// values are copied (their sizes) and from which function.
//
//   gcc -O2 -shared -fPIC -o /tmp/memcpy_histogram.so benches/tools/memcpy_histogram.c -ldl
//   MEMCPY_HISTOGRAM=/tmp/h.txt LD_PRELOAD=/tmp/memcpy_histogram.so
//       target/release/deps/suite-<hash> --profile-loop fixed_ok3   (one line)
//   # lines: kind calls bytes caller-offset object; 200,000 runs, so calls
//   # made >= 200,000 times are per transaction:
//   awk '$2 >= 200000 { print $2 / 200000, $3, $4 }' /tmp/h.txt
//   addr2line -f -C -e target/release/deps/suite-<hash> <caller-offset>
//
// Single-threaded programs only (no locking). It copies with a plain loop
// (slow, but the counts are what matter); the
// Rust binary calls the C library's memcpy for every copy it does not
// inline, which is what callgrind attributes to
// __memcpy_avx_unaligned_erms.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SLOTS 65536
struct slot { size_t size; uintptr_t caller; unsigned long count; int kind; };
static struct slot tab[SLOTS];

static void record(size_t n, void *caller, int kind) {
    uintptr_t c = (uintptr_t)caller;
    size_t h = (n * 31 + (c >> 2) * 2654435761u + kind) % SLOTS;
    for (size_t i = 0; i < SLOTS; i++) {
        struct slot *s = &tab[(h + i) % SLOTS];
        if (s->count == 0) { s->size = n; s->caller = c; s->kind = kind; s->count = 1; return; }
        if (s->size == n && s->caller == c && s->kind == kind) { s->count++; return; }
    }
}

__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void copy(unsigned char *d, const unsigned char *s, size_t n) {
    if (d < s || d >= s + n) { for (size_t i = 0; i < n; i++) d[i] = s[i]; }
    else { for (size_t i = n; i > 0; i--) d[i - 1] = s[i - 1]; }
}

void *memcpy(void *d, const void *s, size_t n) { record(n, __builtin_return_address(0), 0); copy(d, s, n); return d; }
void *memmove(void *d, const void *s, size_t n) { record(n, __builtin_return_address(0), 1); copy(d, s, n); return d; }

__attribute__((destructor)) static void dump(void) {
    // MEMCPY_HISTOGRAM names the output file; stderr without it.
    const char *path = getenv("MEMCPY_HISTOGRAM");
    FILE *f = path ? fopen(path, "w") : stderr;
    if (!f) return;
    for (size_t i = 0; i < SLOTS; i++) {
        struct slot *s = &tab[i];
        if (!s->count) continue;
        Dl_info info;
        uintptr_t off = s->caller;
        const char *obj = "?";
        if (dladdr((void *)s->caller, &info) && info.dli_fname) { off = s->caller - (uintptr_t)info.dli_fbase; obj = info.dli_fname; }
        fprintf(f, "%s %lu %zu 0x%lx %s\n", s->kind ? "memmove" : "memcpy", s->count, s->size, (unsigned long)off, obj);
    }
    if (path) fclose(f);
}
