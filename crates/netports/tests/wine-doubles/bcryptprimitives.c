/*
 * Test double of bcryptprimitives.dll for Wine 8, which lacks it: Rust's std imports
 * ProcessPrng from it for HashMap seeds, so a test harness (libtest) could not start.
 * ProcessPrng "always returns TRUE" (Microsoft's documentation); the bytes come from
 * RtlGenRandom (advapi32 SystemFunction036), which Wine implements.
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        SystemFunction036(data, chunk);
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
