/*
 * fuzz_ops.h — shared pieces of the fuzz_api harness (test/fuzz/fuzz_api.c):
 * table sizes, opcodes, the user objects every thread shares, and the
 * blocking behaviours that children and workers run (test/fuzz/fuzz_ops.c),
 * the checks around each input (test/fuzz/fuzz_guard.c).
 */
#ifndef TETHER_FUZZ_OPS_H
#define TETHER_FUZZ_OPS_H

#include <tether.h>

#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>

/*
 * FUZZ_WAIT_ACROSS_JOIN — issue 11 item 3 (a task wait or halt running while
 * the owner joins). By default a worker's wait or halt on another worker's
 * task holds that scope's tasks lock, so the owner starts join only once no
 * wait is in flight: every call is valid by the header, and item 3 cannot
 * happen. With -DFUZZ_WAIT_ACROSS_JOIN=1 the owner starts join without
 * waiting, so waits overlap the join. The header allows a wait that starts
 * before join returns; the harness cannot prove each one did (a waiter
 * descheduled between its check and the call may enter after join returned),
 * so read a report from this mode against its stack.
 */
#ifndef FUZZ_WAIT_ACROSS_JOIN
#define FUZZ_WAIT_ACROSS_JOIN 0
#endif

#define FUZZ_THREADS   3
#define FUZZ_MAX_STEPS 16 /* ops per worker thread */
#define FUZZ_OP_BYTES  3  /* opcode, two arguments */
#define FUZZ_SCOPES    4  /* per worker */
#define FUZZ_TOKENS    4  /* per worker */
#define FUZZ_CBS       4  /* per worker */
#define FUZZ_TASKS     8  /* task handles kept per scope */
#define FUZZ_ENTER     6  /* nesting of tether_token_enter per worker */
#define FUZZ_ORDER     (FUZZ_MAX_STEPS * 2)

/* An invariant: print what broke and abort (libFuzzer saves the input). */
#define FUZZ_CHECK(cond, ...)                                         \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "fuzz_api: %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                             \
            fputc('\n', stderr);                                      \
            abort();                                                  \
        }                                                             \
    } while (0)

enum op {
    OP_SCOPE_OPEN,
    OP_SPAWN,
    OP_SPAWN2,
    OP_SCOPE_CANCEL,
    OP_SCOPE_END, /* join, or free (which joins if needed) */
    OP_TASK,      /* wait or halt */
    OP_TOKEN_NEW,
    OP_TOKEN_FREE,
    OP_TOKEN_CANCEL,
    OP_ENTER_LEAVE,
    OP_CALLBACK, /* register, or unregister */
    /* the rest: fuzz_misc_op */
    OP_SLEEP,
    OP_COND_WAIT,
    OP_COND_SIGNAL,
    OP_SEM_WAIT,
    OP_SEM_POST,
    OP_PIPE_READ,
    OP_PIPE_WRITE,
    OP_CHECK,
    OP_SIGCANCEL,
    OP_SHIELD,
    OP_RETRY,
    OP_SCOPE_RUN,
    OP_COUNT
};

/* What a child does; every blocking one is bounded by its spawn timeout. */
enum child_behaviour {
    CHILD_RETURN0,
    CHILD_FAIL,
    CHILD_SLEEP,
    CHILD_COND,
    CHILD_SEM,
    CHILD_PIPE,
    CHILD_SPAWN,  /* spawns a sleeping sibling into its own scope */
    CHILD_NESTED, /* opens, fills and joins a scope of its own */
    CHILD_BUSY,   /* polls tether_check until canceled */
    CHILD_WITH_TIMEOUT,
    CHILD_NBEHAVIOURS
};

struct child_arg {
    int slot; /* global scope slot */
    int behaviour;
    tether_scope *scope; /* set by the owner when it opens the slot's scope */
};

enum ref_kind { REF_NONE, REF_TOKEN, REF_SCOPE };
struct ref {
    int kind;
    int idx;
};

/* The user objects every thread shares. */
struct shared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int cond_waiters; /* under mu */
    sem_t sem;
    int pipe[2]; /* read end blocking, write end O_NONBLOCK */
};
extern struct shared g_shared;

void fuzz_shared_init(struct shared *sh);
/* Drain the pipe and the semaphore between inputs. */
void fuzz_shared_reset(struct shared *sh);
/* Run a child behaviour (not CHILD_SPAWN) under the current token. */
int fuzz_blocking(int behaviour);
/* The ops that touch only shared objects and the current token. */
void fuzz_misc_op(int op, unsigned char a);

/* fuzz_guard.c: the watchdog, and threads and descriptors back to baseline. */
struct fuzz_baseline {
    int threads, fds;
};
void fuzz_guard_init(void);
void fuzz_guard_begin(struct fuzz_baseline *b);
/* Aborts with a message if a thread or descriptor was left behind. */
void fuzz_guard_end(const struct fuzz_baseline *b);

#endif
