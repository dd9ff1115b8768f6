#!/usr/bin/python3
"""Prints the test vectors of spec.md (Python standard library only):
/usr/bin/python3 xep/x-gateway/vectors.py"""
import hashlib, hmac, struct

def frame(t, body=b''):
    return struct.pack('>HB', 1 + len(body), t) + body

DEV = b'vm-0042'
SECRET = bytes(range(32))
CNONCE = bytes.fromhex('a0a1a2a3a4a5a6a7a8a9aaabacadaeaf')
SNONCE = bytes.fromhex('b0b1b2b3b4b5b6b7b8b9babbbcbdbebf')
V = 1

def mac_input(tag, nonce1, nonce2):
    return tag + bytes([V]) + nonce1 + nonce2 + bytes([len(DEV)]) + DEV

dev_in = mac_input(b'D', SNONCE, CNONCE)
srv_in = mac_input(b'S', CNONCE, SNONCE)
dmac = hmac.new(SECRET, dev_in, hashlib.sha256).digest()
smac = hmac.new(SECRET, srv_in, hashlib.sha256).digest()

out = [
    ('HELLO', frame(0x01, b'MG' + bytes([1, 1]) + CNONCE + bytes([len(DEV)]) + DEV)),
    ('CHALLENGE', frame(0x02, bytes([V]) + SNONCE)),
    ('AUTH', frame(0x03, dmac)),
    ('WELCOME', frame(0x04, struct.pack('>HH', 30, 1024) + smac)),
    ('PING', frame(0x05)),
    ('PONG', frame(0x06)),
    ('COMMAND', frame(0x07, struct.pack('>IH', 7, 300) + b'vend:slot=4')),
    ('ACK', frame(0x08, struct.pack('>IB', 7, 0))),
    ('UPLINK', frame(0x09, struct.pack('>I', 1) + b'temp=4.5')),
    ('ACK_UPLINK', frame(0x08, struct.pack('>IB', 1, 0))),
    ('ERROR', frame(0x0A, bytes([3]) + b'auth failed')),
    ('BYE', frame(0x0B, bytes([0]))),
]
print('device mac input   ', dev_in.hex())
print('device mac (AUTH)  ', dmac.hex())
print('server mac input   ', srv_in.hex())
print('server mac (WELCOME)', smac.hex())
for name, f in out:
    print('%-10s %s' % (name, f.hex()))
