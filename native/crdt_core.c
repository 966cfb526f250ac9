/* Mycelium CRDT core, freestanding C for wasm32.
 *
 * Implements exactly the rules of agent/core/reference.py over the same bytes
 * (docs/FORMAT.md "Core batch", docs/SEMANTICS.md). No libc: memory comes from
 * a bump allocator over linear memory, reset at every call. ABI: README.md.
 *
 * Compile-time trimming: -DNO_COUNTER, -DNO_MV, -DNO_SET leave a field kind
 * out; an op or blob field of that kind then gives ST_KIND.
 */
typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned long usize;

#define ST_OK 0
#define ST_MALFORMED 1
#define ST_CORE 2
#define ST_KIND 3

#define LWW 1
#define CTR 2
#define MV 3
#define SET 4

/* node types (hash keys) */
#define T_FIELD 1
#define T_CTR 2
#define T_MV 3
#define T_ELEM 4
#define T_ENT 5
#define T_INV 6
#define T_CHAIN 7 /* set field: an actor's chain, a = actor, x = B, y = T */
#define T_LINK 8  /* chain: a waiting link, a = s, b = p */
#define T_PREV 9  /* chain: the prev resolved for a 0x84 stamped a (x) */

/* ------------------------------------------------------------ libc bits */

void *memcpy(void *d, const void *s, usize n) {
    __builtin_memcpy(d, s, n);
    return d;
}
void *memmove(void *d, const void *s, usize n) {
    __builtin_memmove(d, s, n);
    return d;
}
void *memset(void *d, int c, usize n) {
    __builtin_memset(d, c, n);
    return d;
}

/* ------------------------------------------------------------ status */

static u32 g_status;
static const char *g_msg;
/* result slot read by the host: {u32 ptr, u32 len} of the output (status 0)
 * or of an ASCII message (other statuses) */
static u32 g_result[2];

static void fail(u32 st, const char *msg) {
    if (!g_status) {
        g_status = st;
        g_msg = msg;
    }
}
#define BAD(msg) fail(ST_MALFORMED, msg)
#define ERR (g_status != 0)

/* ------------------------------------------------------------ memory */

extern u8 __heap_base;
static u8 *g_top;
static u8 *g_end;

#define NOINLINE __attribute__((noinline))
static NOINLINE void *xalloc(u32 n) {
    n = (n + 7u) & ~7u;
    u8 *p = g_top;
    if ((usize)(g_end - p) < n) {
        usize have = __builtin_wasm_memory_size(0) * 65536ul;
        usize need = (usize)(p - (u8 *)0) + n;
        if (need > have) {
            usize pages = (need - have + 65535ul) >> 16;
            usize more = (have >> 17) > 16 ? (have >> 17) : 16; /* grow by >= 1/2 */
            if (pages < more)
                pages = more;
            if (((have >> 16) + pages) > 65536ul)
                pages = (need - have + 65535ul) >> 16;
            if (__builtin_wasm_memory_grow(0, pages) == (usize)-1)
                __builtin_trap(); /* out of memory: the host sees a trap */
            have += pages << 16;
        }
        g_end = (u8 *)0 + have;
    }
    g_top = p + n;
    return p;
}

static void heap_reset(u8 *from) {
    usize a = ((usize)(from - (u8 *)0) + 7ul) & ~7ul;
    u8 *b = &__heap_base;
    g_top = (u8 *)0 + a;
    if (g_top < b)
        g_top = b;
    g_end = (u8 *)0 + __builtin_wasm_memory_size(0) * 65536ul;
}

/* growable byte buffer */
typedef struct {
    u8 *p;
    u32 n, cap;
} Buf;

static NOINLINE void buf_need(Buf *b, u32 more) {
    if (b->cap - b->n >= more)
        return;
    u32 cap = b->cap ? b->cap : 64;
    while (cap - b->n < more)
        cap *= 2;
    /* extend in place when the buffer is the last allocation */
    if (b->p && b->p + ((b->cap + 7u) & ~7u) == g_top) {
        xalloc(((cap + 7u) & ~7u) - ((b->cap + 7u) & ~7u));
    } else {
        u8 *np = xalloc(cap);
        if (b->n)
            memcpy(np, b->p, b->n);
        b->p = np;
    }
    b->cap = cap;
}

static void put_byte(Buf *b, u8 c) {
    buf_need(b, 1);
    b->p[b->n++] = c;
}

static void put_bytes(Buf *b, const u8 *s, u32 n) {
    buf_need(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static NOINLINE void put_var(Buf *b, u64 x) {
    buf_need(b, 10);
    u8 *o = b->p + b->n;
    while (x >= 0x80) {
        *o++ = (u8)(x | 0x80);
        x >>= 7;
    }
    *o++ = (u8)x;
    b->n = (u32)(o - b->p);
}

/* growable u64 vector */
typedef struct {
    u64 *p;
    u32 n, cap;
} Vec;

static void vec_push(Vec *v, u64 x) {
    if (v->n == v->cap) {
        u32 cap = v->cap ? v->cap * 2 : 16;
        u64 *np = xalloc(cap * 8);
        if (v->n)
            memcpy(np, v->p, v->n * 8);
        v->p = np;
        v->cap = cap;
    }
    v->p[v->n++] = x;
}

/* ------------------------------------------------------------ reading */

typedef struct {
    const u8 *p, *end;
} Rd;

static u32 left(const Rd *r) { return (u32)(r->end - r->p); }

/* agent/codec.py get_varint: up to 10 bytes, overlong accepted, the 10th
 * byte must be 0 or 1 */
static NOINLINE u64 rd_var(Rd *r) {
    if (ERR)
        return 0;
    const u8 *p = r->p;
    if (p >= r->end) {
        BAD("truncated varint");
        return 0;
    }
    u8 b = *p++;
    if (b < 0x80) {
        r->p = p;
        return b;
    }
    u64 x = b & 0x7f;
    u32 shift = 7;
    for (;;) {
        if (p >= r->end) {
            BAD("truncated varint");
            return 0;
        }
        b = *p++;
        if (shift == 63 && b > 1) {
            BAD("varint overflows 64 bits");
            return 0;
        }
        x |= (u64)(b & 0x7f) << shift;
        if (b < 0x80) {
            r->p = p;
            return x;
        }
        shift += 7;
    }
}

static u64 ld64(const u8 *p) {
    u64 x;
    memcpy(&x, p, 8);
    return x;
}

/* Python's strict utf-8 decoder */
static int utf8_ok(const u8 *s, u32 n) {
    u32 i = 0;
    while (i < n) {
        u8 c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        u32 k;
        u8 lo = 0x80, hi = 0xbf;
        if (c < 0xc2)
            return 0;
        else if (c < 0xe0)
            k = 1;
        else if (c < 0xf0) {
            k = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c < 0xf5) {
            k = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else
            return 0;
        if (n - i - 1 < k)
            return 0;
        u8 c1 = s[i + 1];
        if (c1 < lo || c1 > hi)
            return 0;
        for (u32 j = 2; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k + 1;
    }
    return 1;
}

typedef struct {
    const u8 *p;
    u32 n;
} Val; /* an encoded value; p == 0: none */

/* agent/codec.py skip_value */
static NOINLINE Val rd_val(Rd *r) {
    Val v = {0, 0};
    if (ERR)
        return v;
    const u8 *s = r->p;
    if (s >= r->end) {
        BAD("truncated value");
        return v;
    }
    u8 tag = *r->p++;
    if (tag <= 2) {
    } else if (tag == 3) {
        rd_var(r);
    } else if (tag == 4) {
        if (left(r) < 8) {
            BAD("truncated float");
            return v;
        }
        r->p += 8;
    } else if (tag == 5 || tag == 6) {
        u64 n = rd_var(r);
        if (ERR)
            return v;
        if (n > left(r)) {
            BAD("string length runs past the end");
            return v;
        }
        if (tag == 5 && !utf8_ok(r->p, (u32)n)) {
            BAD("string is not UTF-8");
            return v;
        }
        r->p += n;
    } else {
        BAD("unknown value tag");
        return v;
    }
    if (ERR)
        return v;
    v.p = s;
    v.n = (u32)(r->p - s);
    return v;
}

/* bytes order: lexicographic, a prefix first */
static int cmp_val(Val a, Val b) {
    u32 n = a.n < b.n ? a.n : b.n;
    for (u32 i = 0; i < n; i++)
        if (a.p[i] != b.p[i])
            return a.p[i] < b.p[i] ? -1 : 1;
    return a.n < b.n ? -1 : a.n > b.n;
}

/* ------------------------------------------------------------ state */

typedef struct Node Node;
struct Node {
    Node *next;   /* sibling list */
    Node *kids;   /* record: fields; field: entries/elements/chains; elem: entries;
                     chain: links and resolved prevs */
    Node *parent; /* hash key part */
    u64 a;        /* key: field id, actor, inv actor */
    u64 b;        /* key: counter since */
    u64 x, y;     /* lww h/actor; ctr p/n; mv w/c; ent add/rem; inv index */
    Val v;        /* lww and mv value; element value (key) */
    u32 hash;
    u8 t, kind, removed, has;
};

typedef struct {
    Node *node; /* kids = fields */
    u64 dead;
} Rec;

static Node **g_tab;
static u32 g_cap, g_cnt;

static u64 mix(u64 h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static u32 hash_key(u8 t, const Node *parent, u64 a, u64 b, Val v) {
    u64 h = mix(((u64)t << 32) ^ (u64)(usize)parent ^ 0x9e3779b97f4a7c15ull);
    h = mix(h ^ a);
    h = mix(h ^ (b * 0x9e3779b97f4a7c15ull));
    if (v.p) {
        for (u32 i = 0; i < v.n; i++)
            h = (h ^ v.p[i]) * 0x100000001b3ull;
        h = mix(h);
    }
    return (u32)h;
}

static void tab_init(u32 cap) {
    g_cap = cap;
    g_cnt = 0;
    g_tab = xalloc(cap * sizeof(Node *));
    memset(g_tab, 0, cap * sizeof(Node *));
}

/* slot of the node with this key, or the empty slot where it goes */
static Node **tab_find(u8 t, Node *parent, u64 a, u64 b, Val v, u32 h) {
    u32 m = g_cap - 1, i = h & m;
    for (;;) {
        Node *n = g_tab[i];
        if (!n)
            return &g_tab[i];
        if (n->hash == h && n->t == t && n->parent == parent && n->a == a &&
            n->b == b && (t != T_ELEM || cmp_val(n->v, v) == 0))
            return &g_tab[i];
        i = (i + 1) & m;
    }
}

static void tab_insert(Node **slot, Node *n) {
    *slot = n;
    if (++g_cnt * 2 <= g_cap)
        return;
    Node **old = g_tab;
    u32 oc = g_cap;
    tab_init(oc * 2);
    g_cnt = 0;
    for (u32 i = 0; i < oc; i++) {
        Node *e = old[i];
        if (e) {
            u32 j = e->hash & (g_cap - 1);
            while (g_tab[j])
                j = (j + 1) & (g_cap - 1);
            g_tab[j] = e;
            g_cnt++;
        }
    }
}

static Node *new_node(u8 t, Node *parent, u64 a, u64 b, Val v, u32 h) {
    Node *n = xalloc(sizeof(Node));
    memset(n, 0, sizeof(Node));
    n->t = t;
    n->parent = parent;
    n->a = a;
    n->b = b;
    n->v = v;
    n->hash = h;
    n->next = parent ? parent->kids : 0;
    if (parent)
        parent->kids = n;
    return n;
}

static const Val NOVAL = {0, 0};

/* live child or 0 */
static Node *lookup(u8 t, Node *parent, u64 a, u64 b, Val v) {
    u32 h = hash_key(t, parent, a, b, v);
    Node *n = *tab_find(t, parent, a, b, v, h);
    return n && !n->removed ? n : 0;
}

/* live child, created (zeroed payload) when absent; *made tells which */
static NOINLINE Node *child(u8 t, Node *parent, u64 a, u64 b, Val v, int *made) {
    u32 h = hash_key(t, parent, a, b, v);
    Node **s = tab_find(t, parent, a, b, v, h);
    Node *n = *s;
    *made = 0;
    if (!n) {
        n = new_node(t, parent, a, b, v, h);
        tab_insert(s, n);
        *made = 1;
    } else if (n->removed) {
        n->removed = 0;
        n->x = n->y = 0;
        if (t != T_ELEM)
            n->v = NOVAL;
        *made = 1;
    }
    return n;
}

/* a new field node replacing any previous one (kind change, blob dup) */
static Node *field_new(Rec *r, u64 fid, u8 kind) {
    u32 h = hash_key(T_FIELD, r->node, fid, 0, NOVAL);
    Node **s = tab_find(T_FIELD, r->node, fid, 0, NOVAL, h);
    Node *old = *s;
    Node *n = new_node(T_FIELD, r->node, fid, 0, NOVAL, h);
    n->kind = kind;
    if (old) {
        old->removed = 1;
        *s = n;
    } else {
        tab_insert(s, n);
    }
    return n;
}

static Node *field_get(Rec *r, u64 fid) { return lookup(T_FIELD, r->node, fid, 0, NOVAL); }

/* reference _field */
static Node *field_for(Rec *r, u64 fid, u8 kind) {
    Node *f = field_get(r, fid);
    if (!f || f->kind < kind)
        return field_new(r, fid, kind);
    if (f->kind > kind)
        return 0;
    return f;
}

/* ------------------------------------------------------------ sorting */

/* Sort keys: (k1, k2), then the node's value bytes when by_val. k1 of a set
 * element is its first 8 value bytes big-endian, zero-padded, so most
 * comparisons stay in this array. */
typedef struct {
    u64 k1, k2;
    Node *n;
} SK;

static int g_byval;

static int sk_lt(const SK *x, const SK *y) {
    if (x->k1 != y->k1)
        return x->k1 < y->k1;
    if (x->k2 != y->k2)
        return x->k2 < y->k2;
    return g_byval && cmp_val(x->n->v, y->n->v) < 0;
}

/* bottom-up merge sort; returns the sorted array (a or the scratch one) */
static NOINLINE SK *sort_sk(SK *a, u32 n, int byval) {
    g_byval = byval;
    if (n < 2)
        return a;
    SK *b = xalloc(n * sizeof(SK));
    /* runs of 4 by insertion sort */
    for (u32 i = 0; i < n; i += 4) {
        u32 e = i + 4 < n ? i + 4 : n;
        for (u32 j = i + 1; j < e; j++) {
            SK t = a[j];
            u32 k = j;
            while (k > i && sk_lt(&t, &a[k - 1])) {
                a[k] = a[k - 1];
                k--;
            }
            a[k] = t;
        }
    }
    for (u32 w = 4; w < n; w *= 2) {
        for (u32 i = 0; i < n; i += 2 * w) {
            u32 m = i + w < n ? i + w : n, e = i + 2 * w < n ? i + 2 * w : n;
            u32 p = i, q = m, o = i;
            while (p < m && q < e)
                b[o++] = sk_lt(&a[q], &a[p]) ? a[q++] : a[p++];
            while (p < m)
                b[o++] = a[p++];
            while (q < e)
                b[o++] = a[q++];
        }
        SK *t = a;
        a = b;
        b = t;
    }
    return a;
}

static u64 val_key(Val v) {
    u64 k = 0;
    for (u32 i = 0; i < 8; i++)
        k = (k << 8) | (i < v.n ? v.p[i] : 0);
    return k;
}

/* live children of n of type t, sorted by (a, b) or by value bytes */
static Node **live_sorted(Node *n, u32 *cnt, int byval, u8 t) {
    u32 k = 0;
    for (Node *e = n->kids; e; e = e->next)
        k += !e->removed && e->t == t;
    SK *s = xalloc(k * sizeof(SK) + 8);
    k = 0;
    for (Node *e = n->kids; e; e = e->next)
        if (!e->removed && e->t == t) {
            s[k].k1 = byval ? val_key(e->v) : e->a;
            s[k].k2 = byval ? 0 : e->b;
            s[k].n = e;
            k++;
        }
    s = sort_sk(s, k, byval);
    Node **a = (Node **)s; /* compact in place: 4-byte pointers over 24-byte keys */
    for (u32 i = 0; i < k; i++)
        a[i] = s[i].n;
    *cnt = k;
    return a;
}

/* ------------------------------------------------------------ blobs */

static const u8 *g_stab; /* stamp table of the blob being decoded */
static u64 g_nst;

static u64 rd_ref(Rd *r) {
    u64 i = rd_var(r);
    if (ERR)
        return 0;
    if (i > g_nst) {
        BAD("blob stamp reference out of range");
        return 0;
    }
    return i ? ld64(g_stab + 8 * (i - 1)) : 0;
}

static void kill_kids(Node *n) {
    for (Node *e = n->kids; e; e = e->next)
        e->removed = 1;
}

/* reference decode_blob; duplicates: the last one wins, as in the dicts */
static void decode_blob(Rec *r, const u8 *blob, u32 len) {
    if (len == 0)
        return;
    Rd rd = {blob, blob + len};
    u8 version = blob[0];
    if (version != 2 && version != 1) {
        BAD("record blob version is not supported");
        return;
    }
    rd.p++;
    u64 n = rd_var(&rd);
    if (ERR)
        return;
    if (n > left(&rd) / 8) {
        BAD("blob stamp table runs past the end");
        return;
    }
    g_stab = rd.p;
    g_nst = n;
    rd.p += 8 * n;
    r->dead = rd_ref(&rd);
    u64 nf = rd_var(&rd);
    if (ERR)
        return;
    if (nf > left(&rd)) {
        BAD("truncated blob");
        return;
    }
    for (u64 i = 0; i < nf && !ERR; i++) {
        u64 fid = rd_var(&rd);
        if (ERR)
            return;
        if (rd.p >= rd.end) {
            BAD("truncated blob");
            return;
        }
        u8 kind = *rd.p++;
        if (kind < LWW || kind > SET) {
            BAD("unknown field kind in blob");
            return;
        }
#ifdef NO_COUNTER
        if (kind == CTR) {
            fail(ST_KIND, "kind not built in: counter");
            return;
        }
#endif
#ifdef NO_MV
        if (kind == MV) {
            fail(ST_KIND, "kind not built in: mv");
            return;
        }
#endif
#ifdef NO_SET
        if (kind == SET) {
            fail(ST_KIND, "kind not built in: set");
            return;
        }
#endif
        Node *f = field_new(r, fid, kind);
        if (kind == LWW) {
            u64 h = rd_ref(&rd);
            if (h) {
                f->has = 1;
                f->x = h;
                f->y = rd_var(&rd);
                f->v = rd_val(&rd);
            }
            continue;
        }
        int made;
#ifndef NO_SET
        if (kind == SET && version >= 2) {
            /* chains: chains[a] = [b, t, links] replaces a duplicate */
            u64 nc = rd_var(&rd);
            if (ERR)
                return;
            if (nc > left(&rd)) {
                BAD("truncated blob");
                return;
            }
            for (u64 j = 0; j < nc && !ERR; j++) {
                u64 a = rd_var(&rd), b = rd_ref(&rd), t = rd_ref(&rd), nl = rd_var(&rd);
                if (ERR)
                    return;
                if (nl > left(&rd)) {
                    BAD("truncated blob");
                    return;
                }
                Node *ch = child(T_CHAIN, f, a, 0, NOVAL, &made);
                kill_kids(ch);
                ch->x = b;
                ch->y = t;
                for (u64 k = 0; k < nl && !ERR; k++) {
                    u64 ls = rd_ref(&rd), lp = rd_ref(&rd);
                    if (ERR)
                        return;
                    child(T_LINK, ch, ls, lp, NOVAL, &made);
                }
            }
        }
#endif
        u64 cnt = rd_var(&rd);
        if (ERR)
            return;
        if (cnt > left(&rd)) {
            BAD("truncated blob");
            return;
        }
        for (u64 j = 0; j < cnt && !ERR; j++) {
#ifndef NO_COUNTER
            if (kind == CTR) {
                u64 a = rd_var(&rd), s = rd_ref(&rd), p = rd_var(&rd), q = rd_var(&rd);
                if (ERR)
                    return;
                Node *e = child(T_CTR, f, a, s, NOVAL, &made);
                e->x = p;
                e->y = q;
            }
#endif
#ifndef NO_MV
            if (kind == MV) {
                u64 a = rd_var(&rd), w = rd_ref(&rd), c = rd_ref(&rd);
                Val v = NOVAL;
                if (w > c)
                    v = rd_val(&rd);
                if (ERR)
                    return;
                Node *e = child(T_MV, f, a, 0, NOVAL, &made);
                e->x = w;
                e->y = c;
                e->v = v;
            }
#endif
#ifndef NO_SET
            if (kind == SET) {
                Val v = rd_val(&rd);
                u64 ne = rd_var(&rd);
                if (ERR)
                    return;
                if (ne > left(&rd)) {
                    BAD("truncated blob");
                    return;
                }
                Node *el = child(T_ELEM, f, 0, 0, v, &made);
                kill_kids(el); /* st[v] = ents replaces the element's entries */
                for (u64 k = 0; k < ne && !ERR; k++) {
                    u64 a = rd_var(&rd), ad = rd_ref(&rd), rm = rd_ref(&rd);
                    if (ERR)
                        return;
                    Node *e = child(T_ENT, el, a, 0, NOVAL, &made);
                    e->x = ad;
                    e->y = rm;
                }
            }
#endif
        }
    }
    if (ERR)
        return;
    if (rd.p != rd.end)
        BAD("trailing bytes after record blob");
}

static u64 *g_st; /* sorted stamp table of the blob being encoded */
static u32 g_nstab;

static u64 ref_of(u64 s) {
    if (!s)
        return 0;
    u32 lo = 0, hi = g_nstab;
    while (lo < hi) {
        u32 m = (lo + hi) / 2;
        if (g_st[m] < s)
            lo = m + 1;
        else
            hi = m;
    }
    return lo + 1;
}

#ifndef NO_SET
/* chain of actor a in set field f, or 0 */
static Node *chain_get(Node *f, u64 a) { return lookup(T_CHAIN, f, a, 0, NOVAL); }

static int has_links(Node *ch) {
    for (Node *l = ch->kids; l; l = l->next)
        if (!l->removed && l->t == T_LINK)
            return 1;
    return 0;
}

/* reference _normal_set: live entries keep their add, dead ones their rem
 * unless D or the actor's chain covers it; empty elements and chains go */
static void normal_set(Node *f, u64 D) {
    for (Node *el = f->kids; el; el = el->next) {
        if (el->removed || el->t != T_ELEM)
            continue;
        int any = 0;
        for (Node *e = el->kids; e; e = e->next) {
            if (e->removed)
                continue;
            if (e->x > e->y) {
                e->y = 0;
                any = 1;
                continue;
            }
            e->x = 0;
            u64 rm = e->y;
            Node *ch = chain_get(f, e->a);
            if (rm <= D || (ch && ch->y && ch->x <= rm && rm < ch->y))
                e->removed = 1;
            else
                any = 1;
        }
        if (!any)
            el->removed = 1;
    }
    for (Node *ch = f->kids; ch; ch = ch->next)
        if (!ch->removed && ch->t == T_CHAIN && !ch->y && !has_links(ch))
            ch->removed = 1;
}
#endif

static void encode_blob(Rec *r, Buf *out) {
    u32 nf;
    Node **fs = live_sorted(r->node, &nf, 0, T_FIELD);
    if (!nf && !r->dead) {
        put_byte(out, 0);
        return;
    }
    Vec st = {0, 0, 0};
    vec_push(&st, r->dead);
    for (u32 i = 0; i < nf; i++) {
        Node *f = fs[i];
        if (f->kind == LWW) {
            if (f->has)
                vec_push(&st, f->x);
            continue;
        }
#ifndef NO_SET
        if (f->kind == SET)
            normal_set(f, r->dead);
#endif
        for (Node *e = f->kids; e; e = e->next) {
            if (e->removed)
                continue;
            if (f->kind == CTR)
                vec_push(&st, e->b);
            else if (f->kind == MV) {
                vec_push(&st, e->x);
                vec_push(&st, e->y);
            } else if (e->t == T_CHAIN) {
                vec_push(&st, e->x);
                vec_push(&st, e->y);
                for (Node *g = e->kids; g; g = g->next) {
                    if (g->removed || g->t != T_LINK)
                        continue;
                    vec_push(&st, g->a);
                    vec_push(&st, g->b);
                }
            } else {
                for (Node *g = e->kids; g; g = g->next) {
                    if (g->removed)
                        continue;
                    vec_push(&st, g->x);
                    vec_push(&st, g->y);
                }
            }
        }
    }
    SK *sk = xalloc(st.n * sizeof(SK) + 8);
    u32 k = 0;
    for (u32 i = 0; i < st.n; i++)
        if (st.p[i]) {
            sk[k].k1 = st.p[i];
            sk[k].k2 = 0;
            sk[k].n = 0;
            k++;
        }
    sk = sort_sk(sk, k, 0);
    u32 d = 0;
    for (u32 i = 0; i < k; i++)
        if (d == 0 || st.p[d - 1] != sk[i].k1)
            st.p[d++] = sk[i].k1;
    k = d;
    g_st = st.p;
    g_nstab = k;

    /* the blob goes after room for its length varint, then slides back */
    buf_need(out, 5);
    u32 at = out->n;
    out->n += 5;
    put_byte(out, 2); /* blob version */
    put_var(out, k);
    for (u32 i = 0; i < k; i++) {
        buf_need(out, 8);
        memcpy(out->p + out->n, &g_st[i], 8);
        out->n += 8;
    }
    put_var(out, ref_of(r->dead));
    put_var(out, nf);
    for (u32 i = 0; i < nf; i++) {
        Node *f = fs[i];
        put_var(out, f->a);
        put_byte(out, f->kind);
        if (f->kind == LWW) {
            if (!f->has) {
                put_byte(out, 0);
            } else {
                put_var(out, ref_of(f->x));
                put_var(out, f->y);
                put_bytes(out, f->v.p, f->v.n);
            }
            continue;
        }
        u32 n;
        Node **es;
        if (f->kind == SET) {
            es = live_sorted(f, &n, 0, T_CHAIN);
            put_var(out, n);
            for (u32 j = 0; j < n; j++) {
                Node *ch = es[j];
                u32 m;
                Node **ls = live_sorted(ch, &m, 0, T_LINK);
                put_var(out, ch->a);
                put_var(out, ref_of(ch->x));
                put_var(out, ref_of(ch->y));
                put_var(out, m);
                for (u32 q = 0; q < m; q++) {
                    put_var(out, ref_of(ls[q]->a));
                    put_var(out, ref_of(ls[q]->b));
                }
            }
        }
        es = live_sorted(f, &n, f->kind == SET,
                         f->kind == CTR ? T_CTR : f->kind == MV ? T_MV : T_ELEM);
        put_var(out, n);
        for (u32 j = 0; j < n; j++) {
            Node *e = es[j];
            if (f->kind == CTR) {
                put_var(out, e->a);
                put_var(out, ref_of(e->b));
                put_var(out, e->x);
                put_var(out, e->y);
            } else if (f->kind == MV) {
                put_var(out, e->a);
                put_var(out, ref_of(e->x));
                put_var(out, ref_of(e->y));
                if (e->x > e->y)
                    put_bytes(out, e->v.p, e->v.n);
            } else {
                put_bytes(out, e->v.p, e->v.n);
                u32 m;
                Node **gs = live_sorted(e, &m, 0, T_ENT);
                put_var(out, m);
                for (u32 q = 0; q < m; q++) {
                    put_var(out, gs[q]->a);
                    put_var(out, ref_of(gs[q]->x));
                    put_var(out, ref_of(gs[q]->y));
                }
            }
        }
    }
    u32 len = out->n - at - 5;
    u8 pre[5];
    u32 pn = 0;
    u32 x = len;
    while (x >= 0x80) {
        pre[pn++] = (u8)(x | 0x80);
        x >>= 7;
    }
    pre[pn++] = (u8)x;
    memmove(out->p + at + pn, out->p + at + 5, len);
    memcpy(out->p + at, pre, pn);
    out->n = at + pn + len;
}

/* ------------------------------------------------------------ rules */

static void do_delete(Rec *r, u64 h) {
    if (h <= r->dead)
        return;
    u64 D = r->dead = h;
    for (Node *f = r->node->kids; f; f = f->next) {
        if (f->removed)
            continue;
        if (f->kind == LWW) {
            if (f->has && f->x <= D)
                f->has = 0;
            continue;
        }
        for (Node *e = f->kids; e; e = e->next) {
            if (e->removed)
                continue;
            if (f->kind == CTR) {
                if (e->b < D)
                    e->removed = 1;
            } else if (f->kind == MV) {
                if (e->x <= D) {
                    e->x = 0;
                    e->v = NOVAL;
                }
                if (e->y <= D)
                    e->y = 0;
                if (!e->x && !e->y)
                    e->removed = 1;
            } else if (e->t == T_ELEM) {
                int any = 0;
                for (Node *g = e->kids; g; g = g->next) {
                    if (g->removed)
                        continue;
                    if (g->x <= D)
                        g->x = 0;
                    if (g->y <= D)
                        g->y = 0;
                    if (!g->x && !g->y)
                        g->removed = 1;
                    else
                        any = 1;
                }
                if (!any)
                    e->removed = 1;
            }
        }
    }
}

static const u8 *g_ids; /* the store's actor table, u64 LE */
static u64 g_nids;

static void do_lww(Rec *r, u64 fid, u64 h, u64 a, Val v) {
    Node *f = field_for(r, fid, LWW);
    if (!f || h <= r->dead)
        return;
    if (f->has) {
        if (f->y >= g_nids) {
            /* reference.py: IndexError on ids[cur[1]] */
            BAD("blob actor index outside the actor table");
            return;
        }
        u64 ia = ld64(g_ids + 8 * a), ic = ld64(g_ids + 8 * f->y);
        int gt = h != f->x ? h > f->x : ia != ic ? ia > ic : cmp_val(v, f->v) > 0;
        if (!gt)
            return;
    }
    f->has = 1;
    f->x = h;
    f->y = a;
    f->v = v;
}

#ifndef NO_COUNTER
static void do_ctr(Rec *r, u64 fid, u64 a, u64 s, u64 p, u64 n) {
    Node *f = field_for(r, fid, CTR);
    if (!f || s < r->dead)
        return;
    int made;
    Node *e = child(T_CTR, f, a, s, NOVAL, &made);
    if (made || p > e->x)
        e->x = p;
    if (made || n > e->y)
        e->y = n;
}
#endif

typedef struct {
    u64 a, h;
} Pair;

#ifndef NO_MV
static void do_mv(Rec *r, u64 fid, u64 h, u64 a, Val v, Pair *ctx, u32 nctx) {
    Node *f = field_for(r, fid, MV);
    if (!f)
        return;
    u64 D = r->dead;
    int made;
    if (h > D) {
        Node *e = child(T_MV, f, a, 0, NOVAL, &made);
        if (made) {
            e->x = h;
            e->y = 0;
            e->v = v;
        } else {
            int gt;
            if (h != e->x)
                gt = h > e->x;
            else if (e->v.p)
                gt = cmp_val(v, e->v) > 0;
            else
                gt = 1; /* v > b"" */
            if (gt) {
                e->x = h;
                e->v = v;
            }
        }
    }
    for (u32 i = 0; i < nctx; i++) {
        u64 ch = ctx[i].h;
        if (ch <= D)
            continue;
        Node *e = child(T_MV, f, ctx[i].a, 0, NOVAL, &made);
        if (made) {
            e->x = 0;
            e->y = ch;
            e->v = NOVAL;
        } else if (ch > e->y)
            e->y = ch;
    }
    for (Node *e = f->kids; e; e = e->next)
        if (!e->removed && e->x <= e->y)
            e->v = NOVAL;
}
#endif

#ifndef NO_SET
static void do_add(Rec *r, u64 fid, u64 h, u64 a, Val v) {
    Node *f = field_for(r, fid, SET);
    if (!f || h <= r->dead)
        return;
    int made;
    Node *el = child(T_ELEM, f, 0, 0, v, &made);
    Node *e = child(T_ENT, el, a, 0, NOVAL, &made);
    if (made) {
        e->x = h;
        e->y = 0;
    } else if (h > e->x)
        e->x = h;
}

/* reference _link: join the link (s, p) to actor a's chain in field f */
static void link_chain(Node *f, u64 a, u64 s, u64 p) {
    int made;
    Node *ch = child(T_CHAIN, f, a, 0, NOVAL, &made);
    if (p == 0) {
        if (!ch->x || s < ch->x)
            ch->x = s;
        if (s > ch->y)
            ch->y = s;
    } else if (ch->y && p <= ch->y) {
        if (s > ch->y)
            ch->y = s;
    } else {
        child(T_LINK, ch, s, p, NOVAL, &made);
        return;
    }
    /* absorb waiting links that now connect, until none does (the result
     * is the same fixed point as the reference's rounds) */
    for (int any = 1; any;) {
        any = 0;
        for (Node *l = ch->kids; l; l = l->next)
            if (!l->removed && l->t == T_LINK && l->b <= ch->y) {
                l->removed = 1;
                if (l->a > ch->y)
                    ch->y = l->a;
                any = 1;
            }
    }
}

/* reference _prev: the greatest stamp in a's chain of field f (T and the
 * waiting links), 0 if none; a local add must be stamped above it */
static u64 prev_of(Node *f, u64 a, u64 h) {
    if (!f || f->kind != SET)
        return 0;
    Node *ch = chain_get(f, a);
    if (!ch)
        return 0;
    u64 best = ch->y;
    for (Node *l = ch->kids; l; l = l->next)
        if (!l->removed && l->t == T_LINK && l->a > best)
            best = l->a;
    if (best >= h)
        BAD("a local add must be stamped above the actor's earlier adds");
    return best;
}

/* op 7: an add that carries the stamp of its actor's previous add */
static void do_add_chained(Rec *r, u64 fid, u64 h, u64 a, u64 prev, Val v) {
    if (prev >= h) {
        BAD("set add: prev must be below the stamp");
        return;
    }
    Node *f = field_for(r, fid, SET);
    if (!f)
        return;
    Node *ch = chain_get(f, a);
    int covered = ch && ch->y && ch->x <= h && h < ch->y;
    link_chain(f, a, h, prev);
    if (covered || h <= r->dead)
        return;
    int made;
    Node *el = child(T_ELEM, f, 0, 0, v, &made);
    Node *e = child(T_ENT, el, a, 0, NOVAL, &made);
    if (made) {
        e->x = h;
        e->y = 0;
    } else if (h > e->x)
        e->x = h;
}

static void do_rem(Rec *r, u64 fid, Val v, Pair *ctx, u32 nctx) {
    Node *f = field_for(r, fid, SET);
    if (!f)
        return;
    u64 D = r->dead;
    int made;
    for (u32 i = 0; i < nctx; i++) {
        u64 ch = ctx[i].h;
        if (ch <= D)
            continue;
        Node *el = child(T_ELEM, f, 0, 0, v, &made);
        Node *e = child(T_ENT, el, ctx[i].a, 0, NOVAL, &made);
        if (made) {
            e->x = 0;
            e->y = ch;
        } else if (ch > e->y)
            e->y = ch;
    }
}
#endif

/* ------------------------------------------------------------ batches */

static u64 *g_fmap;
static u64 g_nf;
static Vec g_amap;
static u64 g_maxh;
static u32 g_buflen;

static u64 rd_fld(Rd *r) {
    u64 x = rd_var(r);
    if (ERR)
        return 0;
    if (x >= g_nf) {
        BAD("field index out of range");
        return 0;
    }
    return g_fmap[x];
}

static u64 rd_act(Rd *r) {
    u64 x = rd_var(r);
    if (ERR)
        return 0;
    if (x >= g_amap.n) {
        BAD("actor index out of range");
        return 0;
    }
    return g_amap.p[x];
}

static u64 rd_stamp(Rd *r) {
    u64 x = rd_var(r);
    if (ERR)
        return 0;
    if (x == 0) {
        BAD("zero stamp");
        return 0;
    }
    if (x > g_maxh)
        g_maxh = x;
    return x;
}

#ifndef NO_MV
#define HAVE_CTX
#endif
#ifndef NO_SET
#define HAVE_CTX
#endif

#ifdef HAVE_CTX
static Pair *rd_ctx(Rd *r, u32 *n) {
    u64 c = rd_var(r);
    *n = 0;
    if (ERR)
        return 0;
    if (c > g_buflen || c > left(r) / 2) {
        BAD("context count runs past the end");
        return 0;
    }
    Pair *ctx = xalloc((u32)c * sizeof(Pair) + 8);
    for (u32 i = 0; i < (u32)c && !ERR; i++) {
        ctx[i].a = rd_act(r);
        ctx[i].h = rd_stamp(r);
    }
    *n = (u32)c;
    return ctx;
}

/* entries with w > c (mv) or add > rem (set), sorted by actor */
static Pair *visible(Node *n, u32 *cnt) {
    u32 k;
    Node **a = live_sorted(n, &k, 0, n->t == T_ELEM ? T_ENT : T_MV);
    Pair *ctx = xalloc(k * sizeof(Pair) + 8);
    u32 m = 0;
    for (u32 i = 0; i < k; i++)
        if (a[i]->x > a[i]->y) {
            ctx[m].a = a[i]->a;
            ctx[m].h = a[i]->x;
            m++;
        }
    *cnt = m;
    return ctx;
}

static void emit_ctx(Buf *o, Pair *ctx, u32 n) {
    put_var(o, n);
    for (u32 i = 0; i < n; i++) {
        int made;
        Node *e = child(T_INV, 0, ctx[i].a, 0, NOVAL, &made);
        if (made) {
            e->x = g_amap.n;
            vec_push(&g_amap, ctx[i].a);
        }
        put_var(o, e->x);
        put_var(o, ctx[i].h);
    }
}
#endif

/* a local intent's actor index: in the change's actor map */
static NOINLINE int rd_local_actor(Rd *rd, u64 *ai) {
    *ai = rd_var(rd);
    if (ERR)
        return 0;
    if (*ai >= g_amap.n) {
        BAD("actor index out of range");
        return 0;
    }
    return 1;
}

static Buf g_out;

/* The ops of one change (v1: the whole batch; v2: one section). Key
   indexes go through kmap when given (v2), else straight to records. */
static NOINLINE void ops_loop(Rd *rdp, Rec *recs, const u64 *kmap, u64 nkeys, u64 nops,
                              int local, Buf *opsp) {
    Rd rd = *rdp;
    Buf ops = *opsp;
    for (u64 i = 0; i < nops && !ERR; i++) {
        const u8 *start = rd.p;
        u64 k = rd_var(&rd);
        if (ERR)
            return;
        if (k >= nkeys) {
            BAD("key index out of range");
            return;
        }
        if (rd.p >= rd.end) {
            BAD("truncated op");
            return;
        }
        u8 code = *rd.p++;
        Rec *r = &recs[kmap ? kmap[k] : k];
        u64 fid, h, a, s, p, q;
        Val v;
        u32 nctx;
        switch (code) {
        case 1:
            fid = rd_fld(&rd);
            h = rd_stamp(&rd);
            a = rd_act(&rd);
            v = rd_val(&rd);
            if (ERR)
                return;
            do_lww(r, fid, h, a, v);
            break;
        case 6:
            h = rd_stamp(&rd);
            if (ERR)
                return;
            do_delete(r, h);
            break;
#ifndef NO_COUNTER
        case 2:
            fid = rd_fld(&rd);
            a = rd_act(&rd);
            s = rd_var(&rd);
            p = rd_var(&rd);
            q = rd_var(&rd);
            if (ERR)
                return;
            do_ctr(r, fid, a, s, p, q);
            break;
#endif
#ifndef NO_MV
        case 3: {
            fid = rd_fld(&rd);
            h = rd_stamp(&rd);
            a = rd_act(&rd);
            v = rd_val(&rd);
            Pair *ctx = rd_ctx(&rd, &nctx);
            if (ERR)
                return;
            do_mv(r, fid, h, a, v, ctx, nctx);
            break;
        }
#endif
#ifndef NO_SET
        case 4:
            fid = rd_fld(&rd);
            h = rd_stamp(&rd);
            a = rd_act(&rd);
            v = rd_val(&rd);
            if (ERR)
                return;
            do_add(r, fid, h, a, v);
            break;
        case 7:
            fid = rd_fld(&rd);
            h = rd_stamp(&rd);
            a = rd_act(&rd);
            p = rd_var(&rd); /* on the wire: stamp - prev, 0 for none */
            v = rd_val(&rd);
            if (ERR)
                return;
            p = p == 0 ? 0 : p < h ? h - p : h; /* h: refused below */
            do_add_chained(r, fid, h, a, p, v);
            break;
        case 5: {
            fid = rd_fld(&rd);
            v = rd_val(&rd);
            Pair *ctx = rd_ctx(&rd, &nctx);
            if (ERR)
                return;
            do_rem(r, fid, v, ctx, nctx);
            break;
        }
#endif
        default:
            if (local && (code == 0x82 || code == 0x83 || code == 0x84 || code == 0x85)) {
                u64 fi = rd_var(&rd);
                if (ERR)
                    return;
                if (fi >= g_nf) {
                    BAD("field index out of range");
                    return;
                }
                fid = g_fmap[fi];
#ifndef NO_COUNTER
                if (code == 0x82) {
                    u64 ai;
                    if (!rd_local_actor(&rd, &ai))
                        return;
                    a = g_amap.p[ai];
                    u64 z = rd_var(&rd);
                    if (ERR)
                        return;
                    Node *f = field_get(r, fid);
                    p = q = 0;
                    if (f && f->kind == CTR) {
                        Node *e = lookup(T_CTR, f, a, r->dead, NOVAL);
                        if (e) {
                            p = e->x;
                            q = e->y;
                        }
                    }
                    u64 mag = z >> 1;
                    if (z & 1) { /* d = -(mag + 1) */
                        u64 nq = q + mag + 1;
                        if (nq < q || (mag + 1 == 0)) {
                            fail(ST_CORE, "counter overflow");
                            return;
                        }
                        q = nq;
                    } else {
                        u64 np = p + mag;
                        if (np < p) {
                            fail(ST_CORE, "counter overflow");
                            return;
                        }
                        p = np;
                    }
                    do_ctr(r, fid, a, r->dead, p, q);
                    put_var(&ops, k);
                    put_byte(&ops, 2);
                    put_var(&ops, fi);
                    put_var(&ops, ai);
                    put_var(&ops, r->dead);
                    put_var(&ops, p);
                    put_var(&ops, q);
                    continue;
                }
#else
                if (code == 0x82) {
                    fail(ST_KIND, "kind not built in: counter");
                    return;
                }
#endif
#ifndef NO_MV
                if (code == 0x83) {
                    h = rd_stamp(&rd);
                    u64 ai;
                    if (!rd_local_actor(&rd, &ai))
                        return;
                    a = g_amap.p[ai];
                    v = rd_val(&rd);
                    if (ERR)
                        return;
                    Node *f = field_get(r, fid);
                    Pair *ctx = 0;
                    nctx = 0;
                    if (f && f->kind == MV)
                        ctx = visible(f, &nctx);
                    do_mv(r, fid, h, a, v, ctx, nctx);
                    put_var(&ops, k);
                    put_byte(&ops, 3);
                    put_var(&ops, fi);
                    put_var(&ops, h);
                    put_var(&ops, ai);
                    put_bytes(&ops, v.p, v.n);
                    emit_ctx(&ops, ctx, nctx);
                    continue;
                }
#else
                if (code == 0x83) {
                    fail(ST_KIND, "kind not built in: mv");
                    return;
                }
#endif
#ifndef NO_SET
                if (code == 0x84) {
                    h = rd_stamp(&rd);
                    u64 ai;
                    if (!rd_local_actor(&rd, &ai))
                        return;
                    a = g_amap.p[ai];
                    v = rd_val(&rd);
                    if (ERR)
                        return;
                    /* adds of one change to one field share prev: the first
                     * resolution for (record, field, actor, stamp) is kept in
                     * a T_PREV node under the chain (which exists, in a set
                     * field that stays one, after the first add) */
                    Node *f = field_get(r, fid);
                    Node *ch = f && f->kind == SET ? chain_get(f, a) : 0;
                    Node *c = ch ? lookup(T_PREV, ch, h, 0, NOVAL) : 0;
                    if (c) {
                        p = c->x;
                    } else {
                        p = prev_of(f, a, h);
                        if (ERR)
                            return;
                    }
                    do_add_chained(r, fid, h, a, p, v);
                    if (ERR)
                        return;
                    if (!c) {
                        int made;
                        ch = chain_get(field_get(r, fid), a);
                        c = child(T_PREV, ch, h, 0, NOVAL, &made);
                        c->x = p;
                    }
                    put_var(&ops, k);
                    put_byte(&ops, 7);
                    put_var(&ops, fi);
                    put_var(&ops, h);
                    put_var(&ops, ai);
                    put_var(&ops, p ? h - p : 0);
                    put_bytes(&ops, v.p, v.n);
                    continue;
                }
                if (code == 0x85) {
                    v = rd_val(&rd);
                    if (ERR)
                        return;
                    Node *f = field_get(r, fid);
                    Pair *ctx = 0;
                    nctx = 0;
                    if (f && f->kind == SET) {
                        Node *el = lookup(T_ELEM, f, 0, 0, v);
                        if (el)
                            ctx = visible(el, &nctx);
                    }
                    do_rem(r, fid, v, ctx, nctx);
                    put_var(&ops, k);
                    put_byte(&ops, 5);
                    put_var(&ops, fi);
                    put_bytes(&ops, v.p, v.n);
                    emit_ctx(&ops, ctx, nctx);
                    continue;
                }
#else
                if (code == 0x84 || code == 0x85) {
                    fail(ST_KIND, "kind not built in: set");
                    return;
                }
#endif
            }
#if defined(NO_COUNTER) || defined(NO_MV) || defined(NO_SET)
#ifdef NO_COUNTER
            if (code == 2) {
                fail(ST_KIND, "kind not built in: counter");
                return;
            }
#endif
#ifdef NO_MV
            if (code == 3) {
                fail(ST_KIND, "kind not built in: mv");
                return;
            }
#endif
#ifdef NO_SET
            if (code == 4 || code == 5 || code == 7) {
                fail(ST_KIND, "kind not built in: set");
                return;
            }
#endif
#endif
            BAD("unknown op code");
            return;
        }
        if (ERR)
            return;
        if (local)
            put_bytes(&ops, start, (u32)(rd.p - start));
    }
    if (ERR)
        return;
    if (rd.p != rd.end) {
        BAD("trailing bytes after the last op");
        return;
    }
    *rdp = rd;
    *opsp = ops;
}

static int rd_ids(Rd *rd) {
    u64 n = rd_var(rd);
    if (ERR)
        return 0;
    if (n > left(rd) / 8) {
        BAD("actor table runs past the end");
        return 0;
    }
    g_ids = rd->p;
    g_nids = n;
    rd->p += 8 * n;
    return 1;
}

/* a list of varints (field map, key map) */
static u64 *rd_list(Rd *rd, u64 *count) {
    u64 n = rd_var(rd);
    *count = 0;
    if (ERR)
        return 0;
    if (n > left(rd)) {
        BAD("truncated varint");
        return 0;
    }
    u64 *m = xalloc((u32)n * 8 + 8);
    for (u32 i = 0; i < (u32)n && !ERR; i++)
        m[i] = rd_var(rd);
    *count = n;
    return m;
}

static int rd_amap(Rd *rd) {
    u64 n = rd_var(rd);
    if (ERR)
        return 0;
    if (n > left(rd)) {
        BAD("truncated varint");
        return 0;
    }
    g_amap.p = 0;
    g_amap.n = g_amap.cap = 0;
    for (u32 i = 0; i < (u32)n && !ERR; i++) {
        u64 x = rd_var(rd);
        if (ERR)
            return 0;
        if (x >= g_nids) {
            BAD("actor map points outside the actor table");
            return 0;
        }
        vec_push(&g_amap, x);
    }
    return !ERR;
}

static Rec *rd_recs(Rd *rd, u32 *count) {
    u64 n = rd_var(rd);
    *count = 0;
    if (ERR)
        return 0;
    if (n > left(rd)) {
        BAD("truncated varint");
        return 0;
    }
    u32 nrecs = (u32)n;
    tab_init(1024);
    Rec *recs = xalloc(nrecs * sizeof(Rec) + 8);
    for (u32 i = 0; i < nrecs && !ERR; i++) {
        u64 ln = rd_var(rd);
        if (ERR)
            return 0;
        if (ln > left(rd)) {
            BAD("record blob runs past the end");
            return 0;
        }
        recs[i].dead = 0;
        recs[i].node = new_node(0, 0, 0, 0, NOVAL, 0);
        decode_blob(&recs[i], rd->p, (u32)ln);
        rd->p += ln;
    }
    *count = nrecs;
    return recs;
}

/* Batch version 2 (merge only): many changes in one call. The records are
   shared; each section carries one change's field, actor and key maps. */
static u32 run_v2(Rd *rd, Rec **out_recs) {
    u32 nrecs;
    *out_recs = 0;
    if (!rd_ids(rd))
        return 0;
    Rec *recs = rd_recs(rd, &nrecs);
    if (ERR)
        return 0;
    u64 nsec = rd_var(rd);
    if (ERR)
        return 0;
    if (nsec > left(rd)) {
        BAD("section count runs past the end");
        return 0;
    }
    Buf none = {0, 0, 0};
    for (u64 i = 0; i < nsec && !ERR; i++) {
        g_fmap = rd_list(rd, &g_nf);
        if (ERR || !rd_amap(rd))
            return 0;
        u64 nk;
        u64 *kmap = rd_list(rd, &nk);
        if (ERR)
            return 0;
        for (u64 j = 0; j < nk; j++)
            if (kmap[j] >= nrecs) {
                BAD("key map points outside the records");
                return 0;
            }
        u64 nops = rd_var(rd);
        u64 olen = rd_var(rd);
        if (ERR)
            return 0;
        if (olen > left(rd)) {
            BAD("section runs past the end");
            return 0;
        }
        Rd sub = {rd->p, rd->p + olen};
        ops_loop(&sub, recs, kmap, nk, nops, 0, &none);
        rd->p += olen;
    }
    if (ERR)
        return 0;
    if (rd->p != rd->end) {
        BAD("trailing bytes after the last section");
        return 0;
    }
    *out_recs = recs;
    return nrecs;
}

static NOINLINE void run(const u8 *data, u32 len, int local) {
    Rd rd = {data, data + len};
    g_buflen = len;
    g_maxh = 0;
    u32 nrecs;
    Rec *recs;
    u64 nops = 0;
    Buf ops = {0, 0, 0};
    if (len > 0 && data[0] == 2 && !local) {
        rd.p++;
        nrecs = run_v2(&rd, &recs);
        if (ERR)
            return;
    } else {
        if (len == 0 || data[0] != 1) {
            BAD("batch version is not supported");
            return;
        }
        rd.p++;
        if (!rd_ids(&rd))
            return;
        g_fmap = rd_list(&rd, &g_nf);
        if (ERR || !rd_amap(&rd))
            return;
        recs = rd_recs(&rd, &nrecs);
        if (ERR)
            return;
        nops = rd_var(&rd);
        if (ERR)
            return;
        if (local) {
#ifdef HAVE_CTX
            for (u32 i = 0; i < g_amap.n; i++) {
                int made;
                Node *e = child(T_INV, 0, g_amap.p[i], 0, NOVAL, &made);
                e->x = i; /* the last index wins, as in the dict */
            }
#endif
        }
        ops_loop(&rd, recs, 0, nrecs, nops, local, &ops);
        if (ERR)
            return;
    }
    Buf *o = &g_out;
    o->p = 0;
    o->n = o->cap = 0;
    put_var(o, g_maxh);
    put_var(o, nrecs);
    for (u32 i = 0; i < nrecs; i++)
        encode_blob(&recs[i], o);
    if (local) {
        put_var(o, g_amap.n);
        for (u32 i = 0; i < g_amap.n; i++)
            put_var(o, g_amap.p[i]);
        put_var(o, nops);
        put_bytes(o, ops.p, ops.n);
    }
}

static u32 call(u8 *ptr, u32 len, int local) {
    heap_reset(ptr + len);
    g_status = 0;
    g_msg = 0;
    run(ptr, len, local);
    if (g_status) {
        const char *m = g_msg;
        u32 n = 0;
        while (m[n])
            n++;
        g_result[0] = (u32)(usize)m;
        g_result[1] = n;
    } else {
        g_result[0] = (u32)(usize)g_out.p;
        g_result[1] = g_out.n;
    }
    return g_status;
}

/* ------------------------------------------------------------ exports */

__attribute__((export_name("heap_base"))) u32 heap_base(void) {
    return (u32)(usize)&__heap_base;
}

__attribute__((export_name("result"))) u32 result(void) { return (u32)(usize)g_result; }

__attribute__((export_name("alloc"))) u32 alloc(u32 n) {
    heap_reset(&__heap_base);
    return (u32)(usize)xalloc(n);
}

__attribute__((export_name("apply"))) u32 apply(u8 *ptr, u32 len) { return call(ptr, len, 1); }

__attribute__((export_name("merge"))) u32 merge(u8 *ptr, u32 len) { return call(ptr, len, 0); }
