/*
 * Test double of iphlpapi.dll for netports under Wine (Wine 8 lacks these exports).
 *
 * Built with x86_64-w64-mingw32-gcc by `cargo xtask wine`, copied into the Wine prefix's
 * system32 and loaded "native" (WINEDLLOVERRIDES=iphlpapi=n): netports' production loader
 * (LoadLibraryExW with LOAD_LIBRARY_SEARCH_SYSTEM32) finds it like the real one. Used only by
 * tests; never shipped.
 *
 * Every behaviour follows Microsoft's documentation; the source of each is in
 * docs/SIMULATOR-FIDELITY.md ("Wine doubles"). Where the documents are silent the test chooses
 * (DoubleConfigure*): the Teredo port's byte order, elevation, the endpoint table.
 *
 * Test controls (exported, prefixed "Double"): see iphlpapi.def.
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NO_ERROR_ 0
#define MIB_PARAMETER_NOTIFICATION 0
#define MIB_INITIAL_NOTIFICATION 3
#define AF_INET_ 2
#define AF_INET6_ 23
#define TCP_TABLE_OWNER_PID_LISTENER 3
#define TCP_TABLE_OWNER_PID_ALL 5
#define UDP_TABLE_OWNER_PID 1

typedef VOID (WINAPI *TEREDO_CB)(PVOID context, USHORT port, int type);

/* ---- state ---------------------------------------------------------------------------- */

static CRITICAL_SECTION lock; /* guards everything below except callback execution */

/* Teredo client: running, its port (host order), IPv6 stack present, and how the port is
 * reported (byte order is undocumented: the test chooses). */
static BOOL teredo_running;
static USHORT teredo_port_host;
static BOOL ipv6_stack = TRUE;
static BOOL report_network_order = TRUE;
/* Where the initial notification runs: on the notification thread (default), or on the
 * registering thread before NotifyTeredoPortChange returns. The documents say only
 * "immediately after the registration completes": the test chooses (DoubleInitialInline). */
static BOOL initial_inline;

/* Elevation of the caller (Create/Delete need administrators). */
static BOOL elevated;

/* Persistent reservations. */
typedef struct { int used; int udp; USHORT start; USHORT count; ULONG64 token; } RESV;
static RESV reservations[64];
static ULONG64 next_token = 0x5a00000000000001ULL;

/* The endpoint tables are the real sockets (Wine's own GetExtendedTcpTable /
 * GetExtendedUdpTable, from Wine's builtin iphlpapi copied into system32 as wineiphlp.dll by
 * `cargo xtask wine`), the same sockets the bind probes meet, plus:
 * - sockets Windows would have and Wine does not (the Teredo service's), which a test
 *   declares (DoubleAddEndpoint, DoubleSetTeredoPort);
 * - owners: Wine does not know a socket's owning process (its rows say pid 0), so a test may
 *   name the owner of a port's real sockets (DoubleOwnEndpoint). */
typedef struct { int used; int udp; int v6; USHORT port; DWORD pid; BYTE addr[16]; } ENDPOINT;
static ENDPOINT endpoints[64];
typedef struct { int used; int udp; USHORT port; DWORD pid; } OWNER;
static OWNER owners[64];
typedef DWORD (WINAPI *TABLE_FN)(PVOID, PDWORD, BOOL, ULONG, int, ULONG);

/* Teredo change registrations. */
typedef struct {
    int used;
    DWORD generation;     /* bumped at every registration in this slot */
    TEREDO_CB cb;
    PVOID ctx;
    DWORD running_thread; /* thread inside cb, 0 when none */
    HANDLE idle;          /* manual-reset: set when no callback runs */
} REG;
static REG regs[16];
static DWORD violations; /* CancelMibChangeNotify2 from its own callback (a deadlock on Windows) */

/* The notification thread: one, so invocations are serialized (documented). */
/* An event names its registration by slot and generation, so one queued for a cancelled
 * registration never reaches a later registration that reuses the slot. */
typedef struct EVENT_ { struct EVENT_ *next; int reg; DWORD generation; USHORT port; int type; } EVENT;
static EVENT *queue_head, *queue_tail;
static HANDLE queue_sem;
static HANDLE notifier;

static USHORT as_reported(USHORT host)
{
    return report_network_order ? (USHORT)((host >> 8) | (host << 8)) : host;
}

static DWORD WINAPI notifier_main(LPVOID unused)
{
    (void)unused;
    for (;;) {
        WaitForSingleObject(queue_sem, INFINITE);
        EnterCriticalSection(&lock);
        EVENT *e = queue_head;
        if (e) {
            queue_head = e->next;
            if (!queue_head) queue_tail = NULL;
        }
        REG *r = e ? &regs[e->reg] : NULL;
        if (!r || !r->used || r->generation != e->generation) {
            LeaveCriticalSection(&lock);
            free(e);
            continue;
        }
        TEREDO_CB cb = r->cb;
        PVOID ctx = r->ctx;
        r->running_thread = GetCurrentThreadId();
        ResetEvent(r->idle);
        LeaveCriticalSection(&lock);
        cb(ctx, e->port, e->type);
        EnterCriticalSection(&lock);
        r->running_thread = 0;
        SetEvent(r->idle);
        LeaveCriticalSection(&lock);
        free(e);
    }
    return 0;
}

/* Called with the lock held. */
static void enqueue(int reg, USHORT port, int type)
{
    EVENT *e = calloc(1, sizeof *e);
    if (!e) return;
    e->reg = reg;
    e->generation = regs[reg].generation;
    e->port = port;
    e->type = type;
    if (queue_tail) queue_tail->next = e; else queue_head = e;
    queue_tail = e;
    if (!notifier) notifier = CreateThread(NULL, 0, notifier_main, NULL, 0, NULL);
    ReleaseSemaphore(queue_sem, 1, NULL);
}

BOOL WINAPI DllMain(HINSTANCE inst, DWORD reason, LPVOID reserved)
{
    (void)inst; (void)reserved;
    if (reason == DLL_PROCESS_ATTACH) {
        InitializeCriticalSection(&lock);
        queue_sem = CreateSemaphoreW(NULL, 0, 0x7fffffff, NULL);
        for (int i = 0; i < 16; i++) regs[i].idle = CreateEventW(NULL, TRUE, TRUE, NULL);
        /* The CLI runs (one process per command) configure the double through the
         * environment: NETPORTS_DOUBLE_ELEVATED=1, NETPORTS_DOUBLE_TEREDO=<port>. */
        char buf[32];
        if (GetEnvironmentVariableA("NETPORTS_DOUBLE_ELEVATED", buf, sizeof buf) && buf[0] == '1')
            elevated = TRUE;
        if (GetEnvironmentVariableA("NETPORTS_DOUBLE_TEREDO", buf, sizeof buf)) {
            int p = atoi(buf);
            if (p > 0 && p < 65536) {
                /* The Teredo client runs, and its UDP socket is in the endpoint table (owner
                 * unknown in a CLI run: pid 0). */
                teredo_running = TRUE;
                teredo_port_host = (USHORT)p;
                endpoints[0].used = 1;
                endpoints[0].udp = 1;
                endpoints[0].port = (USHORT)p;
            }
        }
        /* NETPORTS_DOUBLE_ORDER=host: GetTeredoPort reports host order (undocumented). */
        if (GetEnvironmentVariableA("NETPORTS_DOUBLE_ORDER", buf, sizeof buf) && buf[0] == 'h')
            report_network_order = FALSE;
    }
    return TRUE;
}

/* ---- Teredo (netioapi.h) -------------------------------------------------------------- */

DWORD WINAPI GetTeredoPort(USHORT *port)
{
    if (!port) return ERROR_INVALID_PARAMETER;
    EnterCriticalSection(&lock);
    DWORD rc = NO_ERROR_;
    if (!ipv6_stack) rc = ERROR_NOT_SUPPORTED;
    else if (!teredo_running) rc = ERROR_NOT_READY;
    else *port = as_reported(teredo_port_host);
    LeaveCriticalSection(&lock);
    return rc;
}

DWORD WINAPI NotifyTeredoPortChange(TEREDO_CB cb, PVOID ctx, BOOLEAN initial, HANDLE *handle)
{
    if (!cb || !handle) return ERROR_INVALID_PARAMETER;
    EnterCriticalSection(&lock);
    int slot = -1;
    /* A slot whose cancelled registration's callback still runs is not reused: its
     * CancelMibChangeNotify2 is waiting for that callback to return. */
    for (int i = 0; i < 16; i++) if (!regs[i].used && !regs[i].running_thread) { slot = i; break; }
    if (slot < 0) { LeaveCriticalSection(&lock); *handle = NULL; return ERROR_NOT_ENOUGH_MEMORY; }
    regs[slot].used = 1;
    regs[slot].generation++;
    regs[slot].cb = cb;
    regs[slot].ctx = ctx;
    regs[slot].running_thread = 0;
    SetEvent(regs[slot].idle);
    *handle = (HANDLE)(ULONG_PTR)(0x7e00 + slot);
    /* "an initial notification ... immediately after the registration completes": on the
     * notification thread, with Port 0 and MibInitialNotification. */
    if (initial && !initial_inline) enqueue(slot, 0, MIB_INITIAL_NOTIFICATION);
    BOOL inline_now = initial && initial_inline;
    if (inline_now) {
        regs[slot].running_thread = GetCurrentThreadId();
        ResetEvent(regs[slot].idle);
    }
    LeaveCriticalSection(&lock);
    if (inline_now) {
        cb(ctx, 0, MIB_INITIAL_NOTIFICATION);
        EnterCriticalSection(&lock);
        regs[slot].running_thread = 0;
        SetEvent(regs[slot].idle);
        LeaveCriticalSection(&lock);
    }
    return NO_ERROR_;
}

DWORD WINAPI CancelMibChangeNotify2(HANDLE handle)
{
    ULONG_PTR h = (ULONG_PTR)handle;
    /* Documented: ERROR_INVALID_PARAMETER for a NULL handle. Any other unknown handle is
     * undocumented: ERROR_INVALID_HANDLE here. */
    if (!handle) return ERROR_INVALID_PARAMETER;
    if (h < 0x7e00 || h >= 0x7e00 + 16) return ERROR_INVALID_HANDLE;
    int slot = (int)(h - 0x7e00);
    EnterCriticalSection(&lock);
    if (!regs[slot].used) { LeaveCriticalSection(&lock); return ERROR_INVALID_HANDLE; }
    if (regs[slot].running_thread == GetCurrentThreadId()) {
        /* Documented: must not be called from the thread running the callback for this
         * handle (it deadlocks). The double fails the process loudly instead of hanging. */
        violations++;
        LeaveCriticalSection(&lock);
        fprintf(stderr, "iphlpapi double: CancelMibChangeNotify2 called from its own "
                        "notification callback (deadlocks on Windows)\n");
        fflush(stderr);
        ExitProcess(86);
    }
    regs[slot].used = 0; /* no new invocation starts */
    HANDLE idle = regs[slot].idle;
    LeaveCriticalSection(&lock);
    /* Returns only once the callback in flight (if any) has returned. */
    WaitForSingleObject(idle, INFINITE);
    return NO_ERROR_;
}

/* ---- persistent reservations (iphlpapi.h) --------------------------------------------- */

static USHORT ntoh16(USHORT v) { return (USHORT)((v >> 8) | (v << 8)); }

/* Wine's own table function (NULL when it cannot be loaded). */
static TABLE_FN wine_table(int udp)
{
    static HMODULE wine;
    if (!wine) {
        WCHAR path[MAX_PATH];
        UINT n = GetSystemDirectoryW(path, MAX_PATH - 20);
        if (n == 0 || n >= MAX_PATH - 20) return NULL;
        lstrcatW(path, L"\\wineiphlp.dll");
        wine = LoadLibraryW(path);
        if (!wine) return NULL;
    }
    return (TABLE_FN)(void *)GetProcAddress(wine, udp ? "GetExtendedUdpTable" : "GetExtendedTcpTable");
}

/* The real rows of a table (malloc'ed; *n rows of the class's row size), or NULL. */
static BYTE *real_rows(int udp, ULONG af, int cls, DWORD *n)
{
    *n = 0;
    TABLE_FN f = wine_table(udp);
    if (!f) return NULL;
    DWORD size = 4096;
    for (int tries = 0; tries < 8; tries++) {
        BYTE *buf = malloc(size);
        if (!buf) return NULL;
        DWORD want = size;
        DWORD rc = f(buf, &want, FALSE, af, cls, 0);
        if (rc == NO_ERROR_) { memcpy(n, buf, 4); return buf; }
        free(buf);
        if (rc != ERROR_INSUFFICIENT_BUFFER) return NULL;
        size = want + 1024;
    }
    return NULL;
}

static DWORD row_size(int udp, int v6) { return udp ? (v6 ? 28 : 12) : (v6 ? 56 : 24); }
static DWORD port_offset(int udp, int v6) { return udp ? (v6 ? 20 : 4) : (v6 ? 20 : 8); }
static DWORD pid_offset(int udp, int v6) { return udp ? (v6 ? 24 : 8) : (v6 ? 52 : 20); }

/* Called with the lock held: a port of [first, first + count) has a real or declared socket. */
static int port_in_use(int udp, USHORT first, USHORT count)
{
    for (int i = 0; i < 64; i++)
        if (endpoints[i].used && endpoints[i].udp == udp && endpoints[i].port >= first
            && (DWORD)endpoints[i].port < (DWORD)first + count)
            return 1;
    for (int v6 = 0; v6 < 2; v6++) {
        DWORD n = 0;
        BYTE *rows = real_rows(udp, v6 ? AF_INET6_ : AF_INET_, udp ? UDP_TABLE_OWNER_PID : TCP_TABLE_OWNER_PID_ALL, &n);
        int hit = 0;
        for (DWORD i = 0; rows && i < n && !hit; i++) {
            BYTE *r = rows + 4 + i * row_size(udp, v6);
            USHORT port = (USHORT)((r[port_offset(udp, v6)] << 8) | r[port_offset(udp, v6) + 1]);
            hit = port >= first && (DWORD)port < (DWORD)first + count;
        }
        free(rows);
        if (hit) return 1;
    }
    return 0;
}

static ULONG create(int udp, USHORT start_net, USHORT count, ULONG64 *token)
{
    USHORT start = ntoh16(start_net);
    if (!token || start == 0 || count == 0 || (DWORD)start + count > 65536)
        return ERROR_INVALID_PARAMETER;
    EnterCriticalSection(&lock);
    ULONG rc = NO_ERROR_;
    if (!elevated) { rc = ERROR_ACCESS_DENIED; goto out; }
    for (int i = 0; i < 64; i++) {
        RESV *r = &reservations[i];
        if (r->used && r->udp == udp && start <= r->start + r->count - 1
            && r->start <= start + count - 1) { rc = ERROR_SHARING_VIOLATION; goto out; }
    }
    if (port_in_use(udp, start, count)) { rc = ERROR_SHARING_VIOLATION; goto out; }
    rc = ERROR_NOT_ENOUGH_MEMORY;
    for (int i = 0; i < 64; i++) {
        RESV *r = &reservations[i];
        if (!r->used) {
            r->used = 1; r->udp = udp; r->start = start; r->count = count;
            r->token = next_token; next_token += 0x10001;
            *token = r->token;
            rc = NO_ERROR_;
            break;
        }
    }
out:
    LeaveCriticalSection(&lock);
    return rc;
}

static RESV *find(int udp, USHORT start, USHORT count)
{
    for (int i = 0; i < 64; i++) {
        RESV *r = &reservations[i];
        if (r->used && r->udp == udp && r->start == start && r->count == count) return r;
    }
    return NULL;
}

static ULONG delete_(int udp, USHORT start_net, USHORT count)
{
    EnterCriticalSection(&lock);
    ULONG rc = NO_ERROR_;
    RESV *r = find(udp, ntoh16(start_net), count);
    if (!elevated) rc = ERROR_ACCESS_DENIED;
    else if (!r) rc = ERROR_NOT_FOUND;
    else r->used = 0;
    LeaveCriticalSection(&lock);
    return rc;
}

static ULONG lookup(int udp, USHORT start_net, USHORT count, ULONG64 *token)
{
    if (!token) return ERROR_INVALID_PARAMETER;
    EnterCriticalSection(&lock);
    RESV *r = find(udp, ntoh16(start_net), count);
    ULONG rc = r ? NO_ERROR_ : ERROR_NOT_FOUND;
    if (r) *token = r->token;
    LeaveCriticalSection(&lock);
    return rc;
}

ULONG WINAPI CreatePersistentTcpPortReservation(USHORT s, USHORT n, ULONG64 *t) { return create(0, s, n, t); }
ULONG WINAPI CreatePersistentUdpPortReservation(USHORT s, USHORT n, ULONG64 *t) { return create(1, s, n, t); }
ULONG WINAPI DeletePersistentTcpPortReservation(USHORT s, USHORT n) { return delete_(0, s, n); }
ULONG WINAPI DeletePersistentUdpPortReservation(USHORT s, USHORT n) { return delete_(1, s, n); }
ULONG WINAPI LookupPersistentTcpPortReservation(USHORT s, USHORT n, ULONG64 *t) { return lookup(0, s, n, t); }
ULONG WINAPI LookupPersistentUdpPortReservation(USHORT s, USHORT n, ULONG64 *t) { return lookup(1, s, n, t); }

/* ---- endpoint tables (GetExtendedTcpTable / GetExtendedUdpTable) ----------------------- */

/* Row sizes: MIB_TCPROW_OWNER_PID 24, MIB_TCP6ROW_OWNER_PID 56, MIB_UDPROW_OWNER_PID 12,
 * MIB_UDP6ROW_OWNER_PID 28; each table is a DWORD count then the rows (4-aligned). The rows
 * are Wine's real ones (owners named by DoubleOwnEndpoint), then the declared sockets. */
static DWORD table(int udp, PVOID out, PDWORD size, ULONG af, int cls)
{
    if (!size) return ERROR_INVALID_PARAMETER;
    if (af != AF_INET_ && af != AF_INET6_) return ERROR_INVALID_PARAMETER;
    int v6 = af == AF_INET6_;
    DWORD row = row_size(udp, v6);
    DWORD nreal = 0;
    BYTE *real = real_rows(udp, af, cls, &nreal);
    if (!real) return ERROR_NOT_SUPPORTED; /* the tables must show the real sockets */
    EnterCriticalSection(&lock);
    DWORD n = nreal;
    for (int i = 0; i < 64; i++) if (endpoints[i].used && endpoints[i].udp == udp && endpoints[i].v6 == v6) n++;
    DWORD need = 4 + n * row;
    if (!out || *size < need) {
        *size = need;
        LeaveCriticalSection(&lock);
        free(real);
        return ERROR_INSUFFICIENT_BUFFER;
    }
    BYTE *p = out;
    memcpy(p, &n, 4);
    p += 4;
    memcpy(p, real + 4, nreal * row);
    for (DWORD i = 0; i < nreal; i++, p += row) {
        USHORT port = (USHORT)((p[port_offset(udp, v6)] << 8) | p[port_offset(udp, v6) + 1]);
        for (int k = 0; k < 64; k++)
            if (owners[k].used && owners[k].udp == udp && owners[k].port == port)
                memcpy(p + pid_offset(udp, v6), &owners[k].pid, 4);
    }
    free(real);
    for (int i = 0; i < 64; i++) {
        ENDPOINT *e = &endpoints[i];
        if (!e->used || e->udp != udp || e->v6 != v6) continue;
        /* Documented: network byte order in the low 16 bits; "the upper 16 bits may contain
         * uninitialized data" (MIB_TCPROW_LH, MIB_TCP6ROW; silent for the owner-pid and UDP
         * rows, so the double takes the worse choice there too). */
        DWORD port = ntoh16(e->port) | 0xA5C30000u;
        memset(p, 0, row);
        if (!v6 && !udp) {          /* state, local addr, local port, remote addr, remote port, pid */
            DWORD listen = 2;       /* MIB_TCP_STATE_LISTEN */
            memcpy(p, &listen, 4); memcpy(p + 4, e->addr, 4); memcpy(p + 8, &port, 4);
            memcpy(p + 20, &e->pid, 4);
        } else if (v6 && !udp) {    /* local addr[16], scope, port, remote[16], scope, port, state, pid */
            DWORD listen = 2;
            memcpy(p, e->addr, 16); memcpy(p + 20, &port, 4);
            memcpy(p + 48, &listen, 4); memcpy(p + 52, &e->pid, 4);
        } else if (!v6) {           /* local addr, port, pid */
            memcpy(p, e->addr, 4); memcpy(p + 4, &port, 4); memcpy(p + 8, &e->pid, 4);
        } else {                    /* local addr[16], scope, port, pid */
            memcpy(p, e->addr, 16); memcpy(p + 20, &port, 4); memcpy(p + 24, &e->pid, 4);
        }
        p += row;
    }
    LeaveCriticalSection(&lock);
    return NO_ERROR_;
}

DWORD WINAPI GetExtendedTcpTable(PVOID t, PDWORD size, BOOL order, ULONG af, int cls, ULONG reserved)
{
    (void)order;
    if (reserved != 0) return ERROR_INVALID_PARAMETER;
    if (cls != TCP_TABLE_OWNER_PID_LISTENER && cls != TCP_TABLE_OWNER_PID_ALL) return ERROR_INVALID_PARAMETER;
    return table(0, t, size, af, cls);
}

DWORD WINAPI GetExtendedUdpTable(PVOID t, PDWORD size, BOOL order, ULONG af, int cls, ULONG reserved)
{
    (void)order;
    if (reserved != 0) return ERROR_INVALID_PARAMETER;
    if (cls != UDP_TABLE_OWNER_PID) return ERROR_INVALID_PARAMETER;
    return table(1, t, size, af, cls);
}

/* ---- test controls -------------------------------------------------------------------- */

/* Starts, moves or stops (port 0) the Teredo client; every registration is told on the
 * notification thread (MibParameterNotification). The client's UDP endpoint (owner pid
 * `pid`) follows in the UDP table, as the Teredo service's socket would. */
void WINAPI DoubleSetTeredoPort(USHORT port_host, DWORD pid)
{
    EnterCriticalSection(&lock);
    for (int i = 0; i < 64; i++)
        if (endpoints[i].used && endpoints[i].udp && endpoints[i].port == teredo_port_host
            && teredo_running && endpoints[i].pid == pid)
            endpoints[i].used = 0;
    teredo_running = port_host != 0;
    teredo_port_host = port_host;
    if (port_host) {
        for (int i = 0; i < 64; i++) if (!endpoints[i].used) {
            memset(&endpoints[i], 0, sizeof endpoints[i]);
            endpoints[i].used = 1; endpoints[i].udp = 1; endpoints[i].port = port_host; endpoints[i].pid = pid;
            break;
        }
    }
    for (int i = 0; i < 16; i++)
        if (regs[i].used) enqueue(i, port_host ? as_reported(port_host) : 0, MIB_PARAMETER_NOTIFICATION);
    LeaveCriticalSection(&lock);
}

void WINAPI DoubleConfigure(BOOL is_elevated, BOOL has_ipv6, BOOL network_order)
{
    EnterCriticalSection(&lock);
    elevated = is_elevated;
    ipv6_stack = has_ipv6;
    report_network_order = network_order;
    LeaveCriticalSection(&lock);
}

/* Declares an endpoint (host-order port) owned by `pid` in the TCP or UDP table. */
void WINAPI DoubleAddEndpoint(BOOL udp, BOOL v6, USHORT port_host, DWORD pid)
{
    EnterCriticalSection(&lock);
    for (int i = 0; i < 64; i++) if (!endpoints[i].used) {
        memset(&endpoints[i], 0, sizeof endpoints[i]);
        endpoints[i].used = 1; endpoints[i].udp = udp ? 1 : 0; endpoints[i].v6 = v6 ? 1 : 0;
        endpoints[i].port = port_host; endpoints[i].pid = pid;
        break;
    }
    LeaveCriticalSection(&lock);
}

/* Names the owner of the real TCP or UDP sockets on `port_host` (Wine's rows say pid 0). */
void WINAPI DoubleOwnEndpoint(BOOL udp, USHORT port_host, DWORD pid)
{
    EnterCriticalSection(&lock);
    for (int i = 0; i < 64; i++) if (!owners[i].used) {
        owners[i].used = 1; owners[i].udp = udp ? 1 : 0; owners[i].port = port_host; owners[i].pid = pid;
        break;
    }
    LeaveCriticalSection(&lock);
}

/* The initial notification runs on the registering thread, before NotifyTeredoPortChange
 * returns (TRUE), or on the notification thread (FALSE, the default). */
void WINAPI DoubleInitialInline(BOOL on)
{
    EnterCriticalSection(&lock);
    initial_inline = on;
    LeaveCriticalSection(&lock);
}

/* Registrations alive, and CancelMibChangeNotify2 rule violations. */
DWORD WINAPI DoubleRegistrations(void)
{
    EnterCriticalSection(&lock);
    DWORD n = 0;
    for (int i = 0; i < 16; i++) if (regs[i].used) n++;
    LeaveCriticalSection(&lock);
    return n;
}

DWORD WINAPI DoubleViolations(void) { return violations; }
