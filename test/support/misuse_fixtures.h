/*
 * Fixtures shared by test_misuse.c and test_scope_misuse.c.
 *
 * The misuse catalogue (docs/misuse.md), one test per row: every misuse that
 * tether detects returns the error the header documents, changes nothing it
 * promises not to change, and leaves no thread or fd behind. Misuses that
 * tether cannot report by returning (a child returning with a token still
 * entered, ...) must fail loudly: those tests expect SIGABRT.
 *
 * Threads hand off through semaphores; a thread is canceled or raced only
 * after th_wait_blocked says it is asleep in the kernel.
 */

#ifndef TETHER_TEST_MISUSE_FIXTURES_H
#define TETHER_TEST_MISUSE_FIXTURES_H

#include "support.h"
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#endif
