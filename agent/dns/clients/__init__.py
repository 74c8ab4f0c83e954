"""Who asked: client address to device name and MAC, from DHCP lease files, the config's static
table and the ARP table (docs/dns.md, [clients])."""
