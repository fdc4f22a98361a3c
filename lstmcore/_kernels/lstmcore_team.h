/* The persistent thread team of the sequence driver, and the thread count it may use.
 *
 * Why not OpenMP: GNU libgomp cannot be used in a child process forked after the parent used it (the child hangs in
 * its first parallel region; measured here), and forking is how many users run data loaders and process pools. This
 * team is a handful of POSIX threads that live for the whole process, re-created lazily in a forked child.
 *
 *   lc_team_run(n, fn, ctx)   runs fn(ctx, tid, n) on n threads, tid 0 on the caller, and returns when all are done
 *                             (the count actually used: fewer only if the system refuses to create threads).
 *                             One team runs at a time: a second caller (another Python thread) waits for the first, so
 *                             a call always gets the team size it asked for (results depend on it, bit for bit).
 *   lc_team_barrier()         called by every member of the running team: returns once all of them have called it.
 *                             Waiters spin for some microseconds, then sleep (the machine may be shared).
 *   lc_blas_threads(fn)       the thread count of the BLAS that fn's library links (OpenBLAS, MKL or BLIS): the
 *                             number threadpoolctl.threadpool_limits() and OPENBLAS_NUM_THREADS set; 0 if unknown.
 *
 * Without POSIX threads (Windows) the team has one thread and runs fn on the caller.
 */
#ifndef LSTMCORE_TEAM_H
#define LSTMCORE_TEAM_H

#include <stddef.h>

typedef void (*lc_team_fn)(void *ctx, int tid, int nthreads);

#define LC_TEAM_MAX 64

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define LC_PAUSE() __builtin_ia32_pause()
#else
#define LC_PAUSE() ((void)0)
#endif

/* A waiter spins LC_SPIN pauses (a few microseconds: a step's imbalance between threads), then yields its core
 * LC_YIELDS times (a member that another process preempted may get it back at once), then sleeps. Spinning longer
 * made a 2-thread team on a core shared with another process 20-40x slower than one thread. */
#define LC_SPIN 2000
#define LC_YIELDS 50

typedef struct {
    pthread_mutex_t run_lock;          /* one team at a time */
    pthread_mutex_t lock;              /* guards the sleeping waiters' predicates */
    pthread_cond_t wake, done_cv, barrier_cv;
    int workers;                       /* started worker threads (tid 1 .. workers) */
    lc_team_fn fn;                     /* the job */
    void *ctx;
    int nthreads;
    volatile int job;                  /* incremented for every job */
    volatile int done;                 /* members other than the caller that finished the job */
    volatile int arrived;              /* the barrier */
    volatile int generation;
    int start_job[LC_TEAM_MAX];        /* the job number when each worker started: it waits for the next one */
} lc_team_state;

static lc_team_state lc_team = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                                PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, NULL, 1, 0, 0, 0, 0, {0}};
static pthread_once_t lc_team_once = PTHREAD_ONCE_INIT;

static inline int lc_load(volatile int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

/* Wait until *p != old: spin, then sleep on cv (whoever changes *p broadcasts cv under lc_team.lock). */
static void lc_wait_change(volatile int *p, int old, pthread_cond_t *cv) {
    for (int i = 0; i < LC_SPIN; i++) {
        if (lc_load(p) != old) return;
        LC_PAUSE();
    }
    for (int i = 0; i < LC_YIELDS; i++) {
        if (lc_load(p) != old) return;
        sched_yield();
    }
    pthread_mutex_lock(&lc_team.lock);
    while (lc_load(p) == old) pthread_cond_wait(cv, &lc_team.lock);
    pthread_mutex_unlock(&lc_team.lock);
}

static void lc_publish(volatile int *p, int value, pthread_cond_t *cv) {
    pthread_mutex_lock(&lc_team.lock);
    __atomic_store_n(p, value, __ATOMIC_RELEASE);
    pthread_cond_broadcast(cv);
    pthread_mutex_unlock(&lc_team.lock);
}

static inline void lc_team_barrier(void) {
    int n = lc_team.nthreads;
    if (n <= 1) return;
    int gen = lc_load(&lc_team.generation);
    if (__atomic_add_fetch(&lc_team.arrived, 1, __ATOMIC_ACQ_REL) == n) {
        __atomic_store_n(&lc_team.arrived, 0, __ATOMIC_RELAXED);
        lc_publish(&lc_team.generation, gen + 1, &lc_team.barrier_cv);
    } else {
        lc_wait_change(&lc_team.generation, gen, &lc_team.barrier_cv);
    }
}

static void *lc_team_worker(void *arg) {
    int tid = (int)(size_t)arg, seen = lc_team.start_job[tid];
    for (;;) {
        lc_wait_change(&lc_team.job, seen, &lc_team.wake);
        seen = lc_load(&lc_team.job);
        int n = lc_team.nthreads;
        if (tid < n) {
            lc_team.fn(lc_team.ctx, tid, n);
            if (__atomic_add_fetch(&lc_team.done, 1, __ATOMIC_ACQ_REL) == n - 1) {
                pthread_mutex_lock(&lc_team.lock);
                pthread_cond_broadcast(&lc_team.done_cv);
                pthread_mutex_unlock(&lc_team.lock);
            }
        }
    }
    return NULL;
}

/* In a forked child the workers do not exist: start from an empty team (locks re-initialised, as the fork may have
 * happened while another thread held them). */
static void lc_team_after_fork_child(void) {
    pthread_mutex_init(&lc_team.run_lock, NULL);
    pthread_mutex_init(&lc_team.lock, NULL);
    pthread_cond_init(&lc_team.wake, NULL);
    pthread_cond_init(&lc_team.done_cv, NULL);
    pthread_cond_init(&lc_team.barrier_cv, NULL);
    lc_team.workers = 0;
    lc_team.job = lc_team.done = lc_team.arrived = lc_team.generation = 0;
    lc_team.nthreads = 1;
}

static void lc_team_init(void) { pthread_atfork(NULL, NULL, lc_team_after_fork_child); }

/* Start workers up to n - 1; returns the team size available (n, or fewer if threads cannot be created). */
static int lc_team_grow(int n) {
    while (lc_team.workers < n - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        lc_team.start_job[lc_team.workers + 1] = lc_team.job;
        int failed = pthread_create(&thread, &attr, lc_team_worker, (void *)(size_t)(lc_team.workers + 1));
        pthread_attr_destroy(&attr);
        if (failed) break;
        lc_team.workers++;
    }
    return lc_team.workers + 1 < n ? lc_team.workers + 1 : n;
}

static int lc_team_run(int n, lc_team_fn fn, void *ctx) {
    if (n > LC_TEAM_MAX) n = LC_TEAM_MAX;
    if (n <= 1) {
        fn(ctx, 0, 1);
        return 1;
    }
    pthread_once(&lc_team_once, lc_team_init);
    pthread_mutex_lock(&lc_team.run_lock);
    n = lc_team_grow(n);
    lc_team.fn = fn;
    lc_team.ctx = ctx;
    lc_team.nthreads = n;
    __atomic_store_n(&lc_team.done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&lc_team.arrived, 0, __ATOMIC_RELAXED);
    if (n > 1) lc_publish(&lc_team.job, lc_team.job + 1, &lc_team.wake);
    fn(ctx, 0, n);
    if (n > 1) {
        for (int i = 0; i < LC_SPIN && lc_load(&lc_team.done) < n - 1; i++) LC_PAUSE();
        pthread_mutex_lock(&lc_team.lock);
        while (lc_load(&lc_team.done) < n - 1) pthread_cond_wait(&lc_team.done_cv, &lc_team.lock);
        pthread_mutex_unlock(&lc_team.lock);
    }
    lc_team.nthreads = 1;
    pthread_mutex_unlock(&lc_team.run_lock);
    return n;
}

/* The first of ``names`` defined by the library holding fn or by the libraries it links (dlsym on a library's
 * handle searches its dependencies too); NULL if none. */
static void *lc_blas_symbol(const void *fn, const char *const *names, size_t count) {
    Dl_info info;
    void *found = NULL;
    if (fn != NULL && dladdr(fn, &info) && info.dli_fname != NULL) {
        void *lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
        for (size_t i = 0; lib != NULL && found == NULL && i < count; i++) found = dlsym(lib, names[i]);
    }
    return found;
}

/* The BLAS's thread count, under the names OpenBLAS (plain and SciPy's prefixed builds, 32- and 64-bit integers),
 * MKL and BLIS give its query. */
static int lc_blas_threads(const void *fn) {
    static const char *const names[] = {"scipy_openblas_get_num_threads", "scipy_openblas_get_num_threads64_",
                                        "openblas_get_num_threads", "openblas_get_num_threads64_",
                                        "MKL_Get_Max_Threads", "bli_thread_get_num_threads"};
    static void *query = NULL;
    static int looked = 0;
    if (!__atomic_load_n(&looked, __ATOMIC_ACQUIRE)) {
        query = lc_blas_symbol(fn, names, sizeof names / sizeof names[0]);
        __atomic_store_n(&looked, 1, __ATOMIC_RELEASE);
    }
    return query != NULL ? ((int (*)(void))query)() : 0;
}

/* Read once: sysconf(_SC_NPROCESSORS_ONLN) reads /sys on Linux, ~5 us, which a one-step call of a small cell felt. */
static int lc_cpu_count(void) {
    static int count = 0;
    int n = __atomic_load_n(&count, __ATOMIC_RELAXED);
    if (n == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online > 0 ? (int)online : 1;
        __atomic_store_n(&count, n, __ATOMIC_RELAXED);
    }
    return n;
}

#else /* no POSIX threads: a team of one */

static inline void lc_team_barrier(void) {}
static int lc_team_run(int n, lc_team_fn fn, void *ctx) { (void)n; fn(ctx, 0, 1); return 1; }
static int lc_blas_threads(const void *fn) { (void)fn; return 0; }
static int lc_cpu_count(void) { return 1; }

#endif
#endif
