/*
 * shmcache.h: the shmcache channel's wire format and segment layout, in C.
 *
 * A second implementation of the protocol specified in src/ipc/mod.rs ("the spec") and
 * src/ipc/wire.rs ("wire"); each number below names the section it comes from.
 * tests/c_client.rs compiles a program that prints these numbers and compares them with
 * the Rust constants, so the two cannot drift apart.
 *
 * POSIX only. Define _POSIX_C_SOURCE 200809L (or more) before including it. Every integer
 * on the wire and in a segment is in native byte order: both ends run on one host.
 */
#ifndef SHMCACHE_H
#define SHMCACHE_H

#include <semaphore.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- Objects and names (spec, "Objects and names") ---------------------------------- */

/* The request queue: "/" NAME ".req". A segment: "/" NAME ".seg." <creator's pid> "."
 * <index>, created O_EXCL with mode 0600 by the asker, with its own pid: a proxy that
 * starts removes segments of its NAME whose pid is not running. */
#define SHMC_QUEUE_FORMAT "/%s.req"
#define SHMC_SEGMENT_FORMAT "/%s.seg.%ld.%u"
/* Instance names: 1 to 64 of [A-Za-z0-9_-]. */
#define SHMC_MAX_INSTANCE_NAME 64
/* The queue holds at most 10 messages of up to 8192 bytes (spec, "Objects and names";
 * wire, MESSAGE_CAPACITY). Send with priority 0. */
#define SHMC_QUEUE_DEPTH 10
#define SHMC_MESSAGE_CAPACITY 8192

/* ---- A message on the queue (wire, "A message on the queue") ------------------------- */

/* "SHMQ" read as a big-endian number, written in native order like every integer. */
#define SHMC_WIRE_MAGIC 0x53484D51u
#define SHMC_WIRE_VERSION 6
#define SHMC_MAX_KEY_LEN 4095
#define SHMC_MAX_TAGS 16

/* Op codes, in the order of the spec's Call. */
enum shmc_op {
    SHMC_OP_GET = 1,
    SHMC_OP_STORE = 2,
    SHMC_OP_RENEW = 3,
    SHMC_OP_PURGE = 4,
    SHMC_OP_STATS = 5,
};

/* GET flags (RENEW takes HEAD_ONLY only). No other bit may be set. */
#define SHMC_FLAG_ALLOW_STALE 1u
#define SHMC_FLAG_HEAD_ONLY 2u

/* Offsets of the fixed start of every message; the segment name (u8 length and bytes)
 * follows at SHMC_MSG_SEGMENT, then the op's own fields. */
#define SHMC_MSG_MAGIC 0
#define SHMC_MSG_VERSION 4
#define SHMC_MSG_OP 6
#define SHMC_MSG_GENERATION 7
#define SHMC_MSG_SEGMENT 15

/* ---- A head in the segment (wire, "A head in the segment") --------------------------- */

#define SHMC_HEAD_CAPACITY 256
#define SHMC_MAX_HEADER_BLOCK 16384
#define SHMC_ETAG_CAPACITY 128
#define SHMC_MAX_STATS_LEN (1u << 20)

enum shmc_head_kind {
    SHMC_HEAD_NONE = 0, /* nothing written since the transfer began */
    SHMC_HEAD_FOUND = 1,
    SHMC_HEAD_EXPIRED = 2,
    SHMC_HEAD_MISSING = 3,
    SHMC_HEAD_PURGED = 4,
    SHMC_HEAD_STATS = 5,
    SHMC_HEAD_FAILED = 6,
    SHMC_HEAD_STORE = 7, /* written by the proxy, for a STORE */
};

enum shmc_outcome {
    SHMC_OUTCOME_FULL = 1,
    SHMC_OUTCOME_PARTIAL = 2,
    SHMC_OUTCOME_NOT_MODIFIED = 3,
    SHMC_OUTCOME_UNSATISFIABLE = 4,
};

enum shmc_lifetime { SHMC_LIFETIME_MUST_VALIDATE = 1, SHMC_LIFETIME_SECONDS = 2 };
enum shmc_identity { SHMC_IDENTITY_FILE = 1, SHMC_IDENTITY_UNIQUE = 2 };

/* The part every head begins with: kind u8, generation u64, pid u32, header_len u32,
 * body_len u64; packed, no padding (so read it with memcpy, never through a struct). */
#define SHMC_HEAD_KIND 0
#define SHMC_HEAD_GENERATION 1
#define SHMC_HEAD_PID 9
#define SHMC_HEAD_HEADER_LEN 13
#define SHMC_HEAD_BODY_LEN 17
#define SHMC_HEAD_PREFIX_LEN 25

/* ---- A segment (spec, "A segment"; src/ipc/segment.rs) ------------------------------- */

/* "SHMS" read as a big-endian number. */
#define SHMC_SEGMENT_MAGIC 0x53484D53u
#define SHMC_SEGMENT_VERSION 7
#define SHMC_MIN_SLOT_CAPACITY 64

/* The fixed start of a segment. Naturally aligned, so the compiler lays it out as the
 * Rust repr(C) struct does; the static asserts below hold it to the spec's offsets. The
 * semaphores are process-shared (sem_init(&sem, 1, value)) and live here, in place. */
struct shmc_segment_header {
    _Atomic uint32_t magic;     /* written last, with release, by the creator */
    _Atomic uint32_t version;
    _Atomic uint32_t slots;
    _Atomic uint32_t cancelled; /* set to 1 by the asker when it abandons a transfer */
    _Atomic uint64_t slot_capacity;
    _Atomic uint64_t generation;
    sem_t ready;                /* slots holding data: posted by the writer */
    sem_t free_slots;           /* empty slots: starts at `slots`, posted by the reader */
    unsigned char head[SHMC_HEAD_CAPACITY];
};

#define SHMC_OFF_MAGIC 0
#define SHMC_OFF_VERSION 4
#define SHMC_OFF_SLOTS 8
#define SHMC_OFF_CANCELLED 12
#define SHMC_OFF_SLOT_CAPACITY 16
#define SHMC_OFF_GENERATION 24
#define SHMC_OFF_READY 32
#define SHMC_OFF_FREE 64
#define SHMC_OFF_HEAD 96
#define SHMC_HEADER_SIZE 352
/* The slot-length table (one u64 per slot) starts at SHMC_HEADER_SIZE; the data area at
 * the next multiple of 64 after it. */
#define SHMC_DATA_ALIGN 64

_Static_assert(sizeof(sem_t) == 32, "sem_t is 32 bytes on the platform the spec describes");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "64-bit atomics are plain 8-byte words");
_Static_assert(offsetof(struct shmc_segment_header, magic) == SHMC_OFF_MAGIC, "magic");
_Static_assert(offsetof(struct shmc_segment_header, version) == SHMC_OFF_VERSION, "version");
_Static_assert(offsetof(struct shmc_segment_header, slots) == SHMC_OFF_SLOTS, "slots");
_Static_assert(offsetof(struct shmc_segment_header, cancelled) == SHMC_OFF_CANCELLED,
               "cancelled");
_Static_assert(offsetof(struct shmc_segment_header, slot_capacity) == SHMC_OFF_SLOT_CAPACITY,
               "slot_capacity");
_Static_assert(offsetof(struct shmc_segment_header, generation) == SHMC_OFF_GENERATION,
               "generation");
_Static_assert(offsetof(struct shmc_segment_header, ready) == SHMC_OFF_READY, "ready");
_Static_assert(offsetof(struct shmc_segment_header, free_slots) == SHMC_OFF_FREE, "free");
_Static_assert(offsetof(struct shmc_segment_header, head) == SHMC_OFF_HEAD, "head");
_Static_assert(sizeof(struct shmc_segment_header) == SHMC_HEADER_SIZE, "header size");

/* The slot arithmetic (spec, "A segment"; "One transfer"): chunk j of a stream travels in
 * slot j % slots. */
static inline size_t shmc_data_offset(size_t slots)
{
    size_t end = SHMC_HEADER_SIZE + 8 * slots;
    return (end + SHMC_DATA_ALIGN - 1) / SHMC_DATA_ALIGN * SHMC_DATA_ALIGN;
}

static inline size_t shmc_slot_capacity(size_t segment_size, size_t slots)
{
    size_t data = shmc_data_offset(slots);
    return slots == 0 || segment_size < data ? 0 : (segment_size - data) / slots;
}

static inline size_t shmc_min_segment_size(size_t slots)
{
    return shmc_data_offset(slots) + slots * SHMC_MIN_SLOT_CAPACITY;
}

static inline _Atomic uint64_t *shmc_slot_len(void *segment, size_t slot)
{
    return (_Atomic uint64_t *)((unsigned char *)segment + SHMC_HEADER_SIZE + 8 * slot);
}

static inline unsigned char *shmc_slot(void *segment, size_t slots, size_t capacity,
                                       size_t slot)
{
    return (unsigned char *)segment + shmc_data_offset(slots) + slot * capacity;
}

/* ---- Encoding a GET (wire, "A message on the queue") --------------------------------- */

static inline size_t shmc_put(unsigned char *out, size_t at, const void *field, size_t n)
{
    memcpy(out + at, field, n);
    return at + n;
}

/* Encodes a GET of `key` for the transfer numbered `generation` through `segment`, with
 * `flags` and no conditions (four zero tags), into `out` (SHMC_MESSAGE_CAPACITY bytes).
 * Returns its length, or 0 when a name or the key cannot be encoded (too long, empty, a
 * key without its leading '/'). */
static inline size_t shmc_encode_get(unsigned char *out, uint64_t generation,
                                     const char *segment, const char *key, uint8_t flags)
{
    size_t seg_len = strlen(segment);
    size_t key_len = strlen(key);
    if (seg_len > 255 || key_len == 0 || key_len > SHMC_MAX_KEY_LEN || key[0] != '/' ||
        generation == 0)
        return 0;
    uint32_t magic = SHMC_WIRE_MAGIC;
    uint16_t version = SHMC_WIRE_VERSION;
    uint8_t op = SHMC_OP_GET;
    uint8_t seg8 = (uint8_t)seg_len;
    uint16_t key16 = (uint16_t)key_len;
    static const unsigned char no_conditions[4] = {0, 0, 0, 0};
    size_t at = 0;
    at = shmc_put(out, at, &magic, 4);
    at = shmc_put(out, at, &version, 2);
    at = shmc_put(out, at, &op, 1);
    at = shmc_put(out, at, &generation, 8);
    at = shmc_put(out, at, &seg8, 1);
    at = shmc_put(out, at, segment, seg_len);
    at = shmc_put(out, at, &key16, 2);
    at = shmc_put(out, at, key, key_len);
    at = shmc_put(out, at, &flags, 1);
    at = shmc_put(out, at, no_conditions, sizeof no_conditions);
    return at;
}

/* ---- Decoding a head (wire, "A head in the segment") --------------------------------- */

/* A head the cache wrote, decoded. Fields a kind does not carry are zero. */
struct shmc_head {
    uint8_t kind;
    uint64_t generation;
    uint32_t pid;
    uint32_t header_len; /* the stream: header_len bytes of header block... */
    uint64_t body_len;   /* ...then body_len body bytes */
    /* meta (Found, Expired) */
    uint16_t status;
    uint64_t total_len;
    int has_modified;
    uint64_t modified;
    uint8_t etag_len;
    char etag[SHMC_ETAG_CAPACITY + 1];
    uint64_t stored_at;
    uint8_t lifetime;       /* enum shmc_lifetime */
    uint64_t lifetime_secs; /* SHMC_LIFETIME_SECONDS only */
    uint8_t identity;       /* enum shmc_identity */
    uint64_t identity_value;
    /* Found */
    uint8_t outcome; /* enum shmc_outcome */
    uint64_t range_start, range_len;
    /* Expired, Missing: the largest body a STORE may bring, if any */
    int has_accept;
    uint64_t accept_len;
    /* Purged */
    uint8_t existed;
};

struct shmc_reader {
    const unsigned char *at;
    size_t left;
};

static inline int shmc_take(struct shmc_reader *r, void *field, size_t n)
{
    if (r->left < n)
        return -1;
    memcpy(field, r->at, n);
    r->at += n;
    r->left -= n;
    return 0;
}

/* A u8 tag, then a u64 when the tag is `present`; any tag other than 0 and `present` is
 * refused. */
static inline int shmc_take_tagged(struct shmc_reader *r, uint8_t present, uint8_t *tag,
                                   uint64_t *value)
{
    if (shmc_take(r, tag, 1) < 0)
        return -1;
    if (*tag == present)
        return shmc_take(r, value, 8);
    return *tag == 0 ? 0 : -1;
}

static inline int shmc_take_meta(struct shmc_reader *r, struct shmc_head *h)
{
    uint8_t tag;
    if (shmc_take(r, &h->status, 2) < 0 || h->status < 100 || h->status > 999)
        return -1;
    if (shmc_take(r, &h->total_len, 8) < 0)
        return -1;
    if (shmc_take_tagged(r, 1, &tag, &h->modified) < 0)
        return -1;
    h->has_modified = tag == 1;
    if (shmc_take(r, &h->etag_len, 1) < 0 || h->etag_len > SHMC_ETAG_CAPACITY ||
        shmc_take(r, h->etag, h->etag_len) < 0)
        return -1;
    for (uint8_t i = 0; i < h->etag_len; i++)
        if (h->etag[i] < 0x21 || h->etag[i] > 0x7e)
            return -1;
    h->etag[h->etag_len] = '\0';
    if (shmc_take(r, &h->stored_at, 8) < 0 || shmc_take(r, &h->lifetime, 1) < 0)
        return -1;
    if (h->lifetime == SHMC_LIFETIME_SECONDS) {
        if (shmc_take(r, &h->lifetime_secs, 8) < 0 || h->lifetime_secs == 0)
            return -1;
    } else if (h->lifetime != SHMC_LIFETIME_MUST_VALIDATE) {
        return -1;
    }
    if (shmc_take(r, &h->identity, 1) < 0 ||
        (h->identity != SHMC_IDENTITY_FILE && h->identity != SHMC_IDENTITY_UNIQUE))
        return -1;
    return shmc_take(r, &h->identity_value, 8);
}

/* Decodes the head area `area` (SHMC_HEAD_CAPACITY bytes, copied out of the segment) as
 * the cache's answer, with every check the spec asks of a reader. Returns 0 and fills
 * `h`, or -1 and points `*why` at the rule the bytes broke. A kind of 0 (no head yet) or
 * 7 (a STORE's head) is refused here: neither is an answer. */
static inline int shmc_decode_head(const unsigned char *area, struct shmc_head *h,
                                   const char **why)
{
    struct shmc_reader r = {area, SHMC_HEAD_CAPACITY};
    memset(h, 0, sizeof *h);
    *why = "head shorter than its fields";
    if (shmc_take(&r, &h->kind, 1) < 0 || shmc_take(&r, &h->generation, 8) < 0 ||
        shmc_take(&r, &h->pid, 4) < 0 || shmc_take(&r, &h->header_len, 4) < 0 ||
        shmc_take(&r, &h->body_len, 8) < 0)
        return -1;
    if (h->header_len > SHMC_MAX_HEADER_BLOCK) {
        *why = "header block too long";
        return -1;
    }
    int empty = h->header_len == 0 && h->body_len == 0;
    uint8_t tag;
    switch (h->kind) {
    case SHMC_HEAD_FOUND: {
        *why = "malformed meta";
        if (shmc_take_meta(&r, h) < 0)
            return -1;
        *why = "malformed outcome";
        if (shmc_take(&r, &h->outcome, 1) < 0)
            return -1;
        uint64_t sends = 0;
        switch (h->outcome) {
        case SHMC_OUTCOME_FULL:
            sends = h->total_len;
            break;
        case SHMC_OUTCOME_PARTIAL:
            if (shmc_take(&r, &h->range_start, 8) < 0 || shmc_take(&r, &h->range_len, 8) < 0)
                return -1;
            if (h->range_len == 0 || h->range_start > h->total_len ||
                h->range_len > h->total_len - h->range_start) {
                *why = "range outside the object";
                return -1;
            }
            sends = h->range_len;
            break;
        case SHMC_OUTCOME_NOT_MODIFIED:
        case SHMC_OUTCOME_UNSATISFIABLE:
            break;
        default:
            return -1;
        }
        if (h->body_len != 0 && h->body_len != sends) {
            *why = "a body the outcome does not send";
            return -1;
        }
        return 0;
    }
    case SHMC_HEAD_EXPIRED:
        *why = "malformed expired head";
        if (h->body_len != 0 || shmc_take_meta(&r, h) < 0 ||
            shmc_take_tagged(&r, 1, &tag, &h->accept_len) < 0)
            return -1;
        h->has_accept = tag == 1;
        return 0;
    case SHMC_HEAD_MISSING:
        *why = "malformed missing head";
        if (!empty || shmc_take_tagged(&r, 1, &tag, &h->accept_len) < 0)
            return -1;
        h->has_accept = tag == 1;
        return 0;
    case SHMC_HEAD_PURGED:
        *why = "malformed purged head";
        return !empty || shmc_take(&r, &h->existed, 1) < 0 || h->existed > 1 ? -1 : 0;
    case SHMC_HEAD_STATS:
        *why = "stats of a length that cannot be right";
        return h->header_len != 0 || h->body_len > SHMC_MAX_STATS_LEN ? -1 : 0;
    case SHMC_HEAD_FAILED:
        *why = "a stream after a failed head";
        return empty ? 0 : -1;
    case SHMC_HEAD_NONE:
        *why = "no head before the first chunk";
        return -1;
    default:
        *why = "unknown head kind";
        return -1;
    }
}

#endif /* SHMCACHE_H */
