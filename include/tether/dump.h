/*
 * tether/dump.h — a dump of everything alive: every live scope, child and
 * token of the process, written to a descriptor as an indented text tree or
 * as JSON, on demand or when a signal arrives. It is how an operator asks a
 * stuck process what it is waiting for, and how a user checks that no
 * thread outlives its scope (the "orphan count" is zero by construction:
 * every child tether started appears under its live scope).
 */
#ifndef TETHER_DUMP_H
#define TETHER_DUMP_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The dump's format. */
typedef enum tether_dump_format {
    TETHER_DUMP_TEXT = 0, /* an indented tree, one line per scope, child or token */
    TETHER_DUMP_JSON = 1  /* one JSON object: {"pid", "now_ns", counts, "tree": [...]} */
} tether_dump_format;

typedef struct tether_dump_signal tether_dump_signal;

/*
 * tether_dump — write every live scope, child and token to a descriptor.
 *
 * Walks the whole token tree — every root token (detached scopes, scopes
 * opened with no current token, a user's tokens) and everything below it —
 * and writes one entry per token, nested as the tree is: a scope (its name,
 * policy), a child (its name, index, kernel thread id, whether it is still
 * running and, if so, what it is blocked in: the system call by name from
 * /proc/self/task/TID/syscall, "syscall N", or "running"), the background
 * children's parent token, or a plain token (how many threads entered it).
 * Every entry has its state (live or canceled), the cause and the time since
 * the cancellation, its effective deadline with the time left, and the
 * token's own request context (tether/context.h) if it has one: text
 * ", context '...'" at the end of the line, JSON "context" (null when it has
 * none; a descendant's entry does not repeat an ancestor's value). Scopes
 * opened inside a child appear below that child. The text form indents two
 * spaces per level; the JSON form nests entries in "children" arrays.
 *
 * The tree is copied under tether's tree lock (cancels wait for that copy,
 * not for the write), then formatted and written with the lock released.
 *
 * In a fork child the dump lists what the child has: the tokens and scopes
 * it inherited (their children are the parent's threads, marked "in the
 * parent process", JSON "inherited": true) and its own.
 *
 * Parameters:
 *  fd      an open descriptor, open for writing; it is not closed.
 *  format  TETHER_DUMP_TEXT or TETHER_DUMP_JSON.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL     format is out of range.
 *  EBADF      fd is not an open descriptor, or not open for writing.
 *  ENOMEM     out of memory.
 *  otherwise  the error write(2) reported (EPIPE, EAGAIN on a full
 *             non-blocking descriptor, ...); part of the dump may have
 *             been written.
 * Blocking: Blocks while writing to fd (interrupted writes are retried); not
 * a cancellation point.
 * Thread safety: Thread-safe; two dumps to one descriptor may interleave.
 * Ownership: fd stays the caller's.
 */
TETHER_API int tether_dump(int fd, tether_dump_format format);

/*
 * tether_dump_on_signal — write a dump whenever a signal arrives.
 *
 * Installs a handler for sig (with SA_RESTART) that only wakes a relay
 * thread, which tether starts now with every signal blocked; the relay
 * writes tether_dump(fd, format) each time it is woken (signals arriving
 * while it writes give one more dump). For example, SIGUSR2 with
 * STDERR_FILENO lets an operator run `kill -USR2 <pid>`. One installation at
 * a time per process.
 *
 * Parameters:
 *  out     receives the installation.
 *  sig     the signal: any but SIGKILL and SIGSTOP.
 *  fd      the descriptor the dumps go to, open for writing.
 *  format  TETHER_DUMP_TEXT or TETHER_DUMP_JSON.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  out is NULL, sig is not a signal that can be caught, or format
 *          is out of range.
 *  EBADF   fd is not an open descriptor, or not open for writing.
 *  EBUSY   a tether_dump_on_signal installation exists.
 *  EMFILE  no descriptor for the relay's eventfd.
 *  EAGAIN  the relay thread could not be created.
 *  ENOMEM  out of memory.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: fd must stay open until tether_dump_signal_free; the
 * installation is freed by tether_dump_signal_free. A forked child inherits
 * the handler but not the relay thread: it gets no dumps until it installs
 * its own (after tether_dump_signal_free of the inherited handle).
 */
TETHER_API int tether_dump_on_signal(tether_dump_signal **out, int sig, int fd,
                                     tether_dump_format format);

/*
 * tether_dump_signal_free — restore the signal's previous disposition and
 * stop the relay.
 *
 * Restores the disposition sig had before tether_dump_on_signal, waits for
 * a handler already running and for a dump being written, then joins the
 * relay thread and frees the installation.
 *
 * Parameters:
 *  h  the installation.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  h is NULL.
 * Blocking: Blocks until a dump being written is finished; not a
 * cancellation point.
 * Thread safety: Call once per installation; not from a signal handler.
 * Ownership: Ends h; the descriptor stays the caller's.
 */
TETHER_API int tether_dump_signal_free(tether_dump_signal *h);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_DUMP_H */
