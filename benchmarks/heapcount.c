/* Live heap bytes of a whole process, and their peak, counted at malloc: a peak-memory measurement that,
 * unlike the resident set, leaves out what the C library keeps cached after a free and what a framework's
 * own pool holds unused.  Loaded with LD_PRELOAD; read from Python with ctypes (benchmarks/heapcount.py).
 *
 * Every allocation entry point of glibc is wrapped and forwarded to glibc's own implementation
 * (__libc_malloc and friends, which need no dlsym and so no bootstrap allocation).  Sizes are those of
 * malloc_usable_size, the same on allocation and free, so the count is exact for what the process holds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static int64_t live_bytes;
static int64_t peak_bytes;
/* While 0, nothing is counted: the atomic adds of many threads contend for one cache line (a Keras
 * LSTM's compiled step ran 2.3x slower counted), so timed steps run uncounted. A free of a block made
 * while uncounted is then counted, and a rise over one step is still exact: what a step allocates less
 * what it frees, whenever those blocks were made. */
static int counting = 1;

static void count(int64_t delta) {
    int64_t now = __atomic_add_fetch(&live_bytes, delta, __ATOMIC_RELAXED);
    int64_t seen = __atomic_load_n(&peak_bytes, __ATOMIC_RELAXED);
    while (now > seen && !__atomic_compare_exchange_n(&peak_bytes, &seen, now, 1, __ATOMIC_RELAXED,
                                                      __ATOMIC_RELAXED)) {
    }
}

static int on(void) { return __atomic_load_n(&counting, __ATOMIC_RELAXED); }

static void *counted(void *p) {
    if (p && on()) count((int64_t)malloc_usable_size(p));
    return p;
}

void *malloc(size_t n) { return counted(__libc_malloc(n)); }
void *calloc(size_t n, size_t size) { return counted(__libc_calloc(n, size)); }
void *memalign(size_t alignment, size_t n) { return counted(__libc_memalign(alignment, n)); }
void *aligned_alloc(size_t alignment, size_t n) { return counted(__libc_memalign(alignment, n)); }
void *valloc(size_t n) { return counted(__libc_memalign(4096, n)); }

void free(void *p) {
    if (p && on()) count(-(int64_t)malloc_usable_size(p));
    __libc_free(p);
}

void *realloc(void *p, size_t n) {
    if (!on()) return __libc_realloc(p, n);
    int64_t before = p ? (int64_t)malloc_usable_size(p) : 0;
    void *q = __libc_realloc(p, n);
    if (q) count((int64_t)malloc_usable_size(q) - before);
    else if (p && n == 0) count(-before); /* realloc(p, 0) freed p */
    return q;
}

int posix_memalign(void **out, size_t alignment, size_t n) {
    if (alignment < sizeof(void *) || (alignment & (alignment - 1))) return EINVAL;
    void *p = __libc_memalign(alignment, n);
    if (!p && n) return ENOMEM;
    *out = counted(p);
    return 0;
}

int64_t heapcount_live(void) { return __atomic_load_n(&live_bytes, __ATOMIC_RELAXED); }
int64_t heapcount_peak(void) { return __atomic_load_n(&peak_bytes, __ATOMIC_RELAXED); }
void heapcount_set_counting(int value) { __atomic_store_n(&counting, value, __ATOMIC_RELAXED); }
/* Start a new peak from what is live now. */
void heapcount_reset_peak(void) { __atomic_store_n(&peak_bytes, heapcount_live(), __ATOMIC_RELAXED); }
