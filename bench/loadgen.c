/*
 * loadgen: a chat load generator for bench/run.py (one thread, epoll, loopback only).
 *
 * It knows no protocol.  Each group of clients has a script of "send" and "expect" steps
 * (registration, join, and a readiness marker) and a message template; the marker payload
 * "BQX <sender> <seq> <micros>" is found in whatever the server sends, with memmem over the
 * complete units of input (lines for IRC and line chat, up to the last '>' for XMPP), so the
 * same code measures IRC, line chat and XMPP servers alike.
 *
 * Every delivery is checked per (sender, seq) against a bitset per receiver: nothing lost,
 * nothing duplicated, nothing misrouted.  The send time (CLOCK_MONOTONIC, microseconds since
 * start) travels in the text, so each delivery gives one send-to-receive latency sample.
 *
 * Usage: loadgen CONFIG.  The config (written by run.py) has global keys and groups:
 *
 *   host 127.0.0.1          per_sender 1000         window 8          rate 0
 *   room_size 100           senders_per_room 10     connect_parallel 256
 *   setup_timeout 60        run_timeout 60          settle_ms 300     nick_prefix b
 *   room_prefix r           wait_go 1               hold 1            pad 0
 *   group irc
 *   port 6667
 *   count 100
 *   delim n                 (n: lines; g: '>'-terminated XML)
 *   irc_ping 1              (answer "PING x" with "PONG x")
 *   slow 0                  (1: never read after setup; must be dropped by the server)
 *   rcvbuf 0                (SO_RCVBUF before connect; 0: the kernel's default)
 *   password secret
 *   send NICK %n\r\nUSER %n 0 * :bench\r\n
 *   expect  001
 *   msg PRIVMSG #%r :%m\r\n
 *   end
 *
 * Text after "send ", "expect " and "msg " is taken verbatim up to the end of the line, with
 * the escapes \r \n \t \s (space) \\ and the fields %n (nick), %r (room), %p (password),
 * %B (base64 of "\0nick\0password", for SASL PLAIN), %m (the marker payload, in msg only).
 *
 * Control: on stdout one JSON object per line ({"event": "ready"...}, {"event": "done"...});
 * on stdin "go" starts the messages (when wait_go is 1) and "quit" or EOF ends the hold.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_GROUPS 8
#define MAX_STEPS 32
#define READ_BUF (1 << 20)
#define MAX_CARRY (256 * 1024)
#define LAST_RX 160
#define HIST_US 100000    /* exact microsecond buckets below 100 ms */
#define HIST_MS 1000000   /* then millisecond buckets */
#define MARKER "BQX "
#define MARKER_LEN 4

enum { ST_IDLE, ST_CONNECTING, ST_SETUP, ST_READY, ST_DEAD };

typedef struct {
    char *text;
    size_t len;
    int expect;
} step_t;

typedef struct {
    char name[32];
    int port;
    int count;
    char delim;
    int irc_ping;
    int slow;
    int rcvbuf;
    char password[64];
    step_t steps[MAX_STEPS];
    int nsteps;
    char *msg;
} group_t;

typedef struct client {
    int fd;
    int gidx, grp, room, idx_in_room;
    int state, step;
    int tries; /* connection attempts that failed during setup */
    int sender; /* sender id or -1 */
    int slow;
    int draining; /* a slow client reading what it left unread, after the run */
    int dirty;
    uint32_t events;
    char *carry;
    size_t carry_len;
    char *out;
    size_t out_len, out_off, out_cap;
    /* sender state */
    uint32_t seq_next, outstanding;
    char *pre, *suf;
    size_t pre_len, suf_len;
    /* receiver state: one bit per message of this room's senders */
    uint64_t *seen;
    uint64_t ready_us;
    uint64_t rx_at_ready; /* bytes the kernel had received when the client got ready */
    char lastrx[LAST_RX];
    size_t lastrx_len;
} client_t;

typedef struct {
    int members, nonslow, nsenders;
} room_t;

static struct {
    char host[64];
    uint32_t per_sender;
    uint32_t window;
    double rate;
    int room_size, senders_per_room, connect_parallel;
    double setup_timeout, run_timeout;
    int settle_ms;
    char nick_prefix[16], room_prefix[16];
    int wait_go, hold;
    int pad;     /* filler bytes after the marker payload, for bigger messages */
    int retries; /* new attempts for a client whose connection fails during setup */
    int rx_timestamps; /* latency to the kernel's arrival time (SO_TIMESTAMPNS) */
} cfg = {"127.0.0.1", 100, 8, 0, 100, 1, 256, 60, 60, 300, "b", "r", 1, 1, 0, 5, 0};
static int64_t realtime_offset_ns; /* CLOCK_REALTIME - CLOCK_MONOTONIC */
static uint64_t reader_lag_max;    /* longest wait between arrival and this program's read */
static int *retry_queue;
static int retry_head, retry_tail;
static uint64_t n_retries;
static char *padding;
static int quickack = 1;

static group_t groups[MAX_GROUPS];
static int ngroups;
static client_t *clients;
static int nclients;
static room_t *rooms;
static int nrooms;
static client_t **sender_client;
static uint32_t *sender_slot;
static int nsenders;
static uint32_t *remaining; /* per message: receivers still to get it */
static int epfd;
static uint64_t t0;
static char *rbuf;

/* counters */
static uint64_t n_ready, n_failed, n_connecting, next_to_connect;
static uint64_t sent, completed, deliveries, expected_deliveries, duplicates, misrouted, bad, echoes;
static uint64_t closed_unexpected, slow_disconnected, slow_dropped_in_run, slow_bytes;
static uint64_t t_first_send, t_last_complete, t_run_start;
static uint64_t *hist_us, *hist_ms, lat_max, lat_n;
static double slow_disc_ms[16];
static int running;
static client_t **dirty_list;
static int ndirty;
static uint64_t rate_issued;
static int timer_fd = -1;
static int stdin_open = 1;
static int go_received, quit_received;
static int diag_left = 8;
static uint64_t last_drain_us;

static char STDIN_TAG, TIMER_TAG;

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u - t0;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

static void *xcalloc(size_t n, size_t s) {
    void *p = calloc(n ? n : 1, s ? s : 1);
    if (!p) die("out of memory");
    return p;
}

/* ---- config ------------------------------------------------------------------------- */

static char *unescape(const char *s, size_t *out_len) {
    size_t n = strlen(s);
    char *o = xmalloc(n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[++i];
            o[j++] = c == 'r' ? '\r' : c == 'n' ? '\n' : c == 't' ? '\t' : c == 's' ? ' ' : c;
        } else {
            o[j++] = s[i];
        }
    }
    o[j] = 0;
    *out_len = j;
    return o;
}

static void load_config(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    char line[8192];
    group_t *g = NULL;
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!n || line[0] == '#') continue;
        char *sp = strchr(line, ' ');
        const char *val = sp ? sp + 1 : "";
        if (sp) *sp = 0;
        const char *key = line;
        if (g) {
            size_t len;
            if (!strcmp(key, "end")) {
                g = NULL;
            } else if (!strcmp(key, "port")) {
                g->port = atoi(val);
            } else if (!strcmp(key, "count")) {
                g->count = atoi(val);
            } else if (!strcmp(key, "delim")) {
                g->delim = val[0] == 'g' ? '>' : '\n';
            } else if (!strcmp(key, "irc_ping")) {
                g->irc_ping = atoi(val);
            } else if (!strcmp(key, "slow")) {
                g->slow = atoi(val);
            } else if (!strcmp(key, "rcvbuf")) {
                g->rcvbuf = atoi(val);
            } else if (!strcmp(key, "password")) {
                snprintf(g->password, sizeof g->password, "%s", val);
            } else if (!strcmp(key, "send") || !strcmp(key, "expect")) {
                if (g->nsteps >= MAX_STEPS) die("too many steps");
                step_t *st = &g->steps[g->nsteps++];
                st->text = unescape(val, &len);
                st->len = len;
                st->expect = key[0] == 'e';
            } else if (!strcmp(key, "msg")) {
                g->msg = unescape(val, &len);
            } else {
                die("unknown group key %s", key);
            }
            continue;
        }
        if (!strcmp(key, "group")) {
            if (ngroups >= MAX_GROUPS) die("too many groups");
            g = &groups[ngroups++];
            memset(g, 0, sizeof *g);
            snprintf(g->name, sizeof g->name, "%s", val);
            g->delim = '\n';
        } else if (!strcmp(key, "host")) {
            snprintf(cfg.host, sizeof cfg.host, "%s", val);
        } else if (!strcmp(key, "per_sender")) {
            cfg.per_sender = (uint32_t)strtoul(val, NULL, 10);
        } else if (!strcmp(key, "window")) {
            cfg.window = (uint32_t)strtoul(val, NULL, 10);
        } else if (!strcmp(key, "rate")) {
            cfg.rate = atof(val);
        } else if (!strcmp(key, "room_size")) {
            cfg.room_size = atoi(val);
        } else if (!strcmp(key, "senders_per_room")) {
            cfg.senders_per_room = atoi(val);
        } else if (!strcmp(key, "connect_parallel")) {
            cfg.connect_parallel = atoi(val);
        } else if (!strcmp(key, "setup_timeout")) {
            cfg.setup_timeout = atof(val);
        } else if (!strcmp(key, "run_timeout")) {
            cfg.run_timeout = atof(val);
        } else if (!strcmp(key, "settle_ms")) {
            cfg.settle_ms = atoi(val);
        } else if (!strcmp(key, "nick_prefix")) {
            snprintf(cfg.nick_prefix, sizeof cfg.nick_prefix, "%s", val);
        } else if (!strcmp(key, "room_prefix")) {
            snprintf(cfg.room_prefix, sizeof cfg.room_prefix, "%s", val);
        } else if (!strcmp(key, "wait_go")) {
            cfg.wait_go = atoi(val);
        } else if (!strcmp(key, "hold")) {
            cfg.hold = atoi(val);
        } else if (!strcmp(key, "rx_timestamps")) {
            cfg.rx_timestamps = atoi(val);
        } else if (!strcmp(key, "retries")) {
            cfg.retries = atoi(val);
        } else if (!strcmp(key, "pad")) {
            cfg.pad = atoi(val);
            if (cfg.pad < 0 || cfg.pad > 4000) die("pad out of range");
        } else {
            die("unknown key %s", key);
        }
    }
    fclose(f);
    if (!ngroups) die("no group");
    if (cfg.room_size < 1) cfg.room_size = 1;
    if (cfg.window < 1) cfg.window = 1;
}

/* ---- text expansion ------------------------------------------------------------------ */

static size_t base64(const unsigned char *in, size_t n, char *out) {
    static const char tb[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t j = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[j++] = tb[(v >> 18) & 63];
        out[j++] = tb[(v >> 12) & 63];
        out[j++] = i + 1 < n ? tb[(v >> 6) & 63] : '=';
        out[j++] = i + 2 < n ? tb[v & 63] : '=';
    }
    out[j] = 0;
    return j;
}

static void nick_of(const client_t *c, char *out, size_t cap) {
    snprintf(out, cap, "%s%d", cfg.nick_prefix, c->gidx);
}

static void room_of(const client_t *c, char *out, size_t cap) {
    snprintf(out, cap, "%s%d", cfg.room_prefix, c->room);
}

/* Expand %n %r %p %B in text; stops at %m (returning its offset via *stop) if stop != NULL. */
static size_t expand(const client_t *c, const char *text, size_t len, char *out, size_t cap,
                     size_t *stop) {
    char nick[48], room[48];
    nick_of(c, nick, sizeof nick);
    room_of(c, room, sizeof room);
    const char *pw = groups[c->grp].password;
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        char tmp[256];
        const char *ins = NULL;
        size_t ins_len = 0;
        if (text[i] == '%' && i + 1 < len) {
            char k = text[i + 1];
            if (k == 'n') {
                ins = nick;
            } else if (k == 'r') {
                ins = room;
            } else if (k == 'p') {
                ins = pw;
            } else if (k == 'B') {
                unsigned char raw[160];
                size_t nl = strlen(nick), pl = strlen(pw);
                raw[0] = 0;
                memcpy(raw + 1, nick, nl);
                raw[1 + nl] = 0;
                memcpy(raw + 2 + nl, pw, pl);
                base64(raw, 2 + nl + pl, tmp);
                ins = tmp;
            } else if (k == 'm' && stop) {
                *stop = j;
                i++;
                continue;
            }
            if (ins) {
                ins_len = strlen(ins);
                if (j + ins_len >= cap) die("expansion too long");
                memcpy(out + j, ins, ins_len);
                j += ins_len;
                i++;
                continue;
            }
        }
        if (j + 1 >= cap) die("expansion too long");
        out[j++] = text[i];
    }
    out[j] = 0;
    return j;
}

/* ---- output -------------------------------------------------------------------------- */

static void set_events(client_t *c, uint32_t ev) {
    if (c->events == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl mod: %s", strerror(errno));
    c->events = ev;
}

static uint32_t base_events(const client_t *c) {
    if (c->slow && c->state == ST_READY && !c->draining) return EPOLLRDHUP;
    return EPOLLIN | EPOLLRDHUP;
}

static void out_reserve(client_t *c, size_t more) {
    if (c->out_off && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len + more <= c->out_cap) return;
    if (c->out_off) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_len + more <= c->out_cap) return;
    }
    size_t cap = c->out_cap ? c->out_cap : 1024;
    while (cap < c->out_len + more) cap *= 2;
    c->out = realloc(c->out, cap);
    if (!c->out) die("out of memory");
    c->out_cap = cap;
}

static void out_append(client_t *c, const char *data, size_t len) {
    out_reserve(c, len);
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

static void kill_client(client_t *c, const char *why);

static void flush(client_t *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            kill_client(c, strerror(errno));
            return;
        }
        c->out_off += (size_t)w;
    }
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
        set_events(c, base_events(c));
    } else {
        set_events(c, base_events(c) | EPOLLOUT);
    }
}

/* ---- connections --------------------------------------------------------------------- */

static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 32 || ch > 126) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static uint64_t bytes_received(int fd) {
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) return 0;
    return ti.tcpi_bytes_received;
}

static void kill_client(client_t *c, const char *why) {
    if (c->state == ST_DEAD) return;
    int was = c->state;
    if (c->slow && was == ST_READY) {
        /* Everything the server sent it, read or not (a reset discards the unread part). */
        uint64_t rx = bytes_received(c->fd);
        slow_bytes += rx > c->rx_at_ready ? rx - c->rx_at_ready : 0;
    }
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->state = ST_DEAD;
    if (c->slow && was == ST_READY) {
        if (slow_disconnected < 16)
            slow_disc_ms[slow_disconnected] = (double)(now_us() - t_run_start) / 1000.0;
        slow_disconnected++;
        if (!c->draining) slow_dropped_in_run++;
        return;
    }
    if (was == ST_CONNECTING || was == ST_SETUP) {
        if (n_connecting) n_connecting--;
        if (!running && c->tries < cfg.retries) {
            /* Refused under a burst of connects (a short listen backlog): try again. */
            c->tries++;
            n_retries++;
            c->state = ST_IDLE;
            c->step = 0;
            c->carry_len = 0;
            c->out_len = c->out_off = 0;
            c->lastrx_len = 0;
            retry_queue[retry_tail++ % nclients] = c->gidx;
            return;
        }
        n_failed++;
    } else {
        closed_unexpected++;
    }
    if (diag_left > 0) {
        diag_left--;
        fprintf(stderr, "loadgen: client %d (group %s, state %d, step %d) closed: %s; last input: ",
                c->gidx, groups[c->grp].name, was, c->step, why);
        json_str(stderr, c->lastrx, c->lastrx_len);
        fputc('\n', stderr);
    }
}

static void send_step_text(client_t *c, const step_t *st) {
    char buf[4096];
    size_t n = expand(c, st->text, st->len, buf, sizeof buf, NULL);
    out_append(c, buf, n);
}

static void become_ready(client_t *c) {
    c->state = ST_READY;
    c->ready_us = now_us();
    if (c->slow) c->rx_at_ready = bytes_received(c->fd);
    n_ready++;
    if (n_connecting) n_connecting--;
    set_events(c, base_events(c) | (c->out_off < c->out_len ? EPOLLOUT : 0));
}

/* Run the script as far as the input allows; returns the offset where it stopped reading. */
static size_t run_script(client_t *c, const char *buf, size_t len) {
    const group_t *g = &groups[c->grp];
    size_t off = 0;
    while (c->step < g->nsteps) {
        const step_t *st = &g->steps[c->step];
        if (!st->expect) {
            send_step_text(c, st);
            c->step++;
            continue;
        }
        if (off >= len) break;
        char pat[1024];
        size_t pl = expand(c, st->text, st->len, pat, sizeof pat, NULL);
        const char *p = memmem(buf + off, len - off, pat, pl);
        if (!p) {
            off = len;
            break;
        }
        off = (size_t)(p - buf) + pl;
        c->step++;
    }
    if (c->out_off < c->out_len) flush(c);
    if (c->state == ST_SETUP && c->step >= g->nsteps) become_ready(c);
    return off;
}

static void start_connect(client_t *c) {
    const group_t *g = &groups[c->grp];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (cfg.rx_timestamps) setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    if (g->rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &g->rcvbuf, sizeof g->rcvbuf);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g->port)};
    if (inet_pton(AF_INET, cfg.host, &sa.sin_addr) != 1) die("bad host %s", cfg.host);
    c->fd = fd;
    c->state = ST_CONNECTING;
    n_connecting++;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    c->events = EPOLLOUT;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl add: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
        kill_client(c, strerror(errno));
}

static void connect_more(void) {
    while (n_connecting < (uint64_t)cfg.connect_parallel) {
        if (retry_head < retry_tail)
            start_connect(&clients[retry_queue[retry_head++ % nclients]]);
        else if (next_to_connect < (uint64_t)nclients)
            start_connect(&clients[next_to_connect++]);
        else
            break;
    }
}

/* ---- deliveries ---------------------------------------------------------------------- */

static void record_latency(uint64_t lat) {
    if (lat < HIST_US) hist_us[lat]++;
    else if (lat / 1000 < HIST_MS) hist_ms[lat / 1000]++;
    else hist_ms[HIST_MS - 1]++;
    if (lat > lat_max) lat_max = lat;
    lat_n++;
}

static void mark_dirty(client_t *s) {
    if (!s->dirty) {
        s->dirty = 1;
        dirty_list[ndirty++] = s;
    }
}

static void on_marker(client_t *r, uint64_t sid, uint64_t seq, uint64_t ts, uint64_t now) {
    if (sid >= (uint64_t)nsenders || seq >= cfg.per_sender) {
        bad++;
        return;
    }
    client_t *s = sender_client[sid];
    if (s == r) {
        echoes++;
        return;
    }
    if (s->room != r->room || !r->seen) {
        misrouted++;
        return;
    }
    uint64_t bit = (uint64_t)sender_slot[sid] * cfg.per_sender + seq;
    uint64_t mask = 1ull << (bit & 63);
    if (r->seen[bit >> 6] & mask) {
        duplicates++;
        return;
    }
    r->seen[bit >> 6] |= mask;
    deliveries++;
    record_latency(now >= ts ? now - ts : 0);
    uint64_t mid = sid * cfg.per_sender + seq;
    if (remaining[mid] && --remaining[mid] == 0) {
        completed++;
        t_last_complete = now;
        if (s->outstanding) s->outstanding--;
        mark_dirty(s);
    }
}

static int parse_u64(const char **pp, const char *end, uint64_t *v) {
    const char *p = *pp;
    uint64_t x = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        x = x * 10 + (uint64_t)(*p - '0');
        p++;
        digits++;
    }
    *v = x;
    *pp = p;
    return digits > 0;
}

static int scan_markers(client_t *c, const char *buf, size_t len, uint64_t now) {
    const char *p = buf, *end = buf + len;
    int found = 0;
    while (p < end) {
        const char *m = memmem(p, (size_t)(end - p), MARKER, MARKER_LEN);
        if (!m) break;
        p = m + MARKER_LEN;
        uint64_t sid, seq, ts;
        if (!parse_u64(&p, end, &sid) || p >= end || *p++ != ' ' || !parse_u64(&p, end, &seq) ||
            p >= end || *p++ != ' ' || !parse_u64(&p, end, &ts)) {
            bad++;
            continue;
        }
        on_marker(c, sid, seq, ts, now);
        found++;
    }
    return found;
}

static void answer_pings(client_t *c, const char *buf, size_t len) {
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *m = memmem(p, (size_t)(end - p), "PING ", 5);
        if (!m) break;
        const char *eol = memchr(m, '\n', (size_t)(end - m));
        if (!eol) eol = end;
        if (m == buf || m[-1] == '\n') {
            const char *arg = m + 5;
            const char *stop = eol;
            if (stop > arg && stop[-1] == '\r') stop--;
            out_append(c, "PONG ", 5);
            out_append(c, arg, (size_t)(stop - arg));
            out_append(c, "\r\n", 2);
        }
        p = eol;
    }
    if (c->out_off < c->out_len) flush(c);
}

static void keep_lastrx(client_t *c, const char *buf, size_t len) {
    if (len >= LAST_RX) {
        memcpy(c->lastrx, buf + len - LAST_RX, LAST_RX);
        c->lastrx_len = LAST_RX;
        return;
    }
    size_t keep = c->lastrx_len + len > LAST_RX ? LAST_RX - len : c->lastrx_len;
    memmove(c->lastrx, c->lastrx + c->lastrx_len - keep, keep);
    memcpy(c->lastrx + keep, buf, len);
    c->lastrx_len = keep + len;
}

static void on_readable(client_t *c) {
    size_t have = c->carry_len;
    if (have) memcpy(rbuf, c->carry, have);
    ssize_t r;
    uint64_t arrival = 0;
    if (cfg.rx_timestamps) {
        /* The kernel's arrival time of the data: what the server did, without the time this
         * generator took to get round to reading this socket. */
        struct iovec iov = {.iov_base = rbuf + have, .iov_len = READ_BUF - have};
        union {
            char buf[CMSG_SPACE(sizeof(struct timespec))];
            struct cmsghdr align;
        } ctl;
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                             .msg_controllen = sizeof ctl.buf};
        r = recvmsg(c->fd, &msg, 0);
        if (r > 0) {
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                    int64_t real_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
                    int64_t mono_us = (real_ns - realtime_offset_ns) / 1000 - (int64_t)t0;
                    if (mono_us > 0) arrival = (uint64_t)mono_us;
                }
            }
        }
    } else {
        r = read(c->fd, rbuf + have, READ_BUF - have);
    }
    if (r == 0) {
        kill_client(c, "closed by the server");
        return;
    }
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        kill_client(c, strerror(errno));
        return;
    }
    uint64_t now = now_us();
    if (arrival && arrival <= now) {
        uint64_t lag = now - arrival;
        if (lag > reader_lag_max) reader_lag_max = lag;
        now = arrival;
    }
    if (quickack) {
        /* Answer at once: a delayed ACK would hold back a server that leaves Nagle on. */
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    }
    size_t total = have + (size_t)r;
    if (c->state == ST_SETUP) keep_lastrx(c, rbuf + have, (size_t)r);
    char delim = groups[c->grp].delim;
    const char *last = memrchr(rbuf, delim, total);
    size_t done = last ? (size_t)(last - rbuf) + 1 : 0;
    if (done) {
        size_t off = 0;
        if (c->state == ST_SETUP) off = run_script(c, rbuf, done);
        if (c->state == ST_DEAD) return;
        int markers = off < done ? scan_markers(c, rbuf + off, done - off, now) : 0;
        /* Servers ping idle clients only: skip the second pass over a message burst. */
        if (groups[c->grp].irc_ping && (!running || !markers)) answer_pings(c, rbuf, done);
    }
    size_t rest = total - done;
    if (rest > MAX_CARRY) {
        kill_client(c, "unit of input too long");
        return;
    }
    if (rest) {
        if (rest > c->carry_len || !c->carry) {
            c->carry = realloc(c->carry, rest);
            if (!c->carry) die("out of memory");
        }
        memcpy(c->carry, rbuf + done, rest);
    }
    c->carry_len = rest;
}

static void on_connected(client_t *c) {
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        kill_client(c, strerror(err));
        return;
    }
    c->state = ST_SETUP;
    set_events(c, EPOLLIN | EPOLLRDHUP);
    run_script(c, "", 0);
}

/* ---- sending ------------------------------------------------------------------------- */

static char *put_u64(char *o, uint64_t v) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) *o++ = tmp[--n];
    return o;
}

static void append_message(client_t *s) {
    char mid[80];
    uint64_t now = now_us();
    if (!t_first_send) t_first_send = now ? now : 1;
    char *e = mid;
    memcpy(e, MARKER, MARKER_LEN);
    e = put_u64(e + MARKER_LEN, (uint64_t)s->sender);
    *e++ = ' ';
    e = put_u64(e, s->seq_next);
    *e++ = ' ';
    e = put_u64(e, now);
    int n = (int)(e - mid);
    size_t pad = (size_t)cfg.pad;
    out_reserve(s, s->pre_len + (size_t)n + pad + s->suf_len);
    char *o = s->out + s->out_len;
    memcpy(o, s->pre, s->pre_len);
    o += s->pre_len;
    memcpy(o, mid, (size_t)n);
    o += n;
    if (pad) {
        memcpy(o, padding, pad);
        o += pad;
    }
    memcpy(o, s->suf, s->suf_len);
    o += s->suf_len;
    s->out_len = (size_t)(o - s->out);
    uint64_t id = (uint64_t)s->sender * cfg.per_sender + s->seq_next;
    uint32_t expect = (uint32_t)rooms[s->room].nonslow - 1u;
    remaining[id] = expect;
    expected_deliveries += expect;
    s->seq_next++;
    s->outstanding++;
    sent++;
    if (expect == 0) {
        completed++;
        s->outstanding--;
    }
}

static void refill(client_t *s) {
    if (s->state != ST_READY) return;
    int any = 0;
    while (s->seq_next < cfg.per_sender && s->outstanding < cfg.window) {
        append_message(s);
        any = 1;
    }
    if (any) flush(s);
}

static void rate_tick(void) {
    uint64_t total = (uint64_t)nsenders * cfg.per_sender;
    uint64_t elapsed = now_us() - t_run_start;
    uint64_t due = (uint64_t)((double)elapsed * cfg.rate / 1e6) + 1;
    if (due > total) due = total;
    while (rate_issued < due) {
        client_t *s = sender_client[rate_issued % (uint64_t)nsenders];
        rate_issued++;
        if (s->state != ST_READY || s->seq_next >= cfg.per_sender) continue;
        append_message(s);
        flush(s);
    }
    if (rate_issued < total) {
        uint64_t next = t_run_start + (uint64_t)((double)rate_issued * 1e6 / cfg.rate);
        uint64_t abs_us = next + t0;
        struct itimerspec its = {0};
        its.it_value.tv_sec = (time_t)(abs_us / 1000000u);
        its.it_value.tv_nsec = (long)(abs_us % 1000000u) * 1000;
        timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
    }
}

/* ---- the loop ------------------------------------------------------------------------ */

static void on_stdin(void) {
    char buf[256];
    ssize_t r = read(0, buf, sizeof buf - 1);
    if (r <= 0) {
        stdin_open = 0;
        epoll_ctl(epfd, EPOLL_CTL_DEL, 0, NULL);
        quit_received = 1;
        go_received = 1;
        return;
    }
    buf[r] = 0;
    if (strstr(buf, "go")) go_received = 1;
    if (strstr(buf, "quit")) quit_received = 1;
}

static void poll_once(int timeout_ms) {
    struct epoll_event evs[1024];
    int n = epoll_wait(epfd, evs, 1024, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return;
        die("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) {
        void *tag = evs[i].data.ptr;
        uint32_t ev = evs[i].events;
        if (tag == &STDIN_TAG) {
            on_stdin();
            continue;
        }
        if (tag == &TIMER_TAG) {
            uint64_t x;
            if (read(timer_fd, &x, sizeof x) < 0) { /* spurious */ }
            if (running && cfg.rate > 0) rate_tick();
            continue;
        }
        client_t *c = tag;
        if (c->state == ST_DEAD) continue;
        if (c->state == ST_CONNECTING) {
            if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
            continue;
        }
        if (c->slow && c->state == ST_READY) {
            if (c->draining && (ev & EPOLLIN)) {
                ssize_t r = read(c->fd, rbuf, READ_BUF);
                if (r > 0) {
                    last_drain_us = now_us();
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                kill_client(c, "dropped (slow)");
            } else if (ev & (EPOLLHUP | EPOLLERR)) {
                /* A reset: the server dropped it, discarding what it held. */
                kill_client(c, "dropped (slow)");
            }
            continue;
        }
        if (ev & EPOLLIN) on_readable(c);
        else if (ev & (EPOLLHUP | EPOLLERR)) kill_client(c, "hang-up");
        if (c->state != ST_DEAD && (ev & EPOLLOUT)) flush(c);
    }
    if (ndirty) {
        for (int i = 0; i < ndirty; i++) {
            client_t *s = dirty_list[i];
            s->dirty = 0;
            if (running && cfg.rate <= 0) refill(s);
        }
        ndirty = 0;
    }
}

static uint64_t percentile(double q) {
    if (!lat_n) return 0;
    uint64_t target = (uint64_t)((double)lat_n * q);
    if (target >= lat_n) target = lat_n - 1;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < HIST_US; i++) {
        acc += hist_us[i];
        if (acc > target) return i;
    }
    for (uint64_t i = HIST_US / 1000; i < HIST_MS; i++) {
        acc += hist_ms[i];
        if (acc > target) return i * 1000;
    }
    return lat_max;
}

static void setup_world(void) {
    for (int g = 0; g < ngroups; g++) nclients += groups[g].count;
    if (nclients <= 0) die("no clients");
    clients = xcalloc((size_t)nclients, sizeof *clients);
    nrooms = (nclients + cfg.room_size - 1) / cfg.room_size;
    rooms = xcalloc((size_t)nrooms, sizeof *rooms);
    int gi = 0;
    for (int g = 0; g < ngroups; g++) {
        for (int k = 0; k < groups[g].count; k++, gi++) {
            client_t *c = &clients[gi];
            c->fd = -1;
            c->gidx = gi;
            c->grp = g;
            c->room = gi / cfg.room_size;
            c->idx_in_room = gi % cfg.room_size;
            c->slow = groups[g].slow;
            c->sender = -1;
            room_t *rm = &rooms[c->room];
            rm->members++;
            if (!c->slow) rm->nonslow++;
        }
    }
    /* Senders: senders_per_room spread evenly over each room's members, never a slow one. */
    sender_client = xcalloc((size_t)nclients, sizeof *sender_client);
    sender_slot = xcalloc((size_t)nclients, sizeof *sender_slot);
    int S = cfg.senders_per_room;
    for (int i = 0; i < nclients; i++) {
        client_t *c = &clients[i];
        int size = rooms[c->room].members;
        if (S <= 0 || c->slow || cfg.per_sender == 0) continue;
        int pick = S >= size || ((long)c->idx_in_room * S) % size < S;
        if (!pick) continue;
        c->sender = nsenders;
        sender_client[nsenders] = c;
        sender_slot[nsenders] = (uint32_t)rooms[c->room].nsenders++;
        nsenders++;
    }
    remaining = xcalloc((size_t)nsenders * cfg.per_sender + 1, sizeof *remaining);
    for (int i = 0; i < nclients; i++) {
        client_t *c = &clients[i];
        if (c->slow) continue;
        uint64_t bits = (uint64_t)rooms[c->room].nsenders * cfg.per_sender;
        if (bits) c->seen = xcalloc((size_t)(bits + 63) / 64, sizeof(uint64_t));
        if (c->sender >= 0) {
            const group_t *g = &groups[c->grp];
            if (!g->msg) die("group %s has no msg template", g->name);
            char buf[2048];
            size_t stop = (size_t)-1;
            size_t n = expand(c, g->msg, strlen(g->msg), buf, sizeof buf, &stop);
            if (stop == (size_t)-1) die("msg template of %s lacks %%m", g->name);
            c->pre_len = stop;
            c->pre = xmalloc(stop + 1);
            memcpy(c->pre, buf, stop);
            c->suf_len = n - stop;
            c->suf = xmalloc(c->suf_len + 1);
            memcpy(c->suf, buf + stop, c->suf_len);
        }
    }
    dirty_list = xcalloc((size_t)nclients, sizeof *dirty_list);
    retry_queue = xcalloc((size_t)nclients, sizeof *retry_queue);
    padding = xmalloc((size_t)cfg.pad + 1);
    memset(padding, 'x', (size_t)cfg.pad);
    if (cfg.pad) padding[0] = ' ';
    hist_us = xcalloc(HIST_US, sizeof *hist_us);
    hist_ms = xcalloc(HIST_MS, sizeof *hist_ms);
}

static void raise_fd_limit(void) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)nclients + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (rl.rlim_max < want) rl.rlim_max = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            getrlimit(RLIMIT_NOFILE, &rl);
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: loadgen CONFIG\n");
        return 2;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u - 1;
    load_config(argv[1]);
    {
        /* The offset between the clocks, from the closest of a few readings. */
        int64_t best_gap = INT64_MAX;
        for (int i = 0; i < 20; i++) {
            struct timespec m1, rt, m2;
            clock_gettime(CLOCK_MONOTONIC, &m1);
            clock_gettime(CLOCK_REALTIME, &rt);
            clock_gettime(CLOCK_MONOTONIC, &m2);
            int64_t a = (int64_t)m1.tv_sec * 1000000000 + m1.tv_nsec;
            int64_t b = (int64_t)m2.tv_sec * 1000000000 + m2.tv_nsec;
            int64_t r = (int64_t)rt.tv_sec * 1000000000 + rt.tv_nsec;
            if (b - a < best_gap) {
                best_gap = b - a;
                realtime_offset_ns = r - (a + b) / 2;
            }
        }
    }
    if (getenv("LOADGEN_NO_QUICKACK")) quickack = 0;
    setup_world();
    raise_fd_limit();
    setvbuf(stdout, NULL, _IOLBF, 0);
    rbuf = xmalloc(READ_BUF);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1: %s", strerror(errno));
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &STDIN_TAG};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &e) < 0) stdin_open = 0;
    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event te = {.events = EPOLLIN, .data.ptr = &TIMER_TAG};
    epoll_ctl(epfd, EPOLL_CTL_ADD, timer_fd, &te);

    /* Phase 1: connect and register everyone. */
    uint64_t t_setup = now_us();
    uint64_t setup_deadline = t_setup + (uint64_t)(cfg.setup_timeout * 1e6);
    connect_more();
    while (n_ready + n_failed < (uint64_t)nclients && now_us() < setup_deadline) {
        poll_once(50);
        connect_more();
    }
    uint64_t t_registered = now_us();
    double connect_s = (double)(t_registered - t_setup) / 1e6;
    /* Let the join notices and name lists drain before the clock starts. */
    uint64_t settle_end = now_us() + (uint64_t)cfg.settle_ms * 1000u;
    while (now_us() < settle_end) poll_once(10);
    uint64_t stuck = (uint64_t)nclients - n_ready - n_failed;
    printf("{\"event\": \"ready\", \"clients\": %d, \"ready\": %llu, \"failed\": %llu, "
           "\"stuck\": %llu, \"closed\": %llu, \"retries\": %llu, \"senders\": %d, "
           "\"rooms\": %d, \"connect_s\": %.6f, \"connect_per_s\": %.1f}\n",
           nclients, (unsigned long long)n_ready, (unsigned long long)n_failed,
           (unsigned long long)stuck, (unsigned long long)closed_unexpected,
           (unsigned long long)n_retries, nsenders, nrooms,
           connect_s, connect_s > 0 ? (double)n_ready / connect_s : 0.0);
    if (n_ready + slow_disconnected < (uint64_t)nclients) {
        for (int i = 0; i < nclients && diag_left > 0; i++) {
            client_t *c = &clients[i];
            if (c->state == ST_SETUP || c->state == ST_CONNECTING) {
                diag_left--;
                fprintf(stderr, "loadgen: client %d stuck at step %d; last input: ", i, c->step);
                json_str(stderr, c->lastrx, c->lastrx_len);
                fputc('\n', stderr);
            }
        }
        return 1;
    }
    if (cfg.wait_go) {
        while (!go_received) poll_once(100);
    }

    /* Phase 2: the messages. */
    running = 1;
    t_run_start = now_us();
    uint64_t total = (uint64_t)nsenders * cfg.per_sender;
    uint64_t run_deadline = t_run_start + (uint64_t)(cfg.run_timeout * 1e6);
    if (cfg.rate > 0) {
        if (total) rate_tick();
    } else {
        for (int i = 0; i < nsenders; i++) refill(sender_client[i]);
    }
    int timed_out = 0;
    while (completed < total) {
        if (now_us() > run_deadline) {
            timed_out = 1;
            break;
        }
        poll_once(50);
    }
    running = 0;
    uint64_t t_end = t_last_complete > t_first_send ? t_last_complete : now_us();
    double elapsed = t_first_send ? (double)(t_end - t_first_send) / 1e6 : 0.0;
    /* A slow reader must have been dropped once its backlog passed the server's limit.  A
     * server that closes with FIN (not RST) queues the FIN behind the data the reader never
     * took, so read it all now: a dropped reader then sees the end of the stream, one still
     * connected just stops receiving. */
    uint64_t nslow = 0;
    for (int i = 0; i < nclients; i++) {
        client_t *c = &clients[i];
        if (!c->slow) continue;
        nslow++;
        if (c->state == ST_READY) {
            c->draining = 1;
            set_events(c, EPOLLIN | EPOLLRDHUP);
        }
    }
    last_drain_us = now_us();
    uint64_t drain_deadline = now_us() + 15000000u;
    while (slow_disconnected < nslow && now_us() < drain_deadline &&
           now_us() - last_drain_us < 1500000u)
        poll_once(20);
    for (int i = 0; i < nclients; i++) {
        /* A slow reader still connected: count what the server sent it all the same. */
        client_t *c = &clients[i];
        if (c->slow && c->state == ST_READY) {
            uint64_t rx = bytes_received(c->fd);
            slow_bytes += rx > c->rx_at_ready ? rx - c->rx_at_ready : 0;
        }
    }
    uint64_t lost = expected_deliveries > deliveries ? expected_deliveries - deliveries : 0;
    printf("{\"event\": \"done\", \"senders\": %d, \"messages\": %llu, \"sent\": %llu, "
           "\"completed\": %llu, \"expected_deliveries\": %llu, \"deliveries\": %llu, "
           "\"lost\": %llu, \"duplicates\": %llu, \"misrouted\": %llu, \"bad\": %llu, "
           "\"echoes\": %llu, \"closed\": %llu, \"timeout\": %s, \"elapsed_s\": %.6f, "
           "\"deliveries_per_s\": %.1f, \"messages_per_s\": %.1f, "
           "\"latency_us\": {\"n\": %llu, \"p50\": %llu, \"p90\": %llu, \"p99\": %llu, "
           "\"max\": %llu}, \"slow_clients\": %llu, \"slow_disconnected\": %llu, "
           "\"slow_reset_in_run\": %llu, \"slow_bytes_received\": %llu, \"rx_timestamps\": %d, "
           "\"reader_lag_max_us\": %llu, \"slow_disconnect_ms\": [",
           nsenders, (unsigned long long)total, (unsigned long long)sent,
           (unsigned long long)completed, (unsigned long long)expected_deliveries,
           (unsigned long long)deliveries, (unsigned long long)lost,
           (unsigned long long)duplicates, (unsigned long long)misrouted,
           (unsigned long long)bad, (unsigned long long)echoes,
           (unsigned long long)closed_unexpected, timed_out ? "true" : "false", elapsed,
           elapsed > 0 ? (double)deliveries / elapsed : 0.0,
           elapsed > 0 ? (double)completed / elapsed : 0.0, (unsigned long long)lat_n,
           (unsigned long long)percentile(0.50), (unsigned long long)percentile(0.90),
           (unsigned long long)percentile(0.99), (unsigned long long)lat_max,
           (unsigned long long)nslow, (unsigned long long)slow_disconnected,
           (unsigned long long)slow_dropped_in_run, (unsigned long long)slow_bytes,
           cfg.rx_timestamps, (unsigned long long)reader_lag_max);
    for (uint64_t i = 0; i < slow_disconnected && i < 16; i++)
        printf("%s%.1f", i ? ", " : "", slow_disc_ms[i]);
    printf("]}\n");

    /* Phase 3: hold the connections (for memory readings) until told to quit. */
    if (cfg.hold) {
        uint64_t hold_deadline = now_us() + 600u * 1000000u;
        while (!quit_received && stdin_open && now_us() < hold_deadline) poll_once(100);
    }
    return timed_out || lost || duplicates || misrouted ? 3 : 0;
}
