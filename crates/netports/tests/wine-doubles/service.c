/*
 * A stand-in for Windows services Wine does not have, registered under their names in the
 * Wine prefix by `cargo xtask wine` (service-double.exe; used only by tests):
 * - BFE, the Base Filtering Engine service: it carries no filter engine (the fwpuclnt double
 *   is the engine; a test stops both together, DoubleFwpBfe and this service), and lets
 *   netports' BFE watch (NotifyServiceStatusChangeW, which Wine implements) run against a real
 *   service control manager;
 * - iphlpsvc, the IP Helper service that runs the Teredo client: its process id is what
 *   netports looks for among the UDP endpoints to confirm the Teredo port's byte order.
 * Each runs, as its own process, until it is stopped.
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

static SERVICE_STATUS_HANDLE handle;
static SERVICE_STATUS status;
static HANDLE stop;

static DWORD WINAPI control(DWORD code, DWORD type, void *data, void *context)
{
    (void)type; (void)data; (void)context;
    if (code == SERVICE_CONTROL_STOP || code == SERVICE_CONTROL_SHUTDOWN) {
        status.dwCurrentState = SERVICE_STOP_PENDING;
        SetServiceStatus(handle, &status);
        SetEvent(stop);
    }
    return NO_ERROR;
}

static void WINAPI service_main(DWORD argc, LPWSTR *argv)
{
    /* argv[0] is the name the service was started under. */
    stop = CreateEventW(NULL, TRUE, FALSE, NULL);
    handle = RegisterServiceCtrlHandlerExW(argc > 0 ? argv[0] : L"", control, NULL);
    if (!handle) return;
    status.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
    status.dwControlsAccepted = SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN;
    status.dwCurrentState = SERVICE_RUNNING;
    SetServiceStatus(handle, &status);
    WaitForSingleObject(stop, INFINITE);
    status.dwCurrentState = SERVICE_STOPPED;
    SetServiceStatus(handle, &status);
}

int main(void)
{
    /* An own-process service: the table's name is not matched against the service's. */
    SERVICE_TABLE_ENTRYW table[] = { { (LPWSTR)L"", service_main }, { NULL, NULL } };
    return StartServiceCtrlDispatcherW(table) ? 0 : 1;
}
