/*
 * tether/shield.h — shielded regions: clean-up that must still do blocking
 * I/O after its thread was canceled.
 */
#ifndef TETHER_SHIELD_H
#define TETHER_SHIELD_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A region in which cancellation from outside is deferred (tether_shield_enter). */
typedef struct tether_shield tether_shield;

/*
 * tether_shield_enter — start a shielded region on the calling thread.
 *
 * Until tether_shield_leave, cancellation of the tokens entered before (and
 * their deadlines, and the process root's inherited deadline, see
 * <tether/core.h>) is deferred, so clean-up can still do blocking I/O. The
 * region has its own deadline to keep that clean-up bounded, and its own
 * token (tether_shield_token): scopes opened and tokens created inside
 * descend from it, so cancellations that start inside the shield still
 * apply. After leaving, a cancellation that arrived meanwhile is seen by the
 * next cancellation point (cancellation is sticky).
 *
 * Parameters:
 *  out       receives the handle.
 *  deadline  absolute; TETHER_NEVER for an unbounded region (avoid).
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  out is NULL.
 *  ENOMEM  out of memory.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: The shield belongs to the calling thread: leave it on the
 * same thread, innermost first.
 * Ownership: The caller ends the handle with tether_shield_leave.
 */
TETHER_API int tether_shield_enter(tether_shield **out, tether_time_t deadline);

/*
 * tether_shield_token — a shield's token.
 *
 * It is the calling thread's current token while the shield is innermost:
 * cancel it to end the region's work early.
 *
 * Parameters:
 *  s  the shield.
 * Returns: The token, or NULL for a NULL shield.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe (the token may be canceled from any thread).
 * Ownership: The token belongs to the shield; valid until
 * tether_shield_leave.
 */
TETHER_API tether_token *tether_shield_token(tether_shield *s);

/*
 * tether_shield_leave — end a shielded region and free its handle.
 *
 * Parameters:
 *  s  the shield.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  s is NULL.
 *  EPERM   s is not the calling thread's innermost entry (a token entered
 *          inside the region was not left): nothing changes.
 *  EBUSY   a token or scope created inside the region still lives: nothing
 *          changes.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Call it on the thread that entered the shield.
 * Ownership: Ends the handle once 0 is returned.
 */
TETHER_API int tether_shield_leave(tether_shield *s);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_SHIELD_H */
