/*
 * Test double of fwpuclnt.dll (user-mode WFP management) for netports under Wine, which
 * lacks the system-ports functions and has no filter engine.
 *
 * Loaded like iphlpapi.c's double (native override in the prefix's system32). Models a
 * filter engine of one process: sessions (dynamic sessions delete their objects when they
 * close), providers, sublayers and filters with the validation netports' host Teredo filters
 * depend on, and the system-ports list with change subscriptions delivered on another
 * thread. Sources: docs/SIMULATOR-FIDELITY.md ("Wine doubles").
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <fwpmtypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FWP_E_ALREADY_EXISTS_ 0x80320009u
#define FWP_E_FILTER_NOT_FOUND_ 0x80320003u
#define FWP_E_PROVIDER_NOT_FOUND_ 0x80320005u
#define FWP_E_SUBLAYER_NOT_FOUND_ 0x80320007u
#define FWP_E_LAYER_NOT_FOUND_ 0x80320004u
#define FWP_E_INVALID_PARAMETER_ 0x80320035u
#define FWP_E_NULL_POINTER_ 0x8032001Cu
#define FWP_E_INVALID_ENUMERATOR_ 0x8032001Du
#define RPC_C_AUTHN_WINNT_ 10
#define RPC_C_AUTHN_DEFAULT_ 0xffffffffu
#define SESSION_FLAG_DYNAMIC 0x1

typedef VOID (WINAPI *PORTS_CB)(void *context, const FWPM_SYSTEM_PORTS0 *ports);

static CRITICAL_SECTION lock;
static BOOL elevated;
static BOOL report_network_order = FALSE;
static USHORT teredo_host; /* 0: no Teredo entry */

typedef struct { int used; int dynamic; } SESSION;
static SESSION sessions[16];

typedef struct { int used; int session; GUID key; } OBJ; /* provider or sublayer */
static OBJ providers[16], sublayers[16];

typedef struct {
    int used; int session; UINT64 id; GUID layer; GUID sublayer; UINT16 port; UINT8 proto;
    FWP_ACTION_TYPE action;
} FILTER;
static FILTER filters[64];
static UINT64 next_filter_id = 70000;

typedef struct { int used; PORTS_CB cb; void *ctx; DWORD running_thread; HANDLE idle; } SUB;
static SUB subs[16];
static HANDLE queue_sem, notifier;
static LONG pending[16];

/* Layer and condition GUIDs (fwpmu.h values). */
static const GUID ALE_AUTH_RECV_ACCEPT_V4 = {0xe1cd9fe7, 0xf4b5, 0x4273, {0x96, 0xc0, 0x59, 0x2e, 0x48, 0x7b, 0x86, 0x50}};
static const GUID ALE_AUTH_RECV_ACCEPT_V6 = {0xa3b42c97, 0x9f04, 0x4672, {0xb8, 0x7e, 0xce, 0xe9, 0xc4, 0x83, 0x25, 0x7f}};
static const GUID COND_IP_LOCAL_PORT = {0x0c1ba1af, 0x5765, 0x453f, {0xaf, 0x22, 0xa8, 0xf7, 0x91, 0xac, 0x77, 0x5b}};
static const GUID COND_IP_PROTOCOL = {0x3971ef2b, 0x623e, 0x4f9a, {0x8c, 0xb1, 0x6e, 0x79, 0xb8, 0x06, 0xb9, 0xa7}};

static int session_of(HANDLE h)
{
    ULONG_PTR v = (ULONG_PTR)h;
    if (v < 0x5e00 || v >= 0x5e00 + 16) return -1;
    int s = (int)(v - 0x5e00);
    return sessions[s].used ? s : -1;
}

static USHORT swap16(USHORT v) { return (USHORT)((v >> 8) | (v << 8)); }

static FWPM_SYSTEM_PORTS0 *build_ports(void)
{
    /* One allocation: header, two types, their ports (RPC 135; Teredo if running). */
    size_t size = sizeof(FWPM_SYSTEM_PORTS0) + 2 * sizeof(FWPM_SYSTEM_PORTS_BY_TYPE0) + 4 * sizeof(UINT16);
    BYTE *mem = calloc(1, size);
    if (!mem) return NULL;
    FWPM_SYSTEM_PORTS0 *list = (FWPM_SYSTEM_PORTS0 *)mem;
    FWPM_SYSTEM_PORTS_BY_TYPE0 *types = (FWPM_SYSTEM_PORTS_BY_TYPE0 *)(list + 1);
    UINT16 *ports = (UINT16 *)(types + 2);
    list->types = types;
    list->numTypes = 1;
    types[0].type = FWPM_SYSTEM_PORT_RPC_EPMAP;
    types[0].numPorts = 1;
    ports[0] = report_network_order ? swap16(135) : 135;
    types[0].ports = &ports[0];
    if (teredo_host) {
        list->numTypes = 2;
        types[1].type = FWPM_SYSTEM_PORT_TEREDO;
        types[1].numPorts = 1;
        ports[1] = report_network_order ? swap16(teredo_host) : teredo_host;
        types[1].ports = &ports[1];
    }
    return list;
}

static DWORD WINAPI notifier_main(LPVOID unused)
{
    (void)unused;
    for (;;) {
        WaitForSingleObject(queue_sem, INFINITE);
        for (int i = 0; i < 16; i++) {
            EnterCriticalSection(&lock);
            if (pending[i] == 0 || !subs[i].used) { pending[i] = 0; LeaveCriticalSection(&lock); continue; }
            pending[i] = 0;
            FWPM_SYSTEM_PORTS0 *list = build_ports();
            PORTS_CB cb = subs[i].cb;
            void *ctx = subs[i].ctx;
            subs[i].running_thread = GetCurrentThreadId();
            ResetEvent(subs[i].idle);
            LeaveCriticalSection(&lock);
            if (list) cb(ctx, list);
            free(list);
            EnterCriticalSection(&lock);
            subs[i].running_thread = 0;
            SetEvent(subs[i].idle);
            LeaveCriticalSection(&lock);
        }
    }
    return 0;
}

BOOL WINAPI DllMain(HINSTANCE inst, DWORD reason, LPVOID reserved)
{
    (void)inst; (void)reserved;
    if (reason == DLL_PROCESS_ATTACH) {
        InitializeCriticalSection(&lock);
        queue_sem = CreateSemaphoreW(NULL, 0, 0x7fffffff, NULL);
        for (int i = 0; i < 16; i++) subs[i].idle = CreateEventW(NULL, TRUE, TRUE, NULL);
        char buf[32];
        if (GetEnvironmentVariableA("NETPORTS_DOUBLE_ELEVATED", buf, sizeof buf) && buf[0] == '1')
            elevated = TRUE;
        if (GetEnvironmentVariableA("NETPORTS_DOUBLE_TEREDO", buf, sizeof buf)) {
            int p = atoi(buf);
            if (p > 0 && p < 65536) teredo_host = (USHORT)p;
        }
    }
    return TRUE;
}

/* ---- sessions --------------------------------------------------------------------------- */

DWORD WINAPI FwpmEngineOpen0(const wchar_t *server, UINT32 authn, void *identity,
                             const FWPM_SESSION0 *session, HANDLE *engine)
{
    (void)identity;
    if (!engine) return FWP_E_NULL_POINTER_;
    if (server) return ERROR_INVALID_PARAMETER; /* local engine only in this double */
    if (authn != RPC_C_AUTHN_WINNT_ && authn != RPC_C_AUTHN_DEFAULT_) return ERROR_INVALID_PARAMETER;
    EnterCriticalSection(&lock);
    DWORD rc = ERROR_NOT_ENOUGH_MEMORY;
    for (int i = 0; i < 16; i++) if (!sessions[i].used) {
        sessions[i].used = 1;
        sessions[i].dynamic = session && (session->flags & SESSION_FLAG_DYNAMIC);
        *engine = (HANDLE)(ULONG_PTR)(0x5e00 + i);
        rc = ERROR_SUCCESS;
        break;
    }
    LeaveCriticalSection(&lock);
    return rc;
}

DWORD WINAPI FwpmEngineClose0(HANDLE engine)
{
    EnterCriticalSection(&lock);
    int s = session_of(engine);
    if (s < 0) { LeaveCriticalSection(&lock); return ERROR_INVALID_HANDLE; }
    if (sessions[s].dynamic) {
        /* FWPM_SESSION_FLAG_DYNAMIC: objects added in the session are deleted at its end. */
        for (int i = 0; i < 64; i++) if (filters[i].used && filters[i].session == s) filters[i].used = 0;
        for (int i = 0; i < 16; i++) if (sublayers[i].used && sublayers[i].session == s) sublayers[i].used = 0;
        for (int i = 0; i < 16; i++) if (providers[i].used && providers[i].session == s) providers[i].used = 0;
    }
    sessions[s].used = 0;
    LeaveCriticalSection(&lock);
    return ERROR_SUCCESS;
}

DWORD WINAPI FwpmFreeMemory0(void **p)
{
    if (p && *p) { free(*p); *p = NULL; }
    return ERROR_SUCCESS;
}

/* ---- providers, sublayers, filters ------------------------------------------------------ */

static DWORD add_obj(OBJ *table, HANDLE engine, const GUID *key)
{
    EnterCriticalSection(&lock);
    int s = session_of(engine);
    DWORD rc = ERROR_SUCCESS;
    if (s < 0) { rc = ERROR_INVALID_HANDLE; goto out; }
    if (!elevated) { rc = ERROR_ACCESS_DENIED; goto out; }
    for (int i = 0; i < 16; i++)
        if (table[i].used && IsEqualGUID(&table[i].key, key)) { rc = FWP_E_ALREADY_EXISTS_; goto out; }
    rc = ERROR_NOT_ENOUGH_MEMORY;
    for (int i = 0; i < 16; i++) if (!table[i].used) {
        table[i].used = 1; table[i].session = s; table[i].key = *key; rc = ERROR_SUCCESS; break;
    }
out:
    LeaveCriticalSection(&lock);
    return rc;
}

static int has_obj(OBJ *table, const GUID *key)
{
    for (int i = 0; i < 16; i++) if (table[i].used && IsEqualGUID(&table[i].key, key)) return 1;
    return 0;
}

DWORD WINAPI FwpmProviderAdd0(HANDLE engine, const FWPM_PROVIDER0 *provider, void *sd)
{
    (void)sd;
    if (!provider) return FWP_E_NULL_POINTER_;
    return add_obj(providers, engine, &provider->providerKey);
}

DWORD WINAPI FwpmSubLayerAdd0(HANDLE engine, const FWPM_SUBLAYER0 *sublayer, void *sd)
{
    (void)sd;
    if (!sublayer) return FWP_E_NULL_POINTER_;
    EnterCriticalSection(&lock);
    int ok = !sublayer->providerKey || has_obj(providers, sublayer->providerKey);
    LeaveCriticalSection(&lock);
    if (!ok) return FWP_E_PROVIDER_NOT_FOUND_;
    return add_obj(sublayers, engine, &sublayer->subLayerKey);
}

DWORD WINAPI FwpmFilterAdd0(HANDLE engine, const FWPM_FILTER0 *filter, void *sd, UINT64 *id)
{
    (void)sd;
    if (!filter) return FWP_E_NULL_POINTER_;
    EnterCriticalSection(&lock);
    int s = session_of(engine);
    DWORD rc = ERROR_SUCCESS;
    if (s < 0) { rc = ERROR_INVALID_HANDLE; goto out; }
    if (!elevated) { rc = ERROR_ACCESS_DENIED; goto out; }
    if (!IsEqualGUID(&filter->layerKey, &ALE_AUTH_RECV_ACCEPT_V4)
        && !IsEqualGUID(&filter->layerKey, &ALE_AUTH_RECV_ACCEPT_V6)) { rc = FWP_E_LAYER_NOT_FOUND_; goto out; }
    if (!has_obj(sublayers, &filter->subLayerKey)) { rc = FWP_E_SUBLAYER_NOT_FOUND_; goto out; }
    if (filter->providerKey && !has_obj(providers, filter->providerKey)) { rc = FWP_E_PROVIDER_NOT_FOUND_; goto out; }
    if (filter->action.type != FWP_ACTION_PERMIT && filter->action.type != FWP_ACTION_BLOCK) { rc = FWP_E_INVALID_ENUMERATOR_; goto out; }
    if (filter->numFilterConditions && !filter->filterCondition) { rc = FWP_E_NULL_POINTER_; goto out; }
    UINT16 port = 0; UINT8 proto = 0;
    for (UINT32 i = 0; i < filter->numFilterConditions; i++) {
        const FWPM_FILTER_CONDITION0 *c = &filter->filterCondition[i];
        if (IsEqualGUID(&c->fieldKey, &COND_IP_LOCAL_PORT)) {
            if (c->conditionValue.type != FWP_UINT16 || c->matchType != FWP_MATCH_EQUAL) { rc = FWP_E_INVALID_PARAMETER_; goto out; }
            port = c->conditionValue.uint16;
        } else if (IsEqualGUID(&c->fieldKey, &COND_IP_PROTOCOL)) {
            if (c->conditionValue.type != FWP_UINT8 || c->matchType != FWP_MATCH_EQUAL) { rc = FWP_E_INVALID_PARAMETER_; goto out; }
            proto = c->conditionValue.uint8;
        } else { rc = FWP_E_INVALID_PARAMETER_; goto out; }
    }
    rc = ERROR_NOT_ENOUGH_MEMORY;
    for (int i = 0; i < 64; i++) if (!filters[i].used) {
        FILTER *f = &filters[i];
        f->used = 1; f->session = s; f->id = next_filter_id++; f->layer = filter->layerKey;
        f->sublayer = filter->subLayerKey; f->port = port; f->proto = proto; f->action = filter->action.type;
        if (id) *id = f->id;
        rc = ERROR_SUCCESS;
        break;
    }
out:
    LeaveCriticalSection(&lock);
    return rc;
}

DWORD WINAPI FwpmFilterDeleteById0(HANDLE engine, UINT64 id)
{
    EnterCriticalSection(&lock);
    DWORD rc = FWP_E_FILTER_NOT_FOUND_;
    if (session_of(engine) < 0) rc = ERROR_INVALID_HANDLE;
    else if (!elevated) rc = ERROR_ACCESS_DENIED;
    else for (int i = 0; i < 64; i++) if (filters[i].used && filters[i].id == id) { filters[i].used = 0; rc = ERROR_SUCCESS; break; }
    LeaveCriticalSection(&lock);
    return rc;
}

/* ---- system ports ------------------------------------------------------------------------- */

DWORD WINAPI FwpmSystemPortsGet0(HANDLE engine, FWPM_SYSTEM_PORTS0 **ports)
{
    /* engineHandle is optional (documented). */
    if (!ports) return FWP_E_NULL_POINTER_;
    EnterCriticalSection(&lock);
    if (engine && session_of(engine) < 0) { LeaveCriticalSection(&lock); return ERROR_INVALID_HANDLE; }
    *ports = build_ports();
    LeaveCriticalSection(&lock);
    return *ports ? ERROR_SUCCESS : ERROR_NOT_ENOUGH_MEMORY;
}

DWORD WINAPI FwpmSystemPortsSubscribe0(HANDLE engine, void *reserved, PORTS_CB cb, void *ctx, HANDLE *handle)
{
    if (reserved) return ERROR_INVALID_PARAMETER;
    if (!cb || !handle) return FWP_E_NULL_POINTER_;
    EnterCriticalSection(&lock);
    DWORD rc = ERROR_NOT_ENOUGH_MEMORY;
    if (engine && session_of(engine) < 0) { rc = ERROR_INVALID_HANDLE; goto out; }
    /* A slot whose ended subscription's callback still runs is not reused (its unsubscribe
     * waits for that callback). */
    for (int i = 0; i < 16; i++) if (!subs[i].used && !subs[i].running_thread) {
        subs[i].used = 1; subs[i].cb = cb; subs[i].ctx = ctx; pending[i] = 0;
        SetEvent(subs[i].idle);
        *handle = (HANDLE)(ULONG_PTR)(0x6e00 + i);
        if (!notifier) notifier = CreateThread(NULL, 0, notifier_main, NULL, 0, NULL);
        rc = ERROR_SUCCESS;
        break;
    }
out:
    LeaveCriticalSection(&lock);
    return rc;
}

DWORD WINAPI FwpmSystemPortsUnsubscribe0(HANDLE engine, HANDLE handle)
{
    ULONG_PTR h = (ULONG_PTR)handle;
    if (h < 0x6e00 || h >= 0x6e00 + 16) return ERROR_INVALID_HANDLE;
    int i = (int)(h - 0x6e00);
    EnterCriticalSection(&lock);
    if ((engine && session_of(engine) < 0) || !subs[i].used) { LeaveCriticalSection(&lock); return ERROR_INVALID_HANDLE; }
    if (subs[i].running_thread == GetCurrentThreadId()) {
        /* Undocumented for this function; the double takes the CancelMibChangeNotify2 rule
         * (the worse choice): fail loudly instead of deadlocking. */
        LeaveCriticalSection(&lock);
        fprintf(stderr, "fwpuclnt double: FwpmSystemPortsUnsubscribe0 called from its own callback\n");
        fflush(stderr);
        ExitProcess(86);
    }
    subs[i].used = 0;
    HANDLE idle = subs[i].idle;
    LeaveCriticalSection(&lock);
    WaitForSingleObject(idle, INFINITE);
    return ERROR_SUCCESS;
}

/* ---- test controls -------------------------------------------------------------------------- */

void WINAPI DoubleFwpConfigure(BOOL is_elevated, BOOL network_order)
{
    EnterCriticalSection(&lock);
    elevated = is_elevated;
    report_network_order = network_order;
    LeaveCriticalSection(&lock);
}

/* Moves the Teredo entry (0 removes it) and notifies every subscription on another thread. */
void WINAPI DoubleFwpSetTeredoPort(USHORT port_host)
{
    EnterCriticalSection(&lock);
    teredo_host = port_host;
    for (int i = 0; i < 16; i++) if (subs[i].used) pending[i] = 1;
    LeaveCriticalSection(&lock);
    ReleaseSemaphore(queue_sem, 1, NULL);
}

/* Writes up to `max` permit filters as (layer index 4 or 6) << 24 | proto << 16 | port;
 * returns how many filters exist. */
DWORD WINAPI DoubleFwpFilters(DWORD *out, DWORD max)
{
    EnterCriticalSection(&lock);
    DWORD n = 0;
    for (int i = 0; i < 64; i++) if (filters[i].used && filters[i].action == FWP_ACTION_PERMIT) {
        DWORD layer = IsEqualGUID(&filters[i].layer, &ALE_AUTH_RECV_ACCEPT_V4) ? 4 : 6;
        if (out && n < max) out[n] = layer << 24 | (DWORD)filters[i].proto << 16 | filters[i].port;
        n++;
    }
    LeaveCriticalSection(&lock);
    return n;
}

DWORD WINAPI DoubleFwpSubscriptions(void)
{
    EnterCriticalSection(&lock);
    DWORD n = 0;
    for (int i = 0; i < 16; i++) if (subs[i].used) n++;
    LeaveCriticalSection(&lock);
    return n;
}
