#!/usr/bin/env python3
"""The Linux kernel's conntrack on connection 1577 of zeek's tunnels/Teredo.pcap.

docs/CONFORMANCE.md, "Teredo": vsflow's replay of the capture migrated before its first frame
blocks the peer's ACK and RST of TCP 192.168.2.16:1577 <-> 75.126.203.78:80, a connection the
VM opened before the capture began. This script sends the same five segments (the capture's
frames 3, 4, 7, 9 and 49: flags, sequence and acknowledgment numbers) between two network
namespaces, through the nftables policy of tests/live.rs (the VM's stateful policy: established
and related accepted, new only to TCP 22, invalid and other new dropped), and prints each
segment's conntrack verdict and the entry conntrack holds afterwards. A conntrack table that
never saw the connection is what a migration before frame 0 hands vsflow (host B knows nothing
of it either). The kernel's own RSTs for segments no socket owns are dropped before conntrack
(the capture's VM had the socket).

Run as root, with ip, nft and conntrack installed: `python3 tests/conntrack/teredo_1577.py`
(`--loose 0`: with net.netfilter.nf_conntrack_tcp_loose=0, conntrack picks up no mid-stream
connection).
Prints one line per segment and exits 0; exits 2 if namespaces cannot be made.
"""

import os
import re
import socket
import struct
import subprocess
import sys
import time

VM_NS, PEER_NS = f"vsfct-vm{os.getpid()}", f"vsfct-peer{os.getpid()}"
# `--loose 0`: conntrack without loose pickup (the kernel's default is 1).
LOOSE = sys.argv[sys.argv.index("--loose") + 1] if "--loose" in sys.argv else None
VM, PEER = "192.0.2.1", "192.0.2.2"
VM_PORT, PEER_PORT = 1577, 80

# The capture's frames on 1577 (tcpdump -nn -r tests/fixtures/pcap/zeek-tunnels-teredo.pcap).
FIN, RST, ACK = 0x01, 0x04, 0x10
SEGMENTS = [
    (3, "in", FIN | ACK, 4041691595, 1974006671, "the peer's FIN (the connection predates the capture)"),
    (4, "out", ACK, 1974006671, 4041691596, "the VM's ACK of it"),
    (7, "out", FIN | ACK, 1974006671, 4041691596, "the VM's FIN"),
    (9, "in", ACK, 4041691596, 1974006672, "the peer's ACK of the VM's FIN"),
    (49, "in", RST | ACK, 4041691596, 1974006672, "the peer's RST"),
]

POLICY = """
table inet vsfct {
  counter in_est {}
  counter in_rel {}
  counter in_new_acc {}
  counter in_inv {}
  counter in_new_drop {}
  counter in_other {}
  chain rawout {
    type filter hook output priority raw; policy accept;
    tcp flags & rst == rst meta mark != 0x42 drop
  }
  counter out_est {}
  counter out_new {}
  counter out_inv {}
  counter out_unt {}
  chain output {
    type filter hook output priority filter; policy accept;
    ct state established counter name out_est
    ct state new counter name out_new
    ct state invalid counter name out_inv
    ct state untracked counter name out_unt
  }
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established counter name in_est accept
    ct state related counter name in_rel accept
    ct state new tcp dport 22 counter name in_new_acc accept
    ct state invalid counter name in_inv drop
    ct state new counter name in_new_drop drop
    counter name in_other drop
  }
}
"""


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def ns(name, *args, check=True):
    return sh("ip", "netns", "exec", name, *args, check=check)


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def segment(src, dst, sport, dport, flags, seq, ack):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 8576, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    return tcp


# Neither side's kernel may answer a segment with a RST of its own (both endpoints had their
# sockets in the capture): RSTs are dropped at the raw priority, before conntrack, unless this
# script sent them (mark 0x42).
PEER_POLICY = """
table inet vsfct {
  chain rawout {
    type filter hook output priority raw; policy accept;
    tcp flags & rst == rst meta mark != 0x42 drop
  }
}
"""

SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x42)
s.sendto(bytes.fromhex(sys.argv[2]), (sys.argv[1], 0))
"""


def counters():
    out = ns(VM_NS, "nft", "list", "counters", "table", "inet", "vsfct")
    return {m[0]: int(m[1]) for m in re.findall(r"counter (\w+) \{\s*packets (\d+)", out)}


def entry():
    out = ns(VM_NS, "conntrack", "-L", "-p", "tcp", "--orig-port-dst", str(PEER_PORT), check=False)
    out += ns(VM_NS, "conntrack", "-L", "-p", "tcp", "--orig-port-src", str(PEER_PORT), check=False)
    lines = [l for l in out.splitlines() if f"={VM_PORT} " in l or f"={VM_PORT}\n" in l + "\n"]
    if not lines:
        return "no entry"
    l = lines[0]
    state = re.search(r"tcp\s+\d+\s+\d+\s+(\w+)", l)
    orig = re.search(r"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)", l)
    opener = "the VM" if orig and orig.group(1) == VM else "the peer"
    return f"{state.group(1) if state else '?'}, original direction from {opener}"


def main():
    try:
        sh("ip", "netns", "add", VM_NS)
        sh("ip", "netns", "add", PEER_NS)
    except RuntimeError as e:
        print(f"no network namespaces: {e}", file=sys.stderr)
        return 2
    try:
        sh("ip", "link", "add", "vsfct0", "netns", VM_NS, "type", "veth", "peer", "vsfct1", "netns", PEER_NS)
        for name, dev, addr in [(VM_NS, "vsfct0", VM), (PEER_NS, "vsfct1", PEER)]:
            ns(name, "ip", "addr", "add", f"{addr}/24", "dev", dev)
            ns(name, "ip", "link", "set", dev, "up")
            ns(name, "ip", "link", "set", "lo", "up")
        subprocess.run(["ip", "netns", "exec", VM_NS, "nft", "-f", "-"], input=POLICY, text=True, check=True)
        subprocess.run(["ip", "netns", "exec", PEER_NS, "nft", "-f", "-"], input=PEER_POLICY, text=True, check=True)
        if LOOSE is not None:
            ns(VM_NS, "sysctl", "-qw", f"net.netfilter.nf_conntrack_tcp_loose={LOOSE}")
        ns(VM_NS, "conntrack", "-F", check=False)
        time.sleep(0.3)  # neighbour resolution happens with the first segment
        print(f"Linux {os.uname().release}, nf_conntrack_tcp_loose="
              f"{ns(VM_NS, 'sysctl', '-n', 'net.netfilter.nf_conntrack_tcp_loose', check=False).strip() or '?'}")
        blocked = 0
        for frame, way, flags, seq, ack, what in SEGMENTS:
            before = counters()
            if way == "in":
                seg = segment(PEER, VM, PEER_PORT, VM_PORT, flags, seq, ack)
                ns(PEER_NS, "python3", "-c", SENDER, VM, seg.hex())
            else:
                seg = segment(VM, PEER, VM_PORT, PEER_PORT, flags, seq, ack)
                ns(VM_NS, "python3", "-c", SENDER, PEER, seg.hex())
            time.sleep(0.2)
            after = counters()
            hit = [k for k in after if after[k] != before.get(k, 0) and k.startswith(way + "_")]
            if way == "out":
                verdict = f"sent (the VM's own: {', '.join(hit)})"
            elif hit and hit[0] in ("in_est", "in_rel", "in_new_acc"):
                verdict = f"accepted ({hit[0]})"
            else:
                verdict = f"dropped ({', '.join(hit) or 'not seen'})"
                blocked += 1
            print(f"frame {frame:2} {way:3} {what}: {verdict}; conntrack: {entry()}")
        print(f"inbound segments dropped: {blocked} of 3")
    finally:
        sh("ip", "netns", "del", VM_NS, check=False)
        sh("ip", "netns", "del", PEER_NS, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
