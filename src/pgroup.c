/*
 * Whether a process group still has live members: the one question the
 * termination of a child's process tree (process.c) cannot ask the kernel
 * directly. kill(-pgid, 0) also succeeds for the unreaped direct child,
 * which tether keeps unreaped on purpose until the group is dealt with (so
 * its pid, the group's id, cannot be reused); and a pidfd exists only for
 * the direct child. So the group's members are found in /proc: the state
 * and process group fields of every /proc/<pid>/stat. It runs only while a
 * canceled child's tree is being terminated, every few milliseconds of the
 * grace period.
 */
#define _GNU_SOURCE
#include "sys.h"

#include <stdio.h>
#include <string.h>

/* From /proc/<pid>/stat: whether the process is in `pgid` and not a zombie
 * (or dead). A process that vanished meanwhile is not a member. */
static bool live_member(int proc, const char *pid, pid_t pgid)
{
    char path[32], buf[512];
    snprintf(path, sizeof path, "%s/stat", pid);
    if (tether__sys_read_at(proc, path, buf, sizeof buf) <= 0)
        return false;
    /* "pid (comm) S ppid pgrp ...": comm may hold spaces and parentheses,
     * so the fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || !p[2] || p[3] != ' ')
        return false;
    char state = p[2];
    char *end;
    (void)strtol(p + 4, &end, 10); /* ppid */
    if (end == p + 4 || *end != ' ')
        return false;
    long pgrp = strtol(end + 1, &end, 10);
    if (*end != ' ')
        return false;
    return pgrp == pgid && state != 'Z' && state != 'X' && state != 'x';
}

bool tether__pgroup_alive(pid_t pgid, pid_t except)
{
    int dir = tether__sys_open_read("/proc");
    if (dir < 0)
        return true;
    char ex[16];
    snprintf(ex, sizeof ex, "%d", (int)except);
    bool found = false;
    _Alignas(8) char buf[4096];
    ssize_t n = 0;
    while (!found && (n = tether__sys_getdents64(dir, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n && !found;) {
            /* struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name */
            unsigned short reclen;
            memcpy(&reclen, buf + off + 16, sizeof reclen);
            const char *name = buf + off + 19;
            off += reclen;
            if (name[0] < '1' || name[0] > '9' || strcmp(name, ex) == 0)
                continue;
            found = live_member(dir, name, pgid);
        }
    }
    if (n < 0)
        found = true; /* unreadable: assume the worst */
    tether__sys_close(dir);
    return found;
}
