/*
 * Test double of fwpuclnt.dll (user-mode WFP management) for netports under Wine, which
 * lacks the system-ports functions and has no filter engine.
 *
 * Loaded like iphlpapi.c's double (native override in the prefix's system32). Models the
 * filter engine (BFE) of one process as Microsoft documents it, where netports depends on it:
 * - sessions; a dynamic session's objects are deleted when it ends ("Object Management");
 * - object lifetimes: a dynamic object may be referenced only from its own session (a
 *   reference from another session, or from a static object, is FWP_E_LIFETIME_MISMATCH: "The
 *   call tried to associate two objects with incompatible lifetimes", WFP Error Codes);
 * - transactions: FwpmTransactionBegin0/Commit0/Abort0, one per session (FWP_E_TXN_IN_PROGRESS,
 *   FWP_E_NO_TXN_IN_PROGRESS), an abort rolls every change back, a session that ends aborts its
 *   transaction; the transaction lock is engine-wide, and another session's change while it is
 *   held fails with FWP_E_TIMEOUT (the worse reading of "waits ... txnWaitTimeoutInMSec");
 * - providers, sublayers and filters with the validation netports depends on, and the
 *   application id of FwpmGetAppIdFromFileName0;
 * - the system-ports list, with change subscriptions delivered on another thread;
 * - a BFE stop (DoubleFwpBfe): every session is aborted (FWP_E_SESSION_ABORTED until closed),
 *   every object and subscription is gone, and the engine cannot be opened until BFE runs
 *   again.
 * Sources and the choices made where the documents are silent: docs/SIMULATOR-FIDELITY.md
 * ("Wine doubles").
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <fwpmtypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#define FWP_E_ALREADY_EXISTS_ 0x80320009u
#define FWP_E_FILTER_NOT_FOUND_ 0x80320003u
#define FWP_E_PROVIDER_NOT_FOUND_ 0x80320005u
#define FWP_E_SUBLAYER_NOT_FOUND_ 0x80320007u
#define FWP_E_LAYER_NOT_FOUND_ 0x80320004u
#define FWP_E_NO_TXN_IN_PROGRESS_ 0x8032000Du
#define FWP_E_TXN_IN_PROGRESS_ 0x8032000Eu
#define FWP_E_SESSION_ABORTED_ 0x80320010u
#define FWP_E_TIMEOUT_ 0x80320012u
#define FWP_E_LIFETIME_MISMATCH_ 0x80320016u
#define FWP_E_INVALID_PARAMETER_ 0x80320035u
#define FWP_E_NULL_POINTER_ 0x8032001Cu
#define FWP_E_INVALID_ENUMERATOR_ 0x8032001Du
#define FWP_E_INVALID_FLAGS_ 0x8032001Eu
/* The engine is not there (BFE stopped): what an RPC client gets from an endpoint nobody
 * listens on. Undocumented for these functions: the double's choice. */
#define EPT_S_NOT_REGISTERED_ 1753u
#define RPC_C_AUTHN_WINNT_ 10
#define RPC_C_AUTHN_DEFAULT_ 0xffffffffu
#define SESSION_FLAG_DYNAMIC 0x1

typedef VOID (WINAPI *PORTS_CB)(void *context, const FWPM_SYSTEM_PORTS0 *ports);

static CRITICAL_SECTION lock;
static BOOL elevated;
static BOOL report_network_order = FALSE;
static BOOL bfe_running = TRUE;
static USHORT teredo_ports[4]; /* host order; none: no Teredo entry */
static DWORD teredo_count;

typedef struct { int used; int dynamic; int aborted; } SESSION;
static SESSION sessions[16];

typedef struct { int used; int session; int dynamic; GUID key; } OBJ; /* provider or sublayer */

#define APPID_MAX 260
#define USER_SD_MAX 256
typedef struct {
    int used; int session; int dynamic; UINT64 id; GUID layer; GUID sublayer;
    UINT8 proto; UINT16 local_port, remote_port; UINT32 local_addr;
    DWORD app_id_len; BYTE app_id[APPID_MAX * 2];
    DWORD user_len; BYTE user[USER_SD_MAX]; /* FWPM_CONDITION_ALE_USER_ID: a security descriptor */
    FWP_ACTION_TYPE action;
} FILTER;

typedef struct {
    OBJ providers[16], sublayers[16];
    FILTER filters[64];
    UINT64 next_filter_id;
} ENGINE;
static ENGINE engine_state = { .next_filter_id = 70000 };
static ENGINE snapshot; /* the state when the transaction began */
static int txn_owner = -1; /* the session holding the engine's transaction lock */
static DWORD commits;
static DWORD fail_filter_add; /* the n-th next FwpmFilterAdd0 fails (0: none) */
static LONG ports_gets; /* successful FwpmSystemPortsGet0 calls */

typedef struct { int used; PORTS_CB cb; void *ctx; DWORD running_thread; HANDLE idle; } SUB;
static SUB subs[16];
static HANDLE queue_sem, notifier;
static LONG pending[16];

/* Layer and condition GUIDs (fwpmu.h values). */
static const GUID ALE_AUTH_RECV_ACCEPT_V4 = {0xe1cd9fe7, 0xf4b5, 0x4273, {0x96, 0xc0, 0x59, 0x2e, 0x48, 0x7b, 0x86, 0x50}};
static const GUID ALE_AUTH_RECV_ACCEPT_V6 = {0xa3b42c97, 0x9f04, 0x4672, {0xb8, 0x7e, 0xce, 0xe9, 0xc4, 0x83, 0x25, 0x7f}};
static const GUID ALE_AUTH_CONNECT_V4 = {0xc38d57d1, 0x05a7, 0x4c33, {0x90, 0x4f, 0x7f, 0xbc, 0xee, 0xe6, 0x0e, 0x82}};
static const GUID ALE_AUTH_CONNECT_V6 = {0x4a72393b, 0x319f, 0x44bc, {0x84, 0xc3, 0xba, 0x54, 0xdc, 0xb3, 0xb6, 0xb4}};
static const GUID COND_IP_LOCAL_PORT = {0x0c1ba1af, 0x5765, 0x453f, {0xaf, 0x22, 0xa8, 0xf7, 0x91, 0xac, 0x77, 0x5b}};
static const GUID COND_IP_REMOTE_PORT = {0xc35a604d, 0xd22b, 0x4e1a, {0x91, 0xb4, 0x68, 0xf6, 0x74, 0xee, 0x67, 0x4b}};
static const GUID COND_IP_LOCAL_ADDRESS = {0xd9ee00de, 0xc1ef, 0x4617, {0xbf, 0xe3, 0xff, 0xd8, 0xf5, 0xa0, 0x89, 0x57}};
static const GUID COND_IP_PROTOCOL = {0x3971ef2b, 0x623e, 0x4f9a, {0x8c, 0xb1, 0x6e, 0x79, 0xb8, 0x06, 0xb9, 0xa7}};
static const GUID COND_ALE_APP_ID = {0xd78e1e87, 0x8644, 0x4ea5, {0x94, 0x37, 0xd8, 0x09, 0xec, 0xef, 0xc9, 0x71}};
static const GUID COND_ALE_USER_ID = {0xaf043a0a, 0xb34d, 0x4f86, {0x97, 0x9c, 0xc9, 0x03, 0x71, 0xaf, 0x6e, 0x66}};

/* The session of a handle, or a negative error: -1 unknown, -2 aborted by a BFE stop. */
static int session_of(HANDLE h)
{
    ULONG_PTR v = (ULONG_PTR)h;
    if (v < 0x5e00 || v >= 0x5e00 + 16) return -1;
    int s = (int)(v - 0x5e00);
    if (!sessions[s].used) return -1;
    return sessions[s].aborted ? -2 : s;
}

static DWORD session_error(int s)
{
    return s == -2 ? FWP_E_SESSION_ABORTED_ : ERROR_INVALID_HANDLE;
}

static USHORT swap16(USHORT v) { return (USHORT)((v >> 8) | (v << 8)); }

static FWPM_SYSTEM_PORTS0 *build_ports(void)
{
    /* One allocation: header, two types, their ports (RPC 135; Teredo's while it runs). */
    size_t size = sizeof(FWPM_SYSTEM_PORTS0) + 2 * sizeof(FWPM_SYSTEM_PORTS_BY_TYPE0) + 8 * sizeof(UINT16);
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
    if (teredo_count) {
        list->numTypes = 2;
        types[1].type = FWPM_SYSTEM_PORT_TEREDO;
        types[1].numPorts = teredo_count;
        for (DWORD i = 0; i < teredo_count; i++)
            ports[1 + i] = report_network_order ? swap16(teredo_ports[i]) : teredo_ports[i];
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
            if (p > 0 && p < 65536) { teredo_ports[0] = (USHORT)p; teredo_count = 1; }
        }
    }
    return TRUE;
}

/* ---- sessions and transactions ------------------------------------------------------------ */

/* With the lock held: whether session `s` may change the engine now (the transaction lock is
 * free or its own). */
static DWORD may_write(int s)
{
    if (txn_owner >= 0 && txn_owner != s) return FWP_E_TIMEOUT_;
    return ERROR_SUCCESS;
}

static void delete_session_objects(int s)
{
    ENGINE *e = &engine_state;
    for (int i = 0; i < 64; i++) if (e->filters[i].used && e->filters[i].session == s && e->filters[i].dynamic) e->filters[i].used = 0;
    for (int i = 0; i < 16; i++) if (e->sublayers[i].used && e->sublayers[i].session == s && e->sublayers[i].dynamic) e->sublayers[i].used = 0;
    for (int i = 0; i < 16; i++) if (e->providers[i].used && e->providers[i].session == s && e->providers[i].dynamic) e->providers[i].used = 0;
}

DWORD WINAPI FwpmEngineOpen0(const wchar_t *server, UINT32 authn, void *identity,
                             const FWPM_SESSION0 *session, HANDLE *engine)
{
    (void)identity;
    if (!engine) return FWP_E_NULL_POINTER_;
    if (server) return ERROR_INVALID_PARAMETER; /* local engine only in this double */
    if (authn != RPC_C_AUTHN_WINNT_ && authn != RPC_C_AUTHN_DEFAULT_) return ERROR_INVALID_PARAMETER;
    EnterCriticalSection(&lock);
    DWORD rc = ERROR_NOT_ENOUGH_MEMORY;
    if (!bfe_running) { rc = EPT_S_NOT_REGISTERED_; goto out; }
    for (int i = 0; i < 16; i++) if (!sessions[i].used) {
        sessions[i].used = 1;
        sessions[i].aborted = 0;
        sessions[i].dynamic = session && (session->flags & SESSION_FLAG_DYNAMIC);
        *engine = (HANDLE)(ULONG_PTR)(0x5e00 + i);
        rc = ERROR_SUCCESS;
        break;
    }
out:
    LeaveCriticalSection(&lock);
    return rc;
}

DWORD WINAPI FwpmEngineClose0(HANDLE engine)
{
    EnterCriticalSection(&lock);
    ULONG_PTR v = (ULONG_PTR)engine;
    int s = (v >= 0x5e00 && v < 0x5e00 + 16 && sessions[v - 0x5e00].used) ? (int)(v - 0x5e00) : -1;
    if (s < 0) { LeaveCriticalSection(&lock); return ERROR_INVALID_HANDLE; }
    /* "If a transaction is in progress, when a session terminates, it is automatically
     * aborted." Then the dynamic session's objects go. (An aborted session is closed to free
     * the client's state: FWP_E_SESSION_ABORTED.) */
    if (txn_owner == s) { engine_state = snapshot; txn_owner = -1; }
    if (sessions[s].dynamic && !sessions[s].aborted) delete_session_objects(s);
    sessions[s].used = 0;
    LeaveCriticalSection(&lock);
    return ERROR_SUCCESS;
}

DWORD WINAPI FwpmTransactionBegin0(HANDLE engine, UINT32 flags)
{
    EnterCriticalSection(&lock);
    int s = session_of(engine);
    DWORD rc = ERROR_SUCCESS;
    if (s < 0) rc = session_error(s);
    else if (flags != 0) rc = FWP_E_INVALID_FLAGS_; /* read/write only in this double */
    else if (txn_owner == s) rc = FWP_E_TXN_IN_PROGRESS_;
    else if (txn_owner >= 0) rc = FWP_E_TIMEOUT_;
    else { txn_owner = s; snapshot = engine_state; }
    LeaveCriticalSection(&lock);
    return rc;
}

DWORD WINAPI FwpmTransactionCommit0(HANDLE engine)
{
    EnterCriticalSection(&lock);
    int s = session_of(engine);
    DWORD rc = ERROR_SUCCESS;
    if (s < 0) rc = session_error(s);
    else if (txn_owner != s) rc = FWP_E_NO_TXN_IN_PROGRESS_;
    else { txn_owner = -1; commits++; }
    LeaveCriticalSection(&lock);
    return rc;
}

DWORD WINAPI FwpmTransactionAbort0(HANDLE engine)
{
    EnterCriticalSection(&lock);
    int s = session_of(engine);
    DWORD rc = ERROR_SUCCESS;
    if (s < 0) rc = session_error(s);
    else if (txn_owner != s) rc = FWP_E_NO_TXN_IN_PROGRESS_;
    else { engine_state = snapshot; txn_owner = -1; }
    LeaveCriticalSection(&lock);
    return rc;
}

DWORD WINAPI FwpmFreeMemory0(void **p)
{
    if (p && *p) { free(*p); *p = NULL; }
    return ERROR_SUCCESS;
}

/* ---- providers, sublayers, filters ------------------------------------------------------ */

static OBJ *find_obj(OBJ *table, const GUID *key)
{
    for (int i = 0; i < 16; i++) if (table[i].used && IsEqualGUID(&table[i].key, key)) return &table[i];
    return NULL;
}

/* With the lock held: may an object of session `s` refer to `target`? A dynamic object lives
 * only as long as its session: only objects of that same (dynamic) session may refer to it. */
static DWORD lifetime(int s, const OBJ *target)
{
    if (target->dynamic && (target->session != s || !sessions[s].dynamic)) return FWP_E_LIFETIME_MISMATCH_;
    return ERROR_SUCCESS;
}

static DWORD add_obj(OBJ *table, int s, const GUID *key)
{
    if (find_obj(table, key)) return FWP_E_ALREADY_EXISTS_;
    for (int i = 0; i < 16; i++) if (!table[i].used) {
        table[i].used = 1; table[i].session = s; table[i].dynamic = sessions[s].dynamic; table[i].key = *key;
        return ERROR_SUCCESS;
    }
    return ERROR_NOT_ENOUGH_MEMORY;
}

DWORD WINAPI FwpmProviderAdd0(HANDLE engine, const FWPM_PROVIDER0 *provider, void *sd)
{
    (void)sd;
    if (!provider) return FWP_E_NULL_POINTER_;
    EnterCriticalSection(&lock);
    int s = session_of(engine);
    DWORD rc;
    if (s < 0) rc = session_error(s);
    else if (!elevated) rc = ERROR_ACCESS_DENIED;
    else if ((rc = may_write(s)) == ERROR_SUCCESS) rc = add_obj(engine_state.providers, s, &provider->providerKey);
    LeaveCriticalSection(&lock);
    return rc;
}

DWORD WINAPI FwpmSubLayerAdd0(HANDLE engine, const FWPM_SUBLAYER0 *sublayer, void *sd)
{
    (void)sd;
    if (!sublayer) return FWP_E_NULL_POINTER_;
    EnterCriticalSection(&lock);
    int s = session_of(engine);
    DWORD rc = ERROR_SUCCESS;
    if (s < 0) { rc = session_error(s); goto out; }
    if (!elevated) { rc = ERROR_ACCESS_DENIED; goto out; }
    if ((rc = may_write(s)) != ERROR_SUCCESS) goto out;
    if (sublayer->providerKey) {
        OBJ *p = find_obj(engine_state.providers, sublayer->providerKey);
        if (!p) { rc = FWP_E_PROVIDER_NOT_FOUND_; goto out; }
        if ((rc = lifetime(s, p)) != ERROR_SUCCESS) goto out;
    }
    rc = add_obj(engine_state.sublayers, s, &sublayer->subLayerKey);
out:
    LeaveCriticalSection(&lock);
    return rc;
}

static int is_layer(const GUID *g, int *index)
{
    const GUID *layers[4] = { &ALE_AUTH_RECV_ACCEPT_V4, &ALE_AUTH_RECV_ACCEPT_V6, &ALE_AUTH_CONNECT_V4, &ALE_AUTH_CONNECT_V6 };
    for (int i = 0; i < 4; i++) if (IsEqualGUID(g, layers[i])) { *index = i; return 1; }
    return 0;
}

DWORD WINAPI FwpmFilterAdd0(HANDLE engine, const FWPM_FILTER0 *filter, void *sd, UINT64 *id)
{
    (void)sd;
    if (!filter) return FWP_E_NULL_POINTER_;
    EnterCriticalSection(&lock);
    int s = session_of(engine), layer = 0;
    DWORD rc = ERROR_SUCCESS;
    FILTER f;
    memset(&f, 0, sizeof f);
    if (s < 0) { rc = session_error(s); goto out; }
    if (!elevated) { rc = ERROR_ACCESS_DENIED; goto out; }
    if ((rc = may_write(s)) != ERROR_SUCCESS) goto out;
    if (fail_filter_add && --fail_filter_add == 0) { rc = ERROR_NOT_ENOUGH_MEMORY; goto out; }
    if (!is_layer(&filter->layerKey, &layer)) { rc = FWP_E_LAYER_NOT_FOUND_; goto out; }
    OBJ *sub = find_obj(engine_state.sublayers, &filter->subLayerKey);
    if (!sub) { rc = FWP_E_SUBLAYER_NOT_FOUND_; goto out; }
    if ((rc = lifetime(s, sub)) != ERROR_SUCCESS) goto out;
    if (filter->providerKey) {
        OBJ *p = find_obj(engine_state.providers, filter->providerKey);
        if (!p) { rc = FWP_E_PROVIDER_NOT_FOUND_; goto out; }
        if ((rc = lifetime(s, p)) != ERROR_SUCCESS) goto out;
    }
    if (filter->action.type != FWP_ACTION_PERMIT && filter->action.type != FWP_ACTION_BLOCK) { rc = FWP_E_INVALID_ENUMERATOR_; goto out; }
    if (filter->numFilterConditions && !filter->filterCondition) { rc = FWP_E_NULL_POINTER_; goto out; }
    int v6 = layer == 1 || layer == 3;
    for (UINT32 i = 0; i < filter->numFilterConditions; i++) {
        const FWPM_FILTER_CONDITION0 *c = &filter->filterCondition[i];
        if (c->matchType != FWP_MATCH_EQUAL) { rc = FWP_E_INVALID_PARAMETER_; goto out; }
        if (IsEqualGUID(&c->fieldKey, &COND_IP_LOCAL_PORT) || IsEqualGUID(&c->fieldKey, &COND_IP_REMOTE_PORT)) {
            if (c->conditionValue.type != FWP_UINT16) { rc = FWP_E_INVALID_PARAMETER_; goto out; }
            if (IsEqualGUID(&c->fieldKey, &COND_IP_LOCAL_PORT)) f.local_port = c->conditionValue.uint16;
            else f.remote_port = c->conditionValue.uint16;
        } else if (IsEqualGUID(&c->fieldKey, &COND_IP_PROTOCOL)) {
            if (c->conditionValue.type != FWP_UINT8) { rc = FWP_E_INVALID_PARAMETER_; goto out; }
            f.proto = c->conditionValue.uint8;
        } else if (IsEqualGUID(&c->fieldKey, &COND_IP_LOCAL_ADDRESS)) {
            /* An IPv4 address is an FWP_UINT32 in host order; only IPv4 layers have one. */
            if (v6 || c->conditionValue.type != FWP_UINT32) { rc = FWP_E_INVALID_PARAMETER_; goto out; }
            f.local_addr = c->conditionValue.uint32;
        } else if (IsEqualGUID(&c->fieldKey, &COND_ALE_APP_ID)) {
            const FWP_BYTE_BLOB *b = c->conditionValue.byteBlob;
            if (c->conditionValue.type != FWP_BYTE_BLOB_TYPE || !b || !b->data || b->size == 0 || b->size > sizeof f.app_id) {
                rc = FWP_E_INVALID_PARAMETER_; goto out;
            }
            memcpy(f.app_id, b->data, b->size);
            f.app_id_len = b->size;
        } else if (IsEqualGUID(&c->fieldKey, &COND_ALE_USER_ID)) {
            /* FWP_SECURITY_DESCRIPTOR_TYPE: a self-relative security descriptor in a byte blob
             * (FWP_CONDITION_VALUE0 "sd"; "Permitting and Blocking Applications and Users"
             * passes one from BuildSecurityDescriptorW, which is self-relative). The header is
             * checked: revision 1 and SE_SELF_RELATIVE (0x8000) in its control word. */
            const FWP_BYTE_BLOB *b = c->conditionValue.sd;
            if (c->conditionValue.type != FWP_SECURITY_DESCRIPTOR_TYPE || !b || !b->data || b->size < 20
                || b->size > sizeof f.user || b->data[0] != 1 || !(b->data[3] & 0x80)) {
                rc = FWP_E_INVALID_PARAMETER_; goto out;
            }
            memcpy(f.user, b->data, b->size);
            f.user_len = b->size;
        } else { rc = FWP_E_INVALID_PARAMETER_; goto out; }
    }
    rc = ERROR_NOT_ENOUGH_MEMORY;
    for (int i = 0; i < 64; i++) if (!engine_state.filters[i].used) {
        f.used = 1; f.session = s; f.dynamic = sessions[s].dynamic; f.id = engine_state.next_filter_id++;
        f.layer = filter->layerKey; f.sublayer = filter->subLayerKey; f.action = filter->action.type;
        engine_state.filters[i] = f;
        if (id) *id = f.id;
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
    int s = session_of(engine);
    DWORD rc = FWP_E_FILTER_NOT_FOUND_;
    if (s < 0) rc = session_error(s);
    else if (!elevated) rc = ERROR_ACCESS_DENIED;
    else if ((rc = may_write(s)) == ERROR_SUCCESS) {
        rc = FWP_E_FILTER_NOT_FOUND_;
        for (int i = 0; i < 64; i++) if (engine_state.filters[i].used && engine_state.filters[i].id == id) {
            engine_state.filters[i].used = 0; rc = ERROR_SUCCESS; break;
        }
    }
    LeaveCriticalSection(&lock);
    return rc;
}

/* The application id: the file's NT name, lower case, with its NUL, as UTF-16 (what
 * FwpmGetAppIdFromFileName0 returns on Windows: "\device\harddiskvolumeN\..."). A file that
 * does not exist is ERROR_FILE_NOT_FOUND (the double's reading). */
DWORD WINAPI FwpmGetAppIdFromFileName0(const wchar_t *name, FWP_BYTE_BLOB **app_id)
{
    if (!name || !app_id) return FWP_E_NULL_POINTER_;
    if (GetFileAttributesW(name) == INVALID_FILE_ATTRIBUTES) return ERROR_FILE_NOT_FOUND;
    static const wchar_t prefix[] = L"\\device\\harddiskvolume1";
    size_t n = wcslen(name);
    if (n < 3 || name[1] != L':' || n + 32 > APPID_MAX) return FWP_E_INVALID_PARAMETER_;
    size_t chars = wcslen(prefix) + (n - 2) + 1;
    FWP_BYTE_BLOB *blob = calloc(1, sizeof *blob + chars * sizeof(wchar_t));
    if (!blob) return ERROR_NOT_ENOUGH_MEMORY;
    wchar_t *out = (wchar_t *)(blob + 1);
    wcscpy(out, prefix);
    for (size_t i = 2; i < n; i++) out[wcslen(prefix) + i - 2] = (wchar_t)towlower(name[i]);
    blob->size = (UINT32)(chars * sizeof(wchar_t));
    blob->data = (UINT8 *)out;
    *app_id = blob;
    return ERROR_SUCCESS;
}

/* ---- system ports ------------------------------------------------------------------------- */

DWORD WINAPI FwpmSystemPortsGet0(HANDLE engine, FWPM_SYSTEM_PORTS0 **ports)
{
    /* engineHandle is optional (documented). */
    if (!ports) return FWP_E_NULL_POINTER_;
    EnterCriticalSection(&lock);
    DWORD rc = ERROR_SUCCESS;
    int s = engine ? session_of(engine) : 0;
    if (!bfe_running) rc = EPT_S_NOT_REGISTERED_;
    else if (s < 0) rc = session_error(s);
    else *ports = build_ports();
    LeaveCriticalSection(&lock);
    if (rc == ERROR_SUCCESS && !*ports) rc = ERROR_NOT_ENOUGH_MEMORY;
    if (rc == ERROR_SUCCESS) InterlockedIncrement(&ports_gets);
    return rc;
}

DWORD WINAPI FwpmSystemPortsSubscribe0(HANDLE engine, void *reserved, PORTS_CB cb, void *ctx, HANDLE *handle)
{
    if (reserved) return ERROR_INVALID_PARAMETER;
    if (!cb || !handle) return FWP_E_NULL_POINTER_;
    EnterCriticalSection(&lock);
    DWORD rc = ERROR_NOT_ENOUGH_MEMORY;
    int s = engine ? session_of(engine) : 0;
    if (!bfe_running) { rc = EPT_S_NOT_REGISTERED_; goto out; }
    if (s < 0) { rc = session_error(s); goto out; }
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

/* Sets the Teredo entry's ports (none removes it) and notifies every subscription on another
 * thread. */
void WINAPI DoubleFwpSetTeredoPorts(const USHORT *ports_host, DWORD n)
{
    EnterCriticalSection(&lock);
    teredo_count = 0;
    for (DWORD i = 0; i < n && i < 4; i++) if (ports_host[i]) teredo_ports[teredo_count++] = ports_host[i];
    for (int i = 0; i < 16; i++) if (subs[i].used) pending[i] = 1;
    LeaveCriticalSection(&lock);
    ReleaseSemaphore(queue_sem, 1, NULL);
}

/* One port (0: the client stopped). */
void WINAPI DoubleFwpSetTeredoPort(USHORT port_host)
{
    DoubleFwpSetTeredoPorts(&port_host, port_host ? 1 : 0);
}

/* A permit filter as the tests read it. layer: 0 ALE_AUTH_RECV_ACCEPT_V4, 1 _V6,
 * 2 ALE_AUTH_CONNECT_V4, 3 _V6; 0 in a port or address: no such condition. */
typedef struct {
    DWORD layer, proto, local_port, remote_port, local_addr, session, app_id_len;
    WCHAR app_id[APPID_MAX];
    DWORD user_len; /* 0: no FWPM_CONDITION_ALE_USER_ID condition */
    BYTE user[USER_SD_MAX];
} FILTER_INFO;

/* Writes up to `max` permit filters; returns how many exist. */
DWORD WINAPI DoubleFwpFilters(FILTER_INFO *out, DWORD max)
{
    EnterCriticalSection(&lock);
    DWORD n = 0;
    for (int i = 0; i < 64; i++) {
        FILTER *f = &engine_state.filters[i];
        if (!f->used || f->action != FWP_ACTION_PERMIT) continue;
        if (out && n < max) {
            FILTER_INFO *o = &out[n];
            memset(o, 0, sizeof *o);
            int layer = 0;
            is_layer(&f->layer, &layer);
            o->layer = (DWORD)layer; o->proto = f->proto; o->local_port = f->local_port;
            o->remote_port = f->remote_port; o->local_addr = f->local_addr; o->session = (DWORD)f->session;
            o->app_id_len = f->app_id_len;
            memcpy(o->app_id, f->app_id, f->app_id_len);
            o->user_len = f->user_len;
            memcpy(o->user, f->user, f->user_len);
        }
        n++;
    }
    LeaveCriticalSection(&lock);
    return n;
}

/* Providers and sublayers alive. */
void WINAPI DoubleFwpObjects(DWORD *providers, DWORD *sublayers)
{
    EnterCriticalSection(&lock);
    DWORD p = 0, s = 0;
    for (int i = 0; i < 16; i++) { p += engine_state.providers[i].used ? 1 : 0; s += engine_state.sublayers[i].used ? 1 : 0; }
    if (providers) *providers = p;
    if (sublayers) *sublayers = s;
    LeaveCriticalSection(&lock);
}

/* Successful FwpmSystemPortsGet0 calls so far. */
DWORD WINAPI DoubleFwpGets(void) { return (DWORD)ports_gets; }

/* Explicit transactions committed so far. */
DWORD WINAPI DoubleFwpCommits(void) { return commits; }

/* The `nth` next FwpmFilterAdd0 fails with ERROR_NOT_ENOUGH_MEMORY (0: none). */
void WINAPI DoubleFwpFailFilterAdd(DWORD nth)
{
    EnterCriticalSection(&lock);
    fail_filter_add = nth;
    LeaveCriticalSection(&lock);
}

DWORD WINAPI DoubleFwpSubscriptions(void)
{
    EnterCriticalSection(&lock);
    DWORD n = 0;
    for (int i = 0; i < 16; i++) if (subs[i].used) n++;
    LeaveCriticalSection(&lock);
    return n;
}

/* BFE stops (FALSE) or runs again (TRUE). A stop aborts every session (its handle answers
 * FWP_E_SESSION_ABORTED until closed), deletes every object (none here is persistent: "static
 * objects remain active until deleted, BFE stops, or system shutdown") and drops every
 * system-ports subscription without a callback. */
void WINAPI DoubleFwpBfe(BOOL running)
{
    EnterCriticalSection(&lock);
    if (!running && bfe_running) {
        for (int i = 0; i < 16; i++) if (sessions[i].used) sessions[i].aborted = 1;
        memset(&engine_state.providers, 0, sizeof engine_state.providers);
        memset(&engine_state.sublayers, 0, sizeof engine_state.sublayers);
        memset(&engine_state.filters, 0, sizeof engine_state.filters);
        txn_owner = -1;
        for (int i = 0; i < 16; i++) { subs[i].used = 0; pending[i] = 0; }
    }
    bfe_running = running;
    LeaveCriticalSection(&lock);
}
