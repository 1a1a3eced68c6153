/*
 * Linked into the ThreadSanitizer build of tests/c/stress.c only (tools/tsan-c-stress.sh),
 * compiled WITHOUT -fsanitize=thread.
 *
 * libllq is instrumented, but Rust's std is not (it comes precompiled: no rust-src, no
 * -Zbuild-std). std's Mutex, Condvar, Once and thread parking are built on atomics in that
 * uninstrumented code plus the futex system call, so TSan sees none of their
 * synchronization: a 4-thread x 2-round run of stress.c gave 746 reports without this
 * file and 41 with it (mostly the compute pool's results read by the calling thread
 * after rayon's LockLatch woke it; globals initialized under std::sync::Once).
 *
 * std makes every futex call through libc's syscall(). This definition takes precedence
 * over libc's for libllq (the executable is linked with -rdynamic) and tells TSan what a
 * futex means: FUTEX_WAKE releases the futex word, a return from FUTEX_WAIT acquires it.
 * So whatever a thread did before waking a sleeper happens-before what the sleeper does
 * after it wakes; this is the ordering the kernel guarantees, no more. What remains
 * invisible (std's atomics that complete without a sleep: a Once finished with nobody
 * waiting, a Condvar::wait re-locking its mutex without contention) is named, rule by
 * rule, in tools/tsan.supp.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <sys/syscall.h>

void __tsan_acquire(void *addr);
void __tsan_release(void *addr);

typedef long (*syscall_fn)(long, ...);

long syscall(long number, ...) {
    static syscall_fn real;
    syscall_fn f = __atomic_load_n(&real, __ATOMIC_ACQUIRE);
    if (!f) {
        f = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
        __atomic_store_n(&real, f, __ATOMIC_RELEASE);
    }
    /* syscall() takes at most six arguments after the number; reading unused ones is
     * harmless on x86-64 (they come from the register save area). */
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (number != SYS_futex) return f(number, a[0], a[1], a[2], a[3], a[4], a[5]);
    void *word = (void *)a[0];
    int op = (int)a[1] & FUTEX_CMD_MASK;
    if (op == FUTEX_WAKE || op == FUTEX_WAKE_BITSET) __tsan_release(word);
    long r = f(number, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (op == FUTEX_WAIT || op == FUTEX_WAIT_BITSET) __tsan_acquire(word);
    return r;
}
