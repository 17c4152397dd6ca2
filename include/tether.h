/*
 * tether — structured concurrency and cancellation propagation for POSIX
 * threads and blocking I/O.
 *
 * A scope owns the threads it spawns (one thread per child) and returns only
 * after every one of them has exited and been joined. Cancellation and
 * deadlines flow down a tree of tokens; a thread blocked in one of tether's
 * cancellable primitives is woken and returns ECANCELED or ETIMEDOUT.
 *
 * Conventions (see README.md):
 *  - Blocking primitives that stand in for a POSIX call (tether_read,
 *    tether_sleep_for, ...) keep that call's parameters and return value:
 *    -1 and errno on failure, with ECANCELED when the calling thread's
 *    current token was canceled and ETIMEDOUT when its deadline passed.
 *  - Everything else follows pthreads: it returns 0 or a positive error
 *    number and leaves errno alone.
 *  - Time is an absolute CLOCK_MONOTONIC instant in nanoseconds
 *    (tether_time_t); TETHER_NEVER means "no deadline". Durations are
 *    int64_t nanoseconds.
 *  - Every object with a lifecycle is an opaque handle with one owner and one
 *    call that ends it.
 *  - A signal handler may call only the functions whose doc block says
 *    async-signal-safe (tether_sigcancel_fire, tether_now, ...): the others
 *    may take a lock the interrupted thread holds, or allocate.
 *
 * This is the umbrella header: it includes every part of the API. Each part
 * is a header of its own under tether/ that compiles alone, so a program
 * that needs only tokens and scopes can include <tether/core.h> and
 * <tether/scope.h> without the POSIX headers the drop-ins need:
 *
 *   tether/base.h     TETHER_API, version, time, causes and outcomes
 *   tether/core.h     tokens, the current token, in-thread deadlines, fork
 *   tether/context.h  request context: a value on a token its descendants see
 *   tether/scope.h    scopes, tasks, TETHER_SCOPE_GUARD
 *   tether/sleep.h    cancellable sleeps
 *   tether/shield.h   shielded regions for clean-up
 *   tether/io.h       descriptor I/O and poll
 *   tether/net.h      sockets
 *   tether/sync.h     condition variables and semaphores
 *   tether/process.h  waitpid, waitid and child processes
 *   tether/signals.h  canceling from signal handlers, graceful shutdown
 *   tether/retry.h    retry with backoff
 *   tether/dump.h     the dump of every live scope, child and token
 *   tether/resolve.h  name resolution that stops at cancellation
 *   tether/job.h      jobs of an existing thread pool under their own token
 *   tether/metrics.h  lifecycle metrics: snapshot, Prometheus text format
 *   tether/events.h   event hooks: scopes, children, cancellations
 *   tether/budget.h   a deadline as a network budget (grpc-timeout) and back
 *
 * Not included here: tether/interpose.h, the controls of the interposition
 * layer (libtether_interpose.so, a library of its own).
 *
 * Every function is documented above its declaration in one fixed layout
 * (see tether/base.h), from which the man pages are generated.
 */
#ifndef TETHER_H
#define TETHER_H

#include "tether/base.h"
#include "tether/core.h"
#include "tether/context.h"
#include "tether/scope.h"
#include "tether/sleep.h"
#include "tether/shield.h"
#include "tether/io.h"
#include "tether/net.h"
#include "tether/sync.h"
#include "tether/process.h"
#include "tether/signals.h"
#include "tether/retry.h"
#include "tether/dump.h"
#include "tether/resolve.h"
#include "tether/metrics.h"
#include "tether/events.h"
#include "tether/job.h"
#include "tether/hook.h"
#include "tether/budget.h"

#endif /* TETHER_H */
