/*
 * shmget: asks a running shmcached for one key and prints its body to stdout.
 *
 *     shmget [--name NAME] [--timeout SECONDS] [--segment-size BYTES] [--slots N] KEY
 *
 * It does what webproxy's worker does for a GET (src/ipc/client.rs), from the spec alone
 * (src/ipc/mod.rs, src/ipc/wire.rs; the numbers are in shmcache.h):
 *   1. open the request queue /NAME.req (the cache created it);
 *   2. create its own segment /NAME.seg.<pid>.0 (O_EXCL, 0600), initialise the header and
 *      the two process-shared semaphores, and write the magic last;
 *   3. start a transfer: no head, not cancelled, a new generation (never 0);
 *   4. send one GET naming the segment and the generation;
 *   5. wait on `ready` for the head, check it and its generation, then take the stream
 *      chunk by chunk (chunk j in slot j % slots), checking each chunk's length, posting
 *      `free` after each, the last one only once the whole stream is read;
 *   6. unlink its segment, on every way out.
 * Every wait is bounded by --timeout, in slices of 50 ms, between which it looks for a
 * signal and, once the head named the cache's pid, for the cache having exited.
 *
 * Exit status: 0 the key was found (its body is on stdout), 1 the cache does not hold
 * it, 2 anything else, with a message on stderr naming what failed.
 *
 * Build: cc -std=c11 -O2 -Wall -Wextra -Werror -pthread -Iexamples/c \
 *            examples/c/shmget.c -lrt
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shmcache.h"

enum { FOUND = 0, MISSING = 1, FAILED = 2 };

/* How long one slice of a wait lasts: the longest a signal or a dead cache goes unseen. */
#define SLICE_NS 50000000L

/* Set by the signal handler; every wait looks at it between slices. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

/* What there is to clean up, whatever way the program leaves. */
static struct {
    char name[300];
    void *base;
    size_t size;
    int created;
    int transferring; /* a GET went out and its transfer is not over */
} seg;

static const char *key_arg;

/* Undoes what was set up: a transfer still in flight is cancelled first, as the proxy
 * does (the cancelled flag, then one post of each semaphore to wake a cache worker
 * blocked on either), so the cache worker stops at its next chunk instead of waiting out
 * its timeout; then the segment is unmapped and its name removed. */
static void cleanup(void)
{
    if (seg.base != NULL) {
        struct shmc_segment_header *h = seg.base;
        if (seg.transferring) {
            atomic_store_explicit(&h->cancelled, 1, memory_order_release);
            sem_post(&h->free_slots);
            sem_post(&h->ready);
        }
        munmap(seg.base, seg.size);
        seg.base = NULL;
    }
    if (seg.created) {
        shm_unlink(seg.name);
        seg.created = 0;
    }
}

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("shmget: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    cleanup();
    return FAILED;
}

/* A deadline `seconds` from now on CLOCK_REALTIME, the clock sem_timedwait and
 * mq_timedsend take. */
static struct timespec deadline_after(double seconds)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    long long ns = (long long)t.tv_nsec + (long long)(seconds * 1e9);
    t.tv_sec += (time_t)(ns / 1000000000LL);
    t.tv_nsec = (long)(ns % 1000000000LL);
    return t;
}

/* The earlier of `deadline` and one slice from now. */
static struct timespec next_slice(struct timespec deadline)
{
    struct timespec t = deadline_after(SLICE_NS / 1e9);
    if (t.tv_sec > deadline.tv_sec ||
        (t.tv_sec == deadline.tv_sec && t.tv_nsec > deadline.tv_nsec))
        return deadline;
    return t;
}

static int passed(struct timespec deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return now.tv_sec > deadline.tv_sec ||
           (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec);
}

enum wait_result { TAKEN, TIMED_OUT, SIGNALLED, CACHE_GONE, WAIT_ERROR };

/* Takes one unit of `sem` within `timeout` seconds, in slices: between them it looks for
 * a signal and, when `cache_pid` is known (not 0), whether that process still exists. */
static enum wait_result wait_sem(sem_t *sem, double timeout, pid_t cache_pid)
{
    struct timespec deadline = deadline_after(timeout);
    for (;;) {
        if (stop_signal)
            return SIGNALLED;
        struct timespec slice = next_slice(deadline);
        if (sem_timedwait(sem, &slice) == 0)
            return TAKEN;
        if (errno == EINTR)
            continue; /* a signal: the loop looks at the flag */
        if (errno != ETIMEDOUT)
            return WAIT_ERROR;
        if (cache_pid != 0 && kill(cache_pid, 0) == -1 && errno == ESRCH)
            return CACHE_GONE;
        if (passed(deadline))
            return TIMED_OUT;
    }
}

static int wait_failed(enum wait_result r, const char *what, double timeout, pid_t pid)
{
    switch (r) {
    case SIGNALLED:
        return fail("interrupted by signal %d while waiting for %s", (int)stop_signal, what);
    case TIMED_OUT:
        return fail("the cache did not send %s of %s within %g s (segment %s)", what,
                    key_arg, timeout, seg.name);
    case CACHE_GONE:
        return fail("the cache (pid %ld) exited before it sent %s", (long)pid, what);
    default:
        return fail("sem_timedwait on %s's semaphore for %s: %s", seg.name, what,
                    strerror(errno));
    }
}

/* Writes all of `buf` to stdout. */
static int write_out(const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, buf, len);
        if (n < 0 && errno == EINTR && !stop_signal)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int valid_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > SHMC_MAX_INSTANCE_NAME)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

static int usage(void)
{
    fputs("usage: shmget [--name NAME] [--timeout SECONDS] [--segment-size BYTES] "
          "[--slots N] KEY\n",
          stderr);
    return FAILED;
}

int main(int argc, char **argv)
{
    const char *name = "shmcache";
    double timeout = 5;
    size_t size = 256 * 1024, slots = 4;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (strcmp(arg, "--name") == 0 && value) {
            name = value;
        } else if (strcmp(arg, "--timeout") == 0 && value) {
            timeout = strtod(value, &end);
            if (*end != '\0' || !(timeout > 0 && timeout < 86400))
                return usage();
        } else if (strcmp(arg, "--segment-size") == 0 && value) {
            size = (size_t)strtoull(value, &end, 10);
            if (*end != '\0')
                return usage();
        } else if (strcmp(arg, "--slots") == 0 && value) {
            slots = (size_t)strtoull(value, &end, 10);
            if (*end != '\0' || slots == 0 || slots > 1024)
                return usage();
        } else if (key_arg == NULL && arg[0] != '-') {
            key_arg = arg;
            continue;
        } else {
            return usage();
        }
        i++;
    }
    if (key_arg == NULL)
        return usage();
    if (!valid_name(name))
        return fail("instance name \"%s\" must be 1 to %d characters of A-Z, a-z, 0-9, _ and -",
                    name, SHMC_MAX_INSTANCE_NAME);
    if (key_arg[0] != '/' || strlen(key_arg) > SHMC_MAX_KEY_LEN)
        return fail("key \"%s\" must start with '/' and be at most %d bytes", key_arg,
                    SHMC_MAX_KEY_LEN);
    if (size < shmc_min_segment_size(slots))
        return fail("a segment of %zu bytes cannot hold %zu slots (minimum %zu bytes)", size,
                    slots, shmc_min_segment_size(slots));

    /* Signals end the waits, not the process: without SA_RESTART, a blocked
     * sem_timedwait or mq_timedsend returns EINTR, and the slices catch the rest. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    /* A closed stdout is an error to report (EPIPE), not a death without cleanup. */
    signal(SIGPIPE, SIG_IGN);

    /* 1. The queue. */
    char queue[300];
    snprintf(queue, sizeof queue, SHMC_QUEUE_FORMAT, name);
    mqd_t mq = mq_open(queue, O_WRONLY);
    if (mq == (mqd_t)-1)
        return fail("no cache serves %s: mq_open %s: %s", name, queue, strerror(errno));

    /* 2. The segment, under our own pid, so a proxy of this NAME that starts while we
     * run leaves it alone, and removes it if we die before we unlink it. */
    snprintf(seg.name, sizeof seg.name, SHMC_SEGMENT_FORMAT, name, (long)getpid(), 0u);
    int fd = shm_open(seg.name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return fail("shm_open %s: %s", seg.name, strerror(errno));
    seg.created = 1;
    if (ftruncate(fd, (off_t)size) < 0) {
        close(fd);
        return fail("ftruncate %s to %zu bytes: %s", seg.name, size, strerror(errno));
    }
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED)
        return fail("mmap %s: %s", seg.name, strerror(errno));
    seg.base = base;
    seg.size = size;
    struct shmc_segment_header *h = base;
    size_t capacity = shmc_slot_capacity(size, slots);
    /* The semaphores first, the magic last (with release): the cache refuses a segment
     * without its magic, so it never touches a semaphore sem_init is still setting up. */
    if (sem_init(&h->ready, 1, 0) < 0 || sem_init(&h->free_slots, 1, (unsigned)slots) < 0)
        return fail("sem_init in %s: %s", seg.name, strerror(errno));
    atomic_store_explicit(&h->version, SHMC_SEGMENT_VERSION, memory_order_relaxed);
    atomic_store_explicit(&h->slots, (uint32_t)slots, memory_order_relaxed);
    atomic_store_explicit(&h->slot_capacity, capacity, memory_order_relaxed);
    atomic_store_explicit(&h->magic, SHMC_SEGMENT_MAGIC, memory_order_release);

    /* 3. A transfer: no head yet, not cancelled, then the generation (never 0), last. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t generation = ((uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec) | 1u;
    h->head[0] = SHMC_HEAD_NONE;
    atomic_store_explicit(&h->cancelled, 0, memory_order_release);
    atomic_store_explicit(&h->generation, generation, memory_order_release);

    /* 4. The GET. allow_stale: print what the cache holds, fresh or not. */
    unsigned char message[SHMC_MESSAGE_CAPACITY];
    size_t len = shmc_encode_get(message, generation, seg.name, key_arg, SHMC_FLAG_ALLOW_STALE);
    if (len == 0)
        return fail("cannot encode a GET of %s", key_arg);
    struct timespec deadline = deadline_after(timeout);
    for (;;) {
        if (stop_signal)
            return fail("interrupted by signal %d while sending to %s", (int)stop_signal,
                        queue);
        struct timespec slice = next_slice(deadline);
        if (mq_timedsend(mq, (const char *)message, len, 0, &slice) == 0)
            break;
        if (errno == EINTR || (errno == ETIMEDOUT && !passed(deadline)))
            continue;
        if (errno == ETIMEDOUT)
            return fail("%s stayed full for %g s: the cache is not reading", queue, timeout);
        return fail("mq_timedsend to %s: %s", queue, strerror(errno));
    }
    mq_close(mq);
    seg.transferring = 1;

    /* 5. The head, published by the first `ready`. Until it names the cache's pid, a
     * wait cannot tell a dead cache from a slow one. */
    enum wait_result r = wait_sem(&h->ready, timeout, 0);
    if (r != TAKEN)
        return wait_failed(r, "the head", timeout, 0);
    unsigned char area[SHMC_HEAD_CAPACITY];
    memcpy(area, h->head, sizeof area);
    struct shmc_head head;
    const char *why;
    if (shmc_decode_head(area, &head, &why) < 0)
        return fail("the cache's head for %s is malformed: %s", key_arg, why);
    if (head.generation != generation)
        return fail("the head in %s is for generation %llu, not ours (%llu)", seg.name,
                    (unsigned long long)head.generation, (unsigned long long)generation);
    int status;
    switch (head.kind) {
    case SHMC_HEAD_FOUND:
        if (head.outcome != SHMC_OUTCOME_FULL || head.body_len != head.total_len)
            return fail("the cache answered %s with outcome %d, not the whole body", key_arg,
                        head.outcome);
        status = FOUND;
        break;
    case SHMC_HEAD_MISSING:
        status = MISSING;
        break;
    case SHMC_HEAD_FAILED:
        return fail("the cache failed to serve %s", key_arg);
    default:
        return fail("the cache answered a GET of %s with a head of kind %d", key_arg,
                    head.kind);
    }

    /* The stream: the header block (skipped), then the body (to stdout). We hold the
     * first chunk's slot since the `ready` that published the head. */
    pid_t cache = (pid_t)head.pid;
    uint64_t skip = head.header_len;
    uint64_t remaining = skip + head.body_len;
    for (uint64_t chunk = 0;; chunk++) {
        size_t slot = (size_t)(chunk % slots);
        uint64_t n = atomic_load_explicit(shmc_slot_len(base, slot), memory_order_acquire);
        /* Only the single chunk of an empty stream may be empty: otherwise a faulty
         * writer could keep us spinning on empty chunks. */
        if (n > capacity || n > remaining || (n == 0 && remaining != 0))
            return fail("chunk %llu of %s has length %llu (slot capacity %zu, %llu bytes left)",
                        (unsigned long long)chunk, key_arg, (unsigned long long)n, capacity,
                        (unsigned long long)remaining);
        const unsigned char *bytes = shmc_slot(base, slots, capacity, slot);
        uint64_t headers = n < skip ? n : skip;
        skip -= headers;
        if (write_out(bytes + headers, (size_t)(n - headers)) < 0)
            return fail("writing %s to stdout: %s", key_arg, strerror(errno));
        remaining -= n;
        /* Give the slot back: the writer may fill it again. After the last chunk this
         * leaves the semaphores at rest (ready 0, free = slots): the transfer is over. */
        if (sem_post(&h->free_slots) < 0)
            return fail("sem_post in %s: %s", seg.name, strerror(errno));
        if (remaining == 0)
            break;
        r = wait_sem(&h->ready, timeout, cache);
        if (r != TAKEN)
            return wait_failed(r, "the next chunk", timeout, cache);
    }
    seg.transferring = 0;

    /* 6. */
    cleanup();
    if (status == MISSING)
        fprintf(stderr, "shmget: %s is not in the cache of %s\n", key_arg, name);
    return status;
}
