/* Test-only stand-in for Windows' bcryptprimitives.dll, which Wine 8 lacks: Rust's std imports
 * ProcessPrng from it. Fills the buffer from RtlGenRandom (advapi32 SystemFunction036).
 * Built by testsupport/src/wine.rs beside the agent under test; never shipped. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
