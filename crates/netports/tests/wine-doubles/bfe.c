/*
 * A stand-in for the Base Filtering Engine *service* under Wine, which has none: a service
 * named BFE that runs until it is stopped. It carries no filter engine (the fwpuclnt double
 * is the engine; a test stops both together, DoubleFwpBfe and this service). It lets
 * netports' BFE watch (NotifyServiceStatusChangeW on "BFE", which Wine implements) run
 * against a real service control manager. Built as bfe-double.exe by `cargo xtask wine` and
 * registered as the demand-start service BFE in the Wine prefix; used only by tests.
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
    (void)argc; (void)argv;
    stop = CreateEventW(NULL, TRUE, FALSE, NULL);
    handle = RegisterServiceCtrlHandlerExW(L"BFE", control, NULL);
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
    SERVICE_TABLE_ENTRYW table[] = { { (LPWSTR)L"BFE", service_main }, { NULL, NULL } };
    return StartServiceCtrlDispatcherW(table) ? 0 : 1;
}
