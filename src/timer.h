/*
 * The timer thread: one per process, started on the first armed deadline,
 * that cancels a token at its own deadline whether or not anyone waits
 * under it (cause deadline, callbacks run on the timer thread).
 *
 * Only tokens that own their deadline (t->deadline_owner == t) are armed: a
 * descendant inherits its owner's deadline and is canceled with it. Waiters
 * still enforce deadlines themselves (token.c), so a deadline is never late
 * because the timer thread could not be started.
 *
 * Lock order: the tree lock (token.c), then the timer lock (timer.c). The
 * timer thread holds neither while it sleeps, and never holds the timer lock
 * while taking the tree lock: it cancels through tether__token_expire_timer,
 * which asks tether__timer_claim under the tree lock whether the token is
 * still armed, so a token freed meanwhile is never touched.
 */
#ifndef TETHER__TIMER_H
#define TETHER__TIMER_H

#include "token.h"

/* Arm t's own deadline. Tree lock held; t owns its deadline and is not
 * armed. 0, or ENOMEM. Call tether__timer_kick once the tree lock is
 * dropped. */
TETHER_HIDDEN int tether__timer_arm(tether_token *t);
/* t is being freed: disarm it (a no-op if it is not armed); a fire of t
 * the timer thread has picked but not claimed becomes a no-op. Tree lock
 * held. Never blocks. */
TETHER_HIDDEN void tether__timer_disarm(tether_token *t);
/* Whether the timer thread's pending fire of t still stands; if so t is
 * disarmed. Tree lock held, called by the timer thread only. */
TETHER_HIDDEN bool tether__timer_claim(tether_token *t);
/* Start the timer thread, or wake it for an earlier deadline, if an arm (or
 * a fork) asked for it; one relaxed load otherwise. Hold no tether lock. */
TETHER_HIDDEN void tether__timer_kick(void);
/* Stop the timer thread and free its heap if no deadline is armed
 * (tether_trim); waits for the thread to exit. Hold no tether lock. */
TETHER_HIDDEN void tether__timer_stop_idle(void);
/* The timer's part of the fork handlers: take its lock (prepare), release
 * it (parent); in the child, forget the thread (it stayed in the parent)
 * and start a new one at the next kick if deadlines are armed. */
TETHER_HIDDEN void tether__timer_fork_prepare(void);
TETHER_HIDDEN void tether__timer_fork_parent(void);
TETHER_HIDDEN void tether__timer_fork_child(void);

/* token.c: the timer thread's cancel of t with cause deadline, if t is
 * still armed (tether__timer_claim); may run callbacks. */
TETHER_HIDDEN void tether__token_expire_timer(tether_token *t);

#endif /* TETHER__TIMER_H */
