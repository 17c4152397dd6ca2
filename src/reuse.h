/*
 * Thread reuse: parked threads that run one scope child after another
 * (tether_scope_opts.reuse_threads). See reuse.c.
 */
#ifndef TETHER__REUSE_H
#define TETHER__REUSE_H

#include "wait.h"

/* At most this many threads park at once in the process. */
enum { TETHER__REUSE_MAX_IDLE = 16 };
/* A parked thread not handed a job within this time exits. */
#define TETHER__REUSE_IDLE_NS ((tether_time_t)1000000000)

/* Run fn(arg) on a parked thread made with the same stack size request
 * (0 = the default), or on a new one (created through the funnel). The
 * thread gets `name` (NULL or "": the caller's name, as a new thread
 * would) and the caller's signal mask. *thread receives its id, which
 * must never be joined: fn's return is the completion. Returns 0, or the
 * error of pthread_create or of its attributes (nothing ran). */
TETHER_HIDDEN int tether__reuse_run(pthread_t *thread, size_t stack_size, const char *name,
                                    void *(*fn)(void *), void *arg);
/* Called by a job on a worker thread right before it reports its
 * completion, with no user code after it: list the worker as idle now, so
 * a spawn that the completion lets through finds it. No-op on a thread
 * that is not a worker. */
TETHER_HIDDEN void tether__reuse_park_early(void);
/* Release every parked thread and wait until each has exited; how many. */
TETHER_HIDDEN int tether__reuse_trim(void);
/* The pool's part of the fork handlers (fork.c); its lock is a leaf, taken
 * last. In the child the parked threads are gone: the pool is emptied. */
TETHER_HIDDEN void tether__reuse_fork_prepare(void);
TETHER_HIDDEN void tether__reuse_fork_parent(void);
TETHER_HIDDEN void tether__reuse_fork_child(void);

#endif /* TETHER__REUSE_H */
