/* mycelium one-file launcher.
 *
 * The file is this small program followed by a payload: one zstd frame
 * holding a Nuitka standalone folder (packaging/pack.py), then a trailer
 *
 *     u64 payload_offset | u64 payload_size | char id[32] | "MYCPACK1"
 *
 * On start it looks for DIR/ID/.complete, where DIR is $MYCELIUM_BIN_CACHE,
 * else $XDG_CACHE_HOME/mycelium, else ~/.cache/mycelium, and ID the build id
 * (a hash of the payload). If present, it execs DIR/ID/mycelium at once:
 * one stat and one exec, no checksum of the unpacked files, no parent process
 * left waiting (unlike Nuitka's onefile, which CRCs every unpacked file on
 * each start and keeps a bootstrap process alive). If absent, it unpacks into
 * DIR/ID.tmp.PID, writes .complete last, renames the folder into place
 * (another process may win the race: then its copy is used) and execs.
 *
 * The unpacked folder is trusted once complete; `rm -r ~/.cache/mycelium/bin-*`
 * forces a fresh unpack. Payload records, inside the zstd frame:
 *     u16 path_len | path | u32 mode | u64 size | data     (path_len 0 ends)
 * Little-endian. Paths are relative, checked for ".." and leading "/".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <zstd.h>

#define MAGIC "MYCPACK1"
#define TRAILER (8 + 8 + 32 + 8)

static void die(const char *what, const char *arg) {
    fprintf(stderr, "mycelium: %s%s%s: %s\n", what, arg ? " " : "", arg ? arg : "",
            errno ? strerror(errno) : "bad payload");
    exit(9);
}

/* snprintf into a char array, dying rather than truncating a path */
#define PATHF(buf, ...)                                                      \
    do {                                                                     \
        int n_ = snprintf(buf, sizeof buf, __VA_ARGS__);                     \
        if (n_ < 0 || (size_t)n_ >= sizeof buf) {                            \
            errno = ENAMETOOLONG;                                            \
            die("path too long", NULL);                                      \
        }                                                                    \
    } while (0)

static int rm_one(const char *p, const struct stat *st, int type, struct FTW *ftw) {
    (void)st; (void)type; (void)ftw;
    return remove(p);
}

static void rmtree(const char *p) { nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int mkdirs(char *path, mode_t mode) {
    for (char *p = path + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(path, mode) && errno != EEXIST) { *p = '/'; return -1; }
            *p = '/';
        }
    }
    if (mkdir(path, mode) && errno != EEXIST) return -1;
    return 0;
}

/* streaming reader over the zstd frame */
typedef struct {
    FILE *f;
    uint64_t left;              /* compressed bytes not yet read */
    ZSTD_DStream *ds;
    unsigned char *in, *out;
    size_t in_cap, out_cap;
    ZSTD_inBuffer ib;
    size_t out_pos, out_len;
} Reader;

static size_t rd(Reader *r, void *dst, size_t n) {
    size_t got = 0;
    while (got < n) {
        if (r->out_pos < r->out_len) {
            size_t k = r->out_len - r->out_pos;
            if (k > n - got) k = n - got;
            memcpy((char *)dst + got, r->out + r->out_pos, k);
            r->out_pos += k;
            got += k;
            continue;
        }
        if (r->ib.pos == r->ib.size) {
            if (!r->left) break;
            size_t want = r->left < r->in_cap ? (size_t)r->left : r->in_cap;
            size_t k = fread(r->in, 1, want, r->f);
            if (k == 0) break;
            r->left -= k;
            r->ib.src = r->in;
            r->ib.size = k;
            r->ib.pos = 0;
        }
        ZSTD_outBuffer ob = {r->out, r->out_cap, 0};
        size_t rc = ZSTD_decompressStream(r->ds, &ob, &r->ib);
        if (ZSTD_isError(rc)) { errno = 0; die("decompressing the payload", ZSTD_getErrorName(rc)); }
        r->out_pos = 0;
        r->out_len = ob.pos;
    }
    return got;
}

static void unpack(const char *exe, uint64_t off, uint64_t size, const char *dir) {
    Reader r = {0};
    r.f = fopen(exe, "rb");
    if (!r.f) die("opening", exe);
    if (fseeko(r.f, (off_t)off, SEEK_SET)) die("seeking in", exe);
    r.left = size;
    r.ds = ZSTD_createDStream();
    ZSTD_initDStream(r.ds);
    r.in_cap = ZSTD_DStreamInSize();
    r.out_cap = ZSTD_DStreamOutSize();
    r.in = malloc(r.in_cap);
    r.out = malloc(r.out_cap);
    unsigned char *buf = malloc(1 << 20);
    if (!r.ds || !r.in || !r.out || !buf) die("out of memory", NULL);
    char path[PATH_MAX];
    for (;;) {
        unsigned char h[2];
        errno = 0;
        if (rd(&r, h, 2) != 2) die("reading the payload of", exe);
        size_t plen = h[0] | (h[1] << 8);
        if (plen == 0) break;
        char rel[PATH_MAX];
        if (plen >= sizeof rel || rd(&r, rel, plen) != plen) die("reading the payload of", exe);
        rel[plen] = 0;
        if (rel[0] == '/' || strstr(rel, "..")) { errno = 0; die("unsafe path in payload:", rel); }
        unsigned char mh[12];
        if (rd(&r, mh, 12) != 12) die("reading the payload of", exe);
        mode_t mode = (mode_t)(mh[0] | (mh[1] << 8) | (mh[2] << 16) | ((uint32_t)mh[3] << 24));
        uint64_t fsize = le64(mh + 4);
        PATHF(path, "%s/%s", dir, rel);
        char *slash = strrchr(path, '/');
        *slash = 0;
        if (mkdirs(path, 0755)) die("creating", path);
        *slash = '/';
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 0777);
        if (fd < 0) die("creating", path);
        while (fsize) {
            size_t k = fsize < (1 << 20) ? (size_t)fsize : (1 << 20);
            if (rd(&r, buf, k) != k) die("reading the payload of", exe);
            for (size_t w = 0; w < k;) {
                ssize_t n = write(fd, buf + w, k - w);
                if (n < 0) die("writing", path);
                w += (size_t)n;
            }
            fsize -= k;
        }
        if (close(fd)) die("writing", path);
    }
    ZSTD_freeDStream(r.ds);
    fclose(r.f);
    free(buf);
    free(r.in);
    free(r.out);
}

int main(int argc, char **argv) {
    (void)argc;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) die("finding this program (/proc/self/exe)", NULL);
    exe[n] = 0;

    unsigned char t[TRAILER];
    FILE *f = fopen(exe, "rb");
    if (!f) die("opening", exe);
    if (fseeko(f, -(off_t)TRAILER, SEEK_END) || fread(t, 1, TRAILER, f) != TRAILER ||
        memcmp(t + TRAILER - 8, MAGIC, 8)) {
        errno = 0;
        die("no payload in", exe);
    }
    fclose(f);
    uint64_t off = le64(t), size = le64(t + 8);
    char id[33];
    memcpy(id, t + 16, 32);
    id[32] = 0;

    char base[PATH_MAX];
    const char *env = getenv("MYCELIUM_BIN_CACHE");
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (env && *env) PATHF(base, "%s", env);
    else if (xdg && *xdg) PATHF(base, "%s/mycelium", xdg);
    else if (home && *home) PATHF(base, "%s/.cache/mycelium", home);
    else PATHF(base, "/tmp/mycelium-%u", (unsigned)getuid());

    char dir[PATH_MAX], marker[PATH_MAX], target[PATH_MAX];
    PATHF(dir, "%s/bin-%s", base, id);
    PATHF(marker, "%s/.complete", dir);
    PATHF(target, "%s/mycelium", dir);

    if (access(marker, F_OK) != 0) {
        char tmp[PATH_MAX];
        PATHF(tmp, "%s.tmp.%d", dir, (int)getpid());
        if (mkdirs(tmp, 0755)) die("creating", tmp);
        unpack(exe, off, size, tmp);
        char m2[PATH_MAX];
        PATHF(m2, "%s/.complete", tmp);
        int fd = open(m2, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || close(fd)) die("creating", m2);
        if (rename(tmp, dir) != 0 && access(marker, F_OK) != 0) {
            /* a stale folder without its marker (interrupted by hand?): replace it */
            rmtree(dir);
            if (rename(tmp, dir) != 0) die("moving into place", dir);
        } else if (access(tmp, F_OK) == 0) {
            /* another process unpacked it first: use its copy, drop ours */
            rmtree(tmp);
        }
    }
    argv[0] = target;
    execv(target, argv);
    die("starting", target);
    return 9;
}
