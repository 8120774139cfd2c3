#!/usr/bin/env python3
"""Re-derive the first Windows release of each entry of vsflow.sys's kernel-export table from
the WDK headers' NTDDI_VERSION guards, and compare with the table.

usage: cargo xtask sys --exports | python3 xtask/sys/header_versions.py INCLUDE_DIR
  INCLUDE_DIR  the WDK include directory with km/, km/crt/, shared/ (wdk-real's assembled tree:
               TREE/Include/10.0.22621.0, see ../shared/tools/wdk-real/README.md)

For each NTDDI value the table uses, the headers a WFP callout driver includes (ntifs.h,
ntddk.h, wdm.h, ndis.h, fwpsk.h, fwpmk.h) are preprocessed with clang for x86_64 Windows
(kernel mode, NDIS 6.40) at that NTDDI_VERSION; a function's first release is the oldest
NTDDI at which a declaration of it appears. An entry whose evidence is `header:` must match;
the others (no guard, or a guard the headers cannot evaluate) are printed for information.
The headers never enter the repository: this reads them where wdk-real put them.
Exit status 1 on any mismatch.
"""
import os
import re
import subprocess
import sys
import tempfile

NTDDI = {
    'NTDDI_WIN2K': 0x05000000, 'NTDDI_WINXP': 0x05010000, 'NTDDI_WS03SP1': 0x05020100,
    'NTDDI_VISTA': 0x06000000, 'NTDDI_WS08': 0x06000100, 'NTDDI_WIN7': 0x06010000,
    'NTDDI_WIN8': 0x06020000, 'NTDDI_WINBLUE': 0x06030000, 'NTDDI_WIN10': 0x0A000000,
    'NTDDI_WIN10_RS2': 0x0A000003, 'NTDDI_WIN10_VB': 0x0A000008, 'NTDDI_WIN10_FE': 0x0A00000A,
}
HEADERS = ['ntifs.h', 'ntddk.h', 'wdm.h', 'ndis.h', 'fwpsk.h', 'fwpmk.h']


def preprocess(inc, ntddi, work):
    src = os.path.join(work, 't.c')
    with open(src, 'w') as f:
        f.writelines(f'#include <{h}>\n' for h in HEADERS)
    cmd = ['clang', '-E', '--target=x86_64-pc-windows-msvc', '-fms-compatibility',
           '-fms-extensions', '-D_WIN64', '-D_AMD64_', '-DAMD64', '-D_KERNEL_MODE',
           '-DNDIS640=1', '-DNDIS_WDM=1', f'-DNTDDI_VERSION={ntddi:#010x}',
           f'-D_WIN32_WINNT={ntddi >> 16:#06x}', '-Wno-everything',
           f'-I{inc}/km/crt', f'-I{inc}/km', f'-I{inc}/shared', src]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f'clang failed at {ntddi:#010x}:\n{out.stderr[-2000:]}')
    return out.stdout


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    inc = sys.argv[1]
    table = [line.rstrip('\n').split('\t') for line in sys.stdin if line.strip()]
    names = {row[1] for row in table}
    first = {}
    with tempfile.TemporaryDirectory() as work:
        for ntddi_name, value in sorted(NTDDI.items(), key=lambda kv: kv[1]):
            text = preprocess(inc, value, work)
            for n in names:
                if n not in first and re.search(rf'\b{re.escape(n)}\s*\(', text):
                    first[n] = ntddi_name
    mismatches = 0
    for module, name, since, evidence in table:
        found = first.get(name, 'not declared')
        if evidence.startswith('header:'):
            verdict = 'OK' if found == since else 'MISMATCH'
            mismatches += verdict == 'MISMATCH'
        else:
            verdict = 'info'
        print(f'{verdict:8} {module}!{name}: table {since}, headers {found} ({evidence})')
    checked = sum(1 for row in table if row[3].startswith('header:'))
    print(f'{checked - mismatches} of {checked} header-guarded entries match; '
          f'{len(table) - checked} entries rest on documentation')
    sys.exit(1 if mismatches else 0)


if __name__ == '__main__':
    main()
